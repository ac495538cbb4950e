"""Table writers, atomic writes and the curve figure."""

import csv
import io

import pytest

from attnact.fileio import atomic_write_json, atomic_write_text
from attnact.report.figures import plot_curves
from attnact.report.tables import to_csv, to_latex, to_markdown

ROWS = [
    {"activation": "relu", "acc": 0.9123, "note": "a|b"},
    {"activation": "atac", "acc": 0.95, "note": None},
]


def test_markdown():
    md = to_markdown(ROWS, align="lrl")
    lines = md.splitlines()
    assert lines[0] == "| activation | acc | note |"
    assert lines[1] == "|:---|---:|:---|"
    assert lines[2] == "| relu | 0.9123 | a\\|b |"
    assert lines[3] == "| atac | 0.95 |  |"
    with pytest.raises(ValueError, match="align"):
        to_markdown(ROWS, align="lr")


def test_csv_round_trip():
    text = to_csv(ROWS)
    back = list(csv.DictReader(io.StringIO(text)))
    assert back[0] == {"activation": "relu", "acc": "0.9123", "note": "a|b"}
    assert back[1]["note"] == ""


def test_latex_escapes():
    tex = to_latex([{"name": "elsa_relu", "acc": "90.1 ± 0.2 %"}], caption="A & B")
    assert r"elsa\_relu" in tex and r"$\pm$" in tex and r"\%" in tex and r"A \& B" in tex
    assert tex.count(r"\\") == 2  # header and one row


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    atomic_write_json(tmp_path / "x.json", {"b": float("nan"), "a": 2})
    assert (tmp_path / "x.json").read_text() == '{\n  "b": null,\n  "a": 2\n}\n'  # strict JSON
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["f.txt", "sub", "x.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "f.json"
    atomic_write_text(p, "old")

    class NotJSON:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": NotJSON()})
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]


def test_plot_curves_writes_png(tmp_path):
    out = plot_curves(
        {"relu": [[0.8, 0.85, 0.9], [0.82, 0.86]], "atac": [[0.85, 0.9, 0.92]], "empty": []},
        tmp_path / "curves.png",
        title="t",
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
