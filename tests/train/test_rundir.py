"""The run directory's one owner: its files, the edited-CSV repair, and that no other module
names a run file."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import attnact
from attnact.train import TrainConfig, fit
from attnact.train.rundir import RunDirectory

RUN_FILES = {RunDirectory.CONFIG, RunDirectory.METRICS, RunDirectory.CHECKPOINT,
             RunDirectory.SUMMARY, RunDirectory.SPEC, RunDirectory.ERROR,
             RunDirectory.WRITER_LOCK, RunDirectory.SWEEP_LOCK}


def _string_constants(tree: ast.AST) -> set[str]:
    """String literals that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                body[0].value, ast.Constant):
            docstrings.add(id(body[0].value))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings}


def test_only_the_run_directory_names_run_files():
    src = Path(attnact.__file__).parent
    offenders = {}
    for path in src.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        named = _string_constants(ast.parse(path.read_text())) & RUN_FILES
        if named:
            offenders[str(path.relative_to(src))] = sorted(named)
    assert offenders == {}


def test_files_round_trip_and_the_csv_digest(tmp_path):
    files = RunDirectory(tmp_path / "run")
    with files.writing():
        digest = files.write_metrics([{"epoch": 1, "test_top1": 50.0, "x": None}],
                                     ["epoch", "test_top1", "x"])
        assert files.metrics_digest() == digest
        assert files.read_metrics() == [{"epoch": 1.0, "test_top1": 50.0,
                                         "x": pytest.approx(float("nan"), nan_ok=True)}]
        files.write_summary({"status": "finished"})
        assert files.read_summary() == {"status": "finished"}
        files.file(RunDirectory.SUMMARY).write_text("{not json")
        with pytest.raises(ValueError, match="not valid JSON"):
            files.read_summary()
    with pytest.raises(ValueError, match="not a sweep record"):
        files.write_json("summary.json", {})


def test_an_edited_metrics_csv_is_rebuilt_from_the_checkpoint(tmp_path, fakes):
    """A hand-typed 99.99 (or a non-numeric cell) in metrics.csv never reaches a report."""
    from attnact.experiments import RunSpec, RunStore, run_grid

    def tiny_fit(cfg):
        torch.manual_seed(0)
        return fit(cfg, model=fakes.tiny_model(), loaders=fakes.make_loaders(batch_size=16))

    cfg = TrainConfig(model="tiny", dataset="fake", epochs=3, batch_size=16, progress=False,
                      deterministic=True)
    store = RunStore(tmp_path)
    spec = RunSpec("tiny-seed0", {"seed": 0}, cfg, fit=tiny_fit)
    assert run_grid([spec], store, backend="inline", log=lambda m: None).ok
    true = [r["test_top1"] for r in store.record(spec.key).metrics]
    csv_path = store.files(spec.key).file(RunDirectory.METRICS)
    pristine = csv_path.read_text()
    for edit in ("99.99", "n/a"):
        lines = pristine.splitlines(keepends=True)
        cells = lines[-1].split(",")
        cells[lines[0].split(",").index("test_top1")] = edit
        lines[-1] = ",".join(cells)
        csv_path.write_text("".join(lines))
        record = RunStore(tmp_path).record(spec.key)
        assert [r["test_top1"] for r in record.metrics] == true
        assert csv_path.read_text() == pristine  # rebuilt from the checkpoint's history
    summary = json.loads(store.files(spec.key).file(RunDirectory.SUMMARY).read_text())
    assert summary["metrics_sha256"] == store.files(spec.key).metrics_digest()
