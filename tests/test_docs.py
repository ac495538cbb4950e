"""The documentation site (mkdocs.yml, docs/; issue #16): every guide page is in the nav, every
public name is in the API reference, every code block of the user guide runs and every command
in it is one the CLI accepts; and (slow, with the [docs] extra) the site builds with warnings
as errors and has an entry for every public name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
# the API reference: one page per public package
REFERENCE = {
    "attnact": "reference/attnact.md",
    "attnact.units": "reference/units.md",
    "attnact.models": "reference/models.md",
    "attnact.train": "reference/train.md",
    "attnact.experiments": "reference/experiments.md",
    "attnact.weights": "reference/weights.md",
    "attnact.perf": "reference/perf.md",
    "attnact.data": "reference/data.md",
}
# attnact.perf exports nothing itself; its modules' public names are documented on its page
PERF_MODULES = ("attnact.perf.bench", "attnact.perf.roofline", "attnact.perf.steptime")
NOT_RUN = "# not run:"


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("attnact_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {node!r}")


def _config() -> dict:
    return yaml.safe_load(MKDOCS_YML.read_text())


def _guide_pages() -> list[Path]:
    return sorted([DOCS / "index.md", *(DOCS / "guide").glob("*.md")])


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def _public_names(package: str) -> list[str]:
    if package == "attnact.perf":
        return [f"{m}.{n}" for m in PERF_MODULES for n in importlib.import_module(m).__all__]
    return [f"{package}.{n}" for n in importlib.import_module(package).__all__]


# ----------------------------------------------------------------------------- structure
def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages(_config()["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    included = set(_hooks().repository_documents(ROOT))
    assert {"DESIGN.md", "reports/CLAIMS.md", "benchmarks/README.md"} <= included
    assert sorted(set(nav) - pages - included) == [], "nav entries with no page"
    for wanted in ("guide/units.md", "guide/conversion.md", "guide/training.md",
                   "guide/experiments.md", "guide/weights.md", "guide/performance.md",
                   "guide/install.md", *REFERENCE.values()):
        assert wanted in nav, wanted


def test_repository_documents_are_included_not_copied() -> None:
    """DESIGN.md and the reports are read from where they live (docs/hooks.py)."""
    assert not (DOCS / "DESIGN.md").exists() and not (DOCS / "reports").exists()
    included = _hooks().repository_documents(ROOT)
    assert "reports/atac-ablation/quick/table.md" in included
    assert all((ROOT / rel).is_file() for rel in included)


def _documented_by_package_directive(package: str, name: str) -> bool:
    """Whether ``::: package`` renders ``name``: mkdocstrings shows the members of ``__all__``
    that have a docstring of their own, except a name that is also a submodule's."""
    module = importlib.import_module(package)
    obj = getattr(module, name)
    if hasattr(module, "__path__") and importlib.util.find_spec(f"{package}.{name}"):
        return False  # the submodule of that name shadows the member
    own_doc = (inspect.isclass(obj) or inspect.isfunction(obj)) and bool(obj.__doc__)
    return own_doc


@pytest.mark.parametrize("package", list(REFERENCE))
def test_every_public_name_is_in_the_api_reference(package: str) -> None:
    text = (DOCS / REFERENCE[package]).read_text()
    directives = set(re.findall(r"^::: ([\w.]+)\s*$", text, flags=re.M))
    assert package in directives
    missing = []
    for full in _public_names(package):
        owner, _, name = full.rpartition(".")
        if owner in directives and _documented_by_package_directive(owner, name):
            continue
        if full in directives or f"{full}.{name}" in directives:
            continue
        missing.append(full)
    assert missing == [], f"{REFERENCE[package]} does not document {missing}"


def test_the_package_pages_list_every_public_package() -> None:
    from attnact import data, experiments, models, perf, train, units, weights

    for module in (data, experiments, models, perf, train, units, weights):
        assert module.__name__ in REFERENCE


