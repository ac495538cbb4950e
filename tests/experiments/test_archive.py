"""`attnact reproduce --archive`: a store of finished runs' records without checkpoints, which
later sweeps skip and reports read as the original runs (the records committed beside the
reports travel between machines; the checkpoints do not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnact.cli import main
from attnact.experiments import RunStore, StoreConflictError, register_experiment, reproduce
from attnact.experiments.registry import get_experiment
from attnact.train.rundir import RunDirectory

HERE = Path(__file__).resolve().parent


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import sweep_helpers

    class ArchiveTiny(sweep_helpers.TinyExperiment):
        name = "tiny-archive"  # the registry is per process: test_framework has tiny-sweep

    try:
        return get_experiment(ArchiveTiny.name)
    except ValueError:  # not registered yet in this process
        register_experiment(exp := ArchiveTiny())
        return exp


def quiet(_msg: str) -> None:
    pass


def table_rows(path: Path) -> list[str]:
    """The table's result rows (the header names the report's writer and run directories)."""
    return [line for line in path.read_text().splitlines() if line.startswith("| ")]


def test_archived_runs_are_finished_skipped_and_report_the_same(tiny, tmp_path, capsys):
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    first = reproduce(tiny, seeds=1, backend="inline", runs=runs, out=tmp_path / "rep",
                      log=quiet, command="attnact reproduce tiny-archive")
    assert first.ok and len(first.sweep.trained) == 3

    assert main(["reproduce", "tiny-archive", "--seeds", "1", "--runs", str(runs),
                 "--archive", str(archive)]) == 0
    assert "3 copied" in capsys.readouterr().out
    store = RunStore(archive)
    archived = store.keys()
    assert len(archived) == 3
    for key in archived:
        names = {p.name for p in store.run_dir(key).iterdir()}
        assert names == set(RunDirectory.RECORD), key  # no checkpoint, no locks
        assert store.status(key) == "finished"
        assert store.record(key).metrics == RunStore(runs).record(key).metrics
    assert [e["experiment"] for e in store.sweeps()] == ["tiny-archive"]

    # a sweep on the archive trains nothing; its report has the original's rows
    again = reproduce(tiny, seeds=1, backend="inline", runs=archive, out=tmp_path / "rep2",
                      log=quiet)
    assert again.ok and again.sweep.trained == [] and len(again.sweep.skipped) == 3
    assert table_rows(tmp_path / "rep2" / "table.md") == table_rows(tmp_path / "rep" /
                                                                     "table.md")

    # archiving again finds the same runs there; the sweep log is not duplicated
    logged = len(store.sweeps())  # the original's sweep and the one on the archive
    assert main(["reproduce", "tiny-archive", "--seeds", "1", "--runs", str(runs),
                 "--archive", str(archive)]) == 0
    assert "3 present" in capsys.readouterr().out
    assert len(store.sweeps()) == logged == 2


def test_an_edited_archived_record_is_not_trusted(tiny, tmp_path):
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    reproduce(tiny, seeds=1, backend="inline", runs=runs, out=tmp_path / "rep", log=quiet)
    src = RunStore(runs)
    key = src.keys()[0]
    src.archive(key, RunStore(archive))
    metrics = RunStore(archive).run_dir(key) / RunDirectory.METRICS
    metrics.write_text(metrics.read_text().replace(",", ",9", 1))
    # the summary's digest of metrics.csv no longer matches, and there is no checkpoint to
    # rebuild it from: the run is trained again rather than reported
    assert RunStore(archive).status(key) == "unfinished"


def test_archive_never_overwrites_and_refuses_unfinished_runs(tiny, tmp_path, capsys):
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    reproduce(tiny, seeds=1, backend="inline", runs=runs, out=tmp_path / "rep", log=quiet)
    src, dest = RunStore(runs), RunStore(archive)
    key, other = src.keys()[:2]

    src.archive(key, dest)
    summary = dest.run_dir(key) / RunDirectory.SUMMARY
    data = json.loads(summary.read_text())
    data["wall_time_s"] = 1.0  # another run of the same key
    summary.write_text(json.dumps(data))
    before = summary.read_bytes()
    with pytest.raises(StoreConflictError, match="not overwritten"):
        src.archive(key, dest)
    assert summary.read_bytes() == before

    (src.run_dir(other) / RunDirectory.SUMMARY).unlink()  # interrupted: not finished
    with pytest.raises(ValueError, match="only finished runs"):
        src.archive(other, dest)
    assert main(["reproduce", "tiny-archive", "--seeds", "1", "--runs", str(runs),
                 "--archive", str(tmp_path / "archive2")]) == 0
    out = capsys.readouterr().out
    assert f"left unfinished {other}" in " ".join(out.split()) and "2 copied" in out
    assert "1 left unfinished" in out

    assert main(["reproduce", "tiny-archive", "--runs", str(runs), "--archive", str(runs)]) == 2
    assert "is the run store itself" in capsys.readouterr().err
    assert main(["reproduce", "tiny-archive", "--runs", str(runs), "--archive", str(archive),
                 "--dry-run"]) == 2
    assert "--dry-run and --archive exclude each other" in capsys.readouterr().err
