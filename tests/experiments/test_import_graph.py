"""The experiments package's import graph is acyclic, and ``attnact.experiments.framework``
still exports what it did before the framework was split (issue #13).

The graph is read from the source with ``ast``: every ``import`` statement counts, also those
inside functions (a lazy import hides a cycle from the interpreter, not from the design).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import attnact.experiments

PACKAGE = "attnact.experiments"


def package_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for the package's ``__init__`` and its top-level modules."""
    modules = {package: package_dir / "__init__.py"}
    for path in sorted(package_dir.glob("*.py")):
        if path.name != "__init__.py":
            modules[f"{package}.{path.stem}"] = path
    return modules


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports.

    ``from X import name`` is an edge to ``X.name`` when that is a module, else to ``X`` (for
    ``X`` the package: its ``__init__``). The package ``__init__`` every submodule import runs
    first is not an edge: only what a statement names is.
    """
    modules = package_modules(package_dir, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        base = module if module == package else module.rpartition(".")[0]
        named: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    parent = base.rsplit(".", node.level - 1)[0]
                    source = f"{parent}.{source}" if source else parent
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    named.add(sub if sub in modules else source)
        graph[module] = {name for name in named if name in modules and name != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for succ in sorted(graph.get(node, ())):
            if state.get(succ) == 1:
                return [*path[path.index(succ):], succ]
            if succ not in state and (found := visit(succ)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    pkg.mkdir()
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # the old framework <-> registry shape: one side imports the other lazily
        ({"__init__.py": "", "a.py": "from pkg.b import thing\n",
          "b.py": "def f():\n    from pkg.a import x\n"}, ["pkg.a", "pkg.b", "pkg.a"]),
        ({"__init__.py": "", "a.py": "from . import b\n", "b.py": "import pkg.a\n"},
         ["pkg.a", "pkg.b", "pkg.a"]),
        # a module taking a name from the package's __init__, which imports that module
        ({"__init__.py": "from pkg.a import x\n", "a.py": "from pkg import y\n"},
         ["pkg", "pkg.a", "pkg"]),
        ({"__init__.py": "from pkg.a import x\n", "a.py": "from pkg.b import z\n",
          "b.py": "import os\n"}, None),
    ],
)
def test_the_cycle_finder_sees_cycles_lazy_or_relative(tmp_path, files, cycle):
    pkg = write_package(tmp_path, files)
    assert find_cycle(import_graph(pkg, "pkg")) == cycle


def test_the_experiments_package_has_no_import_cycle():
    graph = import_graph(Path(attnact.experiments.__file__).parent, PACKAGE)
    assert f"{PACKAGE}.reproduction" in graph and f"{PACKAGE}.registry" in graph
    assert find_cycle(graph) is None
    # the dependency between the registry and reproduce runs one way
    assert f"{PACKAGE}.registry" in graph[f"{PACKAGE}.reproduction"]
    assert not any(m.endswith((".reproduction", ".runners")) for m in graph[f"{PACKAGE}.registry"])
    # nothing in the package goes through the compatibility module
    assert not [m for m, edges in graph.items() if f"{PACKAGE}.framework" in edges]


# The names ``attnact.experiments.framework`` exported before the split, and those imported from
# it anywhere (tests, other packages, users' code).
OLD_FRAMEWORK_NAMES = {
    "attnact.experiments.commands": ["train_command"],
    "attnact.experiments.execute": ["RunOutcome", "available_cores", "default_threads",
                                    "execute_run"],
    "attnact.experiments.experiment": ["Experiment", "ReportContext"],
    "attnact.experiments.keys": ["DEFAULT_FIT", "RunSpec", "check_key", "filter_specs",
                                 "run_key"],
    "attnact.experiments.reproduction": ["ReproduceResult", "reproduce"],
    "attnact.experiments.results": ["Results"],
    "attnact.experiments.runners": ["BACKENDS", "SweepResult", "run_grid"],
    "attnact.experiments.store": ["RunRecord", "RunStore", "StoreConflictError"],
    "attnact.train.config": ["RUN_LOCAL_FIELDS", "config_identity"],
}


def test_the_old_framework_module_re_exports_the_same_objects():
    framework = importlib.import_module("attnact.experiments.framework")
    expected = {n for names in OLD_FRAMEWORK_NAMES.values() for n in names}
    assert set(framework.__all__) == expected
    for module, names in OLD_FRAMEWORK_NAMES.items():
        home = importlib.import_module(module)
        for name in names:
            assert getattr(framework, name) is getattr(home, name), name


def test_worker_targets_live_where_spawned_processes_import_them():
    """The process and Ray backends pickle ``execute_run`` and the specs by module and name."""
    from attnact.experiments import RunSpec, execute_run
    from attnact.experiments.keys import DEFAULT_FIT, resolve_fit
    from attnact.train.engine import fit

    assert execute_run.__module__ == "attnact.experiments.execute"
    assert RunSpec.__module__ == "attnact.experiments.keys"
    assert resolve_fit(DEFAULT_FIT) is fit