# ----------------------------------------------------------------------------- the guide
@pytest.mark.parametrize("page", _guide_pages(), ids=lambda p: p.name)
def test_guide_python_blocks_run(page: Path) -> None:
    """Each page's Python blocks run in order in one namespace; a block that needs data, a
    download or minutes says so in its first line and is only compiled."""
    blocks = _blocks(page, "python")
    scope: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for i, block in enumerate(blocks):
        code = compile(block, f"{page.relative_to(ROOT)} block {i}", "exec")
        if block.startswith(NOT_RUN):
            continue
        exec(code, scope)
        ran += 1
    if blocks:
        assert ran > 0 or all(b.startswith(NOT_RUN) for b in blocks)


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in _guide_pages():
        for block in _blocks(page, "sh"):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith(("attnact ", "torchrun ")):
                    found.append((page.name, shlex.split(line)))
    return found


def test_the_guide_shows_commands() -> None:
    commands = {" ".join(argv[:2]) for _, argv in _commands()}
    for wanted in ("attnact train", "attnact compare", "attnact reproduce", "attnact weights",
                   "attnact bench", "attnact info", "attnact list"):
        assert wanted in commands, wanted
    assert any(argv[0] == "torchrun" for _, argv in _commands())


@pytest.mark.parametrize(("page", "argv"), _commands(), ids=lambda v: " ".join(v)[:70]
                         if isinstance(v, list) else v)
def test_every_guide_command_parses(page: str, argv: list[str]) -> None:
    """Each command the guide shows is accepted by the CLI's parser (nothing runs)."""
    from attnact.cli import build_parser
    from attnact.train.cli import parse_args_with_overrides

    if argv[0] == "torchrun":
        argv = argv[argv.index("attnact"):]
    if argv[1:] == ["--version"]:  # argparse prints it and exits
        with pytest.raises(SystemExit) as stop:
            parse_args_with_overrides(build_parser(), argv[1:])
        assert stop.value.code == 0
        return
    parse_args_with_overrides(build_parser(), argv[1:])


def test_the_yaml_config_of_the_training_guide_is_a_config() -> None:
    from attnact.train import TrainConfig

    (block,) = _blocks(DOCS / "guide" / "training.md", "yaml")
    config = TrainConfig.from_dict(yaml.safe_load(block))
    assert (config.act, config.model_kwargs, config.epochs) == ("atac", {"blocks": 3}, 200)
    assert config.optimizer == "nag" and config.milestones == [150, 175]


def test_the_units_page_takes_its_table_from_the_registry() -> None:
    from attnact.units.catalog import activation_table_markdown

    hooks = _hooks()
    page = (DOCS / "guide" / "units.md").read_text()
    assert hooks.ACTIVATION_TABLE in page
    rendered = hooks.on_page_markdown(page, None, None, None)
    assert activation_table_markdown() in rendered and hooks.ACTIVATION_TABLE not in rendered


# ----------------------------------------------------------------------------- the build
def test_the_docstring_rewriter() -> None:
    griffe_rst = pytest.importorskip("griffe") and _load("griffe_rst")
    table = "Rows:\n\n=====  ====\na      b\n=====  ====\n1      2\n=====  ====\n\nAfter."
    fenced = griffe_rst._fence_tables(table)
    assert fenced.split("\n")[2] == "```text" and fenced.split("\n")[-3] == "```"
    assert griffe_rst._LITERAL.sub(r"\1:", "Quick use::\n\n    x") == "Quick use:\n\n    x"
    match = griffe_rst._ROLE.search("see :func:`~attnact.units.atac.set_memory_efficient`.")
    assert match is not None and match.group(1) == "~attnact.units.atac.set_memory_efficient"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"attnact_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_site_builds_strict_with_every_public_name(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (what ``make docs`` runs) passes, and each public name has its
    entry (an anchor with its dotted path) on its package's page."""
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs the [docs] extra")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    for package, page in REFERENCE.items():
        html = (site / page.replace(".md", ".html")).read_text()
        ids = set(re.findall(r'id="([^"]+)"', html))
        missing = [n for n in _public_names(package)
                   if n not in ids and f"{n}.{n.rpartition('.')[2]}" not in ids]
        assert missing == [], f"{page}: no entry for {missing}"
    # benchmarks/README.md becomes the folder's index page
    for rel in ("DESIGN.html", "reports/CLAIMS.html", "benchmarks/index.html",
                "reports/atac-ablation/quick/table.html", "guide/units.html"):
        assert (site / rel).is_file(), rel
    units = (site / "guide" / "units.html").read_text()
    assert "<td><code>atac</code></td>" in units  # the registry's table was put in
