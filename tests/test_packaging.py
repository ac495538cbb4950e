"""What a user installs (issue #16): the core (torch, numpy, ninja) runs every unit; a command
that needs an extra says which; ``--version``; the wheel ships ``py.typed`` and the licence; the
sdist holds every test file.

The slow tests build the real artefacts (a fresh venv with the wheel, an sdist) the way a user
or a packager would.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import torch

import attnact
import attnact.cli
from attnact._extras import EXTRAS, missing_extra_message
from attnact.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Everything that is in an extra, not the core: a units-only install has none of them.
EXTRA_MODULES = sorted(EXTRAS)

# Imports attnact and runs every registered unit forward and backward, checking values that come
# from the papers' formulas (not from this code): ReLU, and AReLU's [3, -3] -> [5.64, -2.7] with
# its defaults α = 0.9 (clamped to [0.01, 0.99]), β = 2 (AReLU Eq. 4-6: x·(1 + σ(β)) for x ≥ 0,
# C(α)·x for x < 0). Prints "ok <n units>"; any failure raises.
UNITS_SCRIPT = r"""
import math, sys
import torch
import attnact
for extra in sys.argv[1].split(","):
    try:
        __import__(extra)
    except ModuleNotFoundError:
        continue
    raise AssertionError(f"{extra} is importable: not a units-only environment")
names = attnact.list_activations()
assert "atac" in names and "arelu" in names and "elsa_relu" in names, names
torch.manual_seed(0)
for name in names:
    unit = attnact.create_act_layer(name, channels=4).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    y = unit(x)
    assert torch.isfinite(y).all(), name
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name
    for pname, p in unit.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
x = torch.tensor([3.0, -3.0, 0.5])
assert torch.equal(attnact.create_act_layer("relu")(x), torch.relu(x))
pos = 1 + 1 / (1 + math.exp(-2.0))  # 1 + sigmoid(beta)
want = torch.tensor([3.0 * pos, -3.0 * 0.9, 0.5 * pos])
torch.testing.assert_close(attnact.AReLU()(x), want)
print("ok", len(names))
"""

# Hides the extras from the import system (as if never installed), then runs UNITS_SCRIPT.
BLOCKED_PRELUDE = r"""
import importlib.abc, sys
BLOCK = set(sys.argv[1].split(","))
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Absent())
"""


def _run_python(python: str | Path, code: str, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "ATTNACT_NO_COMPILE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_every_unit_runs_with_the_extras_hidden() -> None:
    out = _run_python(sys.executable, BLOCKED_PRELUDE + UNITS_SCRIPT, ",".join(EXTRA_MODULES))
    assert out.split()[0] == "ok" and int(out.split()[1]) == len(attnact.list_activations())


def test_the_cli_parser_imports_no_heavy_extra() -> None:
    # SciPy, Matplotlib and Captum take seconds to import; --help must not pay for them.
    code = ("import sys; from attnact.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('scipy', 'matplotlib', 'captum', 'ray', 'tensorboard', "
            "'wandb', 'mlflow') "
            "if m in sys.modules))")
    assert _run_python(sys.executable, code).strip() == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"attnact {version('attnact')} (torch {torch.__version__})"
    )


def test_missing_extra_message() -> None:
    err = ModuleNotFoundError("No module named 'scipy.stats'", name="scipy.stats")
    assert missing_extra_message("compare", err) == (
        "attnact compare needs scipy: pip install 'attnact[experiments]'"
    )
    ray = ModuleNotFoundError("No module named 'ray'", name="ray")
    assert missing_extra_message("reproduce", ray) == (
        "attnact reproduce needs ray: pip install 'attnact[ray]'"
    )
    # not an extra (a broken install or a bug): no message, the traceback stays
    assert missing_extra_message("train", ModuleNotFoundError("x", name="attnact.nope")) is None
    assert missing_extra_message("train", ImportError("cannot import name 'f'")) is None


def test_a_subcommand_whose_module_needs_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.import_module

    def import_module(name: str, package: str | None = None):
        if name == "attnact.experiments.cli":  # as its `import yaml` fails without the extra
            raise ModuleNotFoundError("No module named 'yaml'", name="yaml")
        return real(name, package)

    monkeypatch.setattr(attnact.cli.importlib, "import_module", import_module)
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "reproduce" in help_text and "attnact[experiments]" in help_text
    assert main(["reproduce", "atac-ablation", "--seeds", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnact: error: attnact reproduce needs pyyaml: pip install 'attnact[experiments]'"
    )


def test_a_command_that_imports_a_missing_extra_when_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now fails as if absent
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnact: error: attnact train needs pyyaml: pip install 'attnact[experiments]'"
    )
    assert not (tmp_path / "run").exists()


def test_core_dependencies_are_torch_numpy_and_ninja() -> None:
    """ninja builds the units' native kernels (torch.utils.cpp_extension); nothing else."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == [
        "ninja", "numpy", "torch"]
    extras = project["optional-dependencies"]
    # every module the CLI can name is installed by the extra it names
    for dist, extra in EXTRAS.values():
        assert any(req.startswith(dist) for req in extras[extra]), (dist, extra)
    assert "attnact[experiments]" in extras["dev"]  # `make test` exercises the experiments
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "src" / "attnact" / "py.typed").is_file()


# --- the real artefacts ------------------------------------------------------------------------


def _build(kind: str, out: Path) -> tuple[Path, str]:
    """Build an sdist or a wheel with setuptools' PEP 517 backend; returns (file, build log)."""
    code = (f"import sys; from setuptools import build_meta as b; "
            f"print('BUILT', b.build_{kind}(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code, str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    name = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("BUILT"))
    return out / name, log


@pytest.mark.slow
def test_sdist_holds_every_test_file_and_builds_without_licence_warning(tmp_path: Path) -> None:
    sdist, log = _build("sdist", tmp_path)
    assert "SetuptoolsDeprecationWarning" not in log and "License classifiers" not in log, log
    with tarfile.open(sdist) as tar:
        names = {n.partition("/")[2] for n in tar.getnames()}
    want = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    want |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("conftest.py")}
    want |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "weights" / "fixtures").rglob("*")
             if p.is_file()}
    want |= {"LICENSE", "README.md", "DESIGN.md", "Makefile", "pyproject.toml",
             "src/attnact/py.typed"}
    want |= {str(p.relative_to(ROOT)) for d in ("tools", "benchmarks")
             for p in (ROOT / d).rglob("*") if p.is_file()}
    assert len(want) > 60 and "tests/conftest.py" in want
    assert sorted(want - names) == []


@pytest.mark.slow
def test_units_only_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """The wheel with only torch (the pinned CPU build) and numpy: every unit runs."""
    wheel, _ = _build("wheel", tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        files = zf.namelist()
    assert "attnact/py.typed" in files
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    from attnact.units import native

    for src in (*native._SOURCES, *native._HEADERS):  # the native operators build from these
        assert f"attnact/units/csrc/{src}" in files, src
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", str(wheel), "numpy"], check=True, timeout=300)
    out = _run_python(python, UNITS_SCRIPT, ",".join(EXTRA_MODULES))
    assert out.split()[0] == "ok"
    # the CLI there: --version works, a command needing an extra names it
    attnact_bin = env_dir / "bin" / "attnact"
    version = subprocess.run([str(attnact_bin), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("attnact 0."), version
    compare = subprocess.run([str(attnact_bin), "compare"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert compare.returncode == 2
    assert "pip install 'attnact[experiments]'" in compare.stderr, compare.stderr
