"""Fault injection on checkpoints and run directories: a flipped bit, a truncated or empty file,
a file that is no checkpoint, and two writers on one directory are each refused with a message
of ours that names the file, and nothing the run had is lost."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from attnact.fileio import exclusive_lock
from attnact.train import TrainConfig, fit
from attnact.train.checkpoint import (
    CheckpointError,
    checkpoint_digest,
    load_checkpoint,
    save_checkpoint,
)


def _state():
    g = torch.Generator().manual_seed(0)
    return {"format": 1, "epoch": 3, "model": {"w": torch.randn(64, 64, generator=g)},
            "history": [{"epoch": 1, "test_top1": 50.0}]}


def _flip(path, offset, bit=0):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_checkpoint_round_trips_and_carries_its_digest(tmp_path):
    path = tmp_path / "checkpoint.pt"
    digest = save_checkpoint(path, _state())
    assert checkpoint_digest(path) == digest
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], _state()["model"]["w"])


def test_every_flipped_bit_is_refused(tmp_path):
    """40 single-bit flips spread over header and payload: every one refused, none loaded."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    size = path.stat().st_size
    pristine = path.read_bytes()
    offsets = sorted({0, 5, 30, 60, 90, 91, 92, size // 3, size // 2, size - 1,
                      *range(100, size, max(1, size // 30))})[:40]
    refused = 0
    for i, offset in enumerate(offsets):
        path.write_bytes(pristine)
        _flip(path, offset, bit=i % 8)
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)
        refused += 1
    assert refused == len(offsets) >= 35


@pytest.mark.parametrize("keep", [0, 1, 20, 90, 91, 200, -1])
def test_truncated_or_empty_checkpoints_are_refused(tmp_path, keep):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match="train the run again"):
        load_checkpoint(path)


def test_files_that_are_no_checkpoint_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("model: 1\n")
    with pytest.raises(CheckpointError, match="no attnact checkpoint header"):
        load_checkpoint(path)
    save_checkpoint(path, [1, 2, 3])  # a valid file of something else
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_an_older_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(_state(), path)  # what attnact wrote before the header
    with pytest.warns(UserWarning, match="no checksum"):
        assert load_checkpoint(path)["epoch"] == 3
    with pytest.raises(CheckpointError, match="without a checksum"):
        checkpoint_digest(path)


# ------------------------------------------------------------------- the engine and the CLI
def _config(tmp_path, **kw):
    return TrainConfig(model="tiny", dataset="fake", epochs=2, batch_size=16, lr=0.05,
                       progress=False, deterministic=True, out_dir=str(tmp_path / "run"), **kw)


def _train(fakes, cfg):
    torch.manual_seed(cfg.seed)
    return fit(cfg, model=fakes.tiny_model(),
               loaders=fakes.make_loaders(batch_size=cfg.batch_size, seed=cfg.seed))


def test_resuming_from_a_flipped_checkpoint_is_refused_and_loses_nothing(tmp_path, fakes):
    cfg = _config(tmp_path)
    _train(fakes, cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["checkpoint_sha256"] == checkpoint_digest(run / "checkpoint.pt")
    _flip(run / "checkpoint.pt", (run / "checkpoint.pt").stat().st_size // 2)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError, match="corrupted"):
        _train(fakes, cfg.replace(epochs=3, resume=True))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # every file as it was


def test_a_second_writer_on_one_run_directory_is_refused(tmp_path, fakes, capsys):
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    with exclusive_lock(run / ".writer.lock") as held:  # another process writing the run
        assert held
        with pytest.raises(ValueError, match="being written by another process"):
            _train(fakes, cfg)
        assert sorted(p.name for p in run.iterdir()) == [".writer.lock"]  # nothing written
        from attnact.cli import main

        code = main(["train", "--out", str(run), "--epochs", "1", "--no-progress"])
        assert code == 2
        assert "being written by another process" in capsys.readouterr().err
    _train(fakes, cfg)  # the lock died with its holder: the run trains
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_a_sweep_does_not_reuse_a_finished_run_with_a_flipped_checkpoint(tmp_path, fakes):
    """compare/reproduce: the run is refused (reported failed, with the reason), not counted
    finished and not trained over; its summary and metrics stay as they were."""
    from attnact.experiments import RunSpec, RunStore, run_grid

    store = RunStore(tmp_path / "store")

    def tiny_fit(cfg):
        return _train(fakes, cfg)

    spec = RunSpec("tiny-seed0", {"seed": 0}, _config(tmp_path).replace(out_dir=None),
                   fit=tiny_fit)
    assert run_grid([spec], store, backend="inline", log=lambda m: None).ok
    run = store.run_dir(spec.key)
    _flip(run / "checkpoint.pt", 200)
    kept = {n: (run / n).read_bytes() for n in ("summary.json", "metrics.csv", "checkpoint.pt")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.status(spec.key) == "corrupted"
        assert store.record(spec.key) is None
        sweep = run_grid([spec], store, backend="inline", log=lambda m: None)
    (outcome,) = sweep.outcomes
    assert outcome.status == "failed" and "corrupted" in outcome.error
    assert {n: (run / n).read_bytes() for n in kept} == kept


def test_written_files_follow_the_umask(tmp_path):
    import os

    from attnact.fileio import atomic_write_text

    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        assert atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_temporaries_left_by_a_killed_writer_are_removed_by_the_next(tmp_path, fakes):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _train(fakes, _config(tmp_path))
    assert not stale.exists()
    assert not list(run.glob(".*.tmp"))


def test_an_unwritable_out_dir_is_a_clear_error(tmp_path, capsys):
    from attnact.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["train", "--out", str(blocker / "run"), "--epochs", "1", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write the run directory" in err and "Traceback" not in err


def test_an_explicit_data_dir_is_the_only_copy_used(tmp_path, capsys, monkeypatch):
    """Fashion-MNIST may be installed system-wide: an empty or partial --data-dir must not fall
    back to it (the run would train on other data than asked)."""
    from attnact.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for data_dir in (tmp_path / "missing", tmp_path / "empty"):
        if data_dir.name == "empty":
            data_dir.mkdir()
        code = main(["train", "--dataset", "fashion_mnist", "--data-dir", str(data_dir),
                     "--out", str(tmp_path / data_dir.name), "--epochs", "1", "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert "not found" in err and str(data_dir) in err
        assert "/usr/share" not in err
        assert not (tmp_path / data_dir.name / "checkpoint.pt").exists()


def test_a_checkpoint_without_the_training_state_is_refused(tmp_path, fakes):
    """A valid file that lacks what a resume reads (here: no model) is refused, not a KeyError."""
    cfg = _config(tmp_path)
    _train(fakes, cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["model"]
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"not a complete training checkpoint.*model"):
        _train(fakes, cfg.replace(epochs=3, resume=True))


def test_a_kill_between_any_two_writes_resumes_to_the_same_run(tmp_path, fakes, monkeypatch):
    """Kill the writer at each of its file writes in turn (before the write lands), resume, and
    get exactly the run an uninterrupted writer makes (weights and every metric), with a
    summary that describes the files as they are."""
    from attnact.train.rundir import RunDirectory

    class Killed(BaseException):
        pass

    def run(name, resume=False):
        return _train(fakes, _config(tmp_path).replace(out_dir=str(tmp_path / name),
                                                       resume=resume))

    reference = run("reference")
    writes = ("write_config", "write_metrics", "write_summary", "save_checkpoint")
    originals = {w: getattr(RunDirectory, w) for w in writes}
    calls = {"n": 0}

    def counting(name):
        def write(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["kill_at"]:
                raise Killed
            return originals[name](self, *args, **kwargs)
        return write

    calls["kill_at"] = 0
    for w in writes:
        monkeypatch.setattr(RunDirectory, w, counting(w))
    run("count")
    total = calls["n"]
    assert total == 7  # config, summary (running), 2 × (checkpoint, CSV), summary (finished)
    for kill_at in range(1, total + 1):
        name = f"kill{kill_at}"
        calls.update(n=0, kill_at=kill_at)
        with pytest.raises(Killed):
            run(name)
        calls.update(n=0, kill_at=0)
        resumed = run(name, resume=True)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["status"] == "finished", kill_at
        files = RunDirectory(tmp_path / name)
        # the summary describes the files that are there (times differ from run to run, so
        # the digests are compared with the files, not with the reference's)
        assert summary["checkpoint_sha256"] == files.checkpoint_digest(), kill_at
        assert summary["metrics_sha256"] == files.metrics_digest(), kill_at
        a, b = reference.model.state_dict(), resumed.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), kill_at
        measured = ("train_loss", "train_acc", "test_loss", "test_top1", "test_top5")
        assert [[r[k] for k in measured] for r in resumed.history] == [
            [r[k] for k in measured] for r in reference.history], kill_at
