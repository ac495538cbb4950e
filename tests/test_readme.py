"""The README's activation table is generated from the registry; it must be current."""

from pathlib import Path

from attnact.units.catalog import END_MARK, START_MARK, activation_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_activation_table_is_current():
    text = README.read_text()
    body = text.split(START_MARK, 1)[1].split(END_MARK, 1)[0].strip()
    assert body == activation_table_markdown(), "run `make readme` to refresh the table"


def test_readme_quickstart_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
