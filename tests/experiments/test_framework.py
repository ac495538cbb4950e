"""The experiment framework: run keys and specs, the run store, the runner (inline and worker
processes), results.csv exactly once, config conflicts, locks, reproduce() and its report, and a
sweep killed with SIGKILL mid-way and restarted."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from attnact.cli import build_parser
from attnact.experiments import (
    Experiment,
    Results,
    RunSpec,
    RunStore,
    StoreConflictError,
    execute_run,
    register_experiment,
    reproduce,
    run_grid,
    run_key,
    train_command,
)
from attnact.experiments.keys import filter_specs
from attnact.train.checkpoint import save_checkpoint
from attnact.train.cli import config_from_args
from attnact.train.config import TrainConfig, config_identity

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "sweep_driver.py"


@pytest.fixture
def helpers(monkeypatch):
    """sweep_helpers, importable by name here and in spawned workers (they get sys.path)."""
    monkeypatch.syspath_prepend(str(HERE))
    import sweep_helpers

    return sweep_helpers


def quiet(_msg: str) -> None:
    pass


# ---------------------------------------------------------------------------- fakes
class FakeFit:
    """Writes what the engine writes; accuracy = 50 + 10·seed (+ 5 for act 'atac')."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[tuple[str, bool]] = []
        self.fail = fail

    def __call__(self, cfg: TrainConfig) -> None:
        out = Path(cfg.out_dir)
        self.calls.append((out.name, cfg.resume))
        if out.name in self.fail:
            raise RuntimeError(f"no luck for {out.name}")
        cfg.to_yaml(out / "config.yaml")
        save_checkpoint(out / "checkpoint.pt", {"epoch": 2})  # the engine always leaves one
        acc = 50.0 + 10 * cfg.seed + (5.0 if cfg.act == "atac" else 0.0)
        (out / "metrics.csv").write_text(
            "epoch,test_top1,test_loss,epoch_time_s\n"
            f"1,{acc - 20},1.0,2.0\n2,{acc},0.5,2.0\n"
        )
        (out / "summary.json").write_text(
            json.dumps({"status": "finished", "params": 123, "wall_time_s": 4.0})
        )


def specs_for(fit, acts=("relu", "atac"), seeds=2, epochs=2):
    return [
        RunSpec(
            run_key(act, f"seed{s}"),
            {"act": act, "seed": s},
            TrainConfig(act=act, seed=s, epochs=epochs, progress=False),
            fit=fit,
        )
        for s in range(seeds)
        for act in acts
    ]


# ---------------------------------------------------------------------------- keys, specs
def test_run_keys():
    assert run_key("cifar10", "b2", "atac", "seed1") == "cifar10-b2-atac-seed1"
    assert run_key("relu/seed0") == "relu/seed0"
    for bad in ("", "a b", "../x", "a/../b", "-x", "a//b", "ä"):
        with pytest.raises(ValueError, match="invalid run key"):
            run_key(bad)


def test_run_spec_validation():
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="module:function"):
        RunSpec("k", {}, cfg, fit="not a target")
    with pytest.raises(ValueError, match="coordinate b="):
        RunSpec("k", {"b": [1, 2]}, cfg)
    with pytest.raises(ValueError, match="TrainConfig"):
        RunSpec("k", {}, {"epochs": 1})


# ---------------------------------------------------------------------------- store, runner
def test_sweep_skips_finished_resumes_unfinished_and_reports_failures(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeFit(fail={"atac-seed1"})
    specs = specs_for(fake)
    sweep = run_grid(specs, store, backend="inline", log=quiet)
    assert [o.status for o in sweep.outcomes] == ["finished", "finished", "finished", "failed"]
    assert "no luck for atac-seed1" in sweep.failed[0].error
    assert not sweep.ok
    assert store.status("atac-seed1") == "failed"
    assert "no luck" in store.detail("atac-seed1")
    assert json.loads((tmp_path / "relu-seed0" / "spec.json").read_text())["coords"] == {
        "act": "relu", "seed": 0}

    # interrupted run: summary gone, a checkpoint left -> resumed; the failed run is retried
    (tmp_path / "relu-seed1" / "summary.json").unlink()
    (tmp_path / "relu-seed1" / "checkpoint.pt").write_bytes(b"x")
    assert store.status("relu-seed1") == "unfinished"
    again = FakeFit()
    specs = specs_for(again)
    sweep = run_grid(specs, store, backend="inline", log=quiet)
    assert sorted(again.calls) == [("atac-seed1", False), ("relu-seed1", True)]
    assert sweep.ok and len(sweep.skipped) == 2
    assert not (tmp_path / "atac-seed1" / "error.json").exists()  # cleared by the success

    third = FakeFit()
    assert run_grid(specs_for(third), store, backend="inline", log=quiet).ok
    assert third.calls == []


def test_results_index_has_every_run_once_and_is_rebuilt(tmp_path):
    store = RunStore(tmp_path / "runs")
    specs = specs_for(FakeFit(fail={"atac-seed1"}))
    run_grid(specs, store, backend="inline", log=quiet)
    pending = RunSpec("relu-seed9", {"act": "relu", "seed": 9}, TrainConfig(act="relu"))
    results = Results([*specs, pending], store)
    path = results.write_index(tmp_path / "results.csv")
    first = path.read_text()
    rows = list(csv.DictReader(path.open()))
    assert [r["key"] for r in rows] == [s.key for s in specs] + ["relu-seed9"]
    assert [r["status"] for r in rows] == ["finished", "finished", "finished", "failed",
                                           "pending"]
    assert rows[1]["final_top1"] == "55.0" and rows[1]["first_epoch_top1"] == "35.0"
    assert "no luck" in rows[3]["detail"]
    Results([*specs, pending], store).write_index(path)  # rebuilt, not appended
    assert path.read_text() == first
    assert store.keys() == sorted(s.key for s in specs)  # the directories alone know the grid
    # paired values by seed
    assert results.values(act="atac") == {0: 55.0}
    assert results.values(act="relu") == {0: 50.0, 1: 60.0}
    assert [s.key for s in results.missing] == ["atac-seed1", "relu-seed9"]


def test_a_changed_config_is_refused_not_reused(tmp_path):
    store = RunStore(tmp_path)
    run_grid(specs_for(FakeFit(), seeds=1), store, backend="inline", log=quiet)
    longer = specs_for(FakeFit(), seeds=1, epochs=5)
    with pytest.raises(StoreConflictError, match=r"epochs: 2 -> 5.*Delete"):
        run_grid(longer, store, backend="inline", log=quiet)
    # fields that do not change the computation may differ
    local = [RunSpec(s.key, s.coords, s.config.replace(data_dir="/elsewhere", device="cpu"),
                     fit=s.fit) for s in specs_for(FakeFit(), seeds=1)]
    assert run_grid(local, store, backend="inline", log=quiet).ok


def test_a_locked_run_is_left_to_its_owner(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeFit()
    (spec,) = specs_for(fake, acts=("relu",), seeds=1)
    with store.lock(spec.key) as got:
        assert got
        outcome = execute_run(spec, tmp_path)
    assert outcome.status == "busy" and fake.calls == []
    assert execute_run(spec, tmp_path).status == "finished"


def test_runner_argument_errors(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    specs = specs_for(FakeFit())
    with pytest.raises(ValueError, match="backend must be one of process, inline, ray"):
        run_grid(specs, store, backend="threads")
    with pytest.raises(ValueError, match="'module:function'"):
        run_grid(specs, store, backend="process")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        run_grid(specs, store, workers=0, backend="inline")
    with pytest.raises(ValueError, match="duplicate run keys: relu-seed0"):
        run_grid([specs[0], specs[0]], store, backend="inline")
    named = [RunSpec(s.key, s.coords, s.config) for s in specs]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ValueError, match=r"pip install 'attnact\[ray\]'"):
        run_grid(named, store, backend="ray", log=quiet)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"under torchrun.*--backend inline"):
        run_grid(named, store, backend="process")


def test_real_engine_runs_and_a_failing_one_inline(tmp_path, helpers):
    specs = [
        RunSpec(run_key("tiny", name, "seed0"), {"variant": name, "seed": 0},
                helpers.tiny_config("mid", 0, epochs=2), fit=helpers.FIT)
        for name in ("boom", "a")
    ]
    store = RunStore(tmp_path)
    sweep = run_grid(specs, store, backend="inline", log=quiet)
    assert [o.status for o in sweep.outcomes] == ["failed", "finished"]
    assert "boom: this run always fails" in sweep.failed[0].error
    failed = json.loads((tmp_path / "tiny-boom-seed0" / "summary.json").read_text())
    assert failed["status"] == "failed" and "boom" in failed["error"]["message"]
    assert store.status("tiny-boom-seed0") == "failed"
    assert "boom" in store.detail("tiny-boom-seed0")
    record = store.record("tiny-a-seed0")
    assert record.summary["epochs_completed"] == 2 and len(record.metrics) == 2
    assert record.coords == {"variant": "a", "seed": 0}  # from spec.json


def test_worker_processes_survive_a_dying_worker(tmp_path, helpers):
    """A worker process that dies breaks its pool; the runs in it are retried one process each,
    so the run that killed it is reported as failed and the other one finishes."""
    specs = [
        RunSpec(run_key("tiny", name, "seed0"), {"variant": name, "seed": 0},
                helpers.tiny_config("mid", 0, epochs=1), fit=helpers.FIT)
        for name in ("die", "a")
    ]
    store = RunStore(tmp_path)
    messages: list[str] = []
    sweep = run_grid(specs, store, workers=2, backend="process", log=messages.append,
                     verbose=False)
    status = {o.key: o.status for o in sweep.outcomes}
    assert status == {"tiny-die-seed0": "failed", "tiny-a-seed0": "finished"}
    assert "worker process died" in sweep.failed[0].error
    assert store.is_finished("tiny-a-seed0")
    assert any("FAILED" in m for m in messages)


def test_a_run_killed_after_its_last_checkpoint_is_indexed_with_every_epoch(
        tmp_path, helpers, monkeypatch, kill_before_last_csv):
    """The window the interruption test hit now and then: the sweep killed after a run's last
    checkpoint, before its metrics.csv rewrite. The restart resumes it with nothing left to
    train; results.csv must still count all its epochs."""
    spec = RunSpec(run_key("tiny", "mid", "seed0"), {"variant": "mid", "seed": 0},
                   helpers.tiny_config("mid", 0, epochs=3), fit=helpers.FIT)
    store = RunStore(tmp_path)
    with pytest.raises(kill_before_last_csv):
        run_grid([spec], store, backend="inline", log=quiet)
    monkeypatch.undo()
    assert store.status(spec.key) == "unfinished"

    sweep = run_grid([spec], store, backend="inline", log=quiet)
    assert [o.status for o in sweep.outcomes] == ["finished"]
    (row,) = Results([spec], store).index_rows()
    assert (row["status"], row["epochs"]) == ("finished", 3)
    assert (tmp_path / spec.key / "calls.log").read_text() == "resume=False\nresume=True\n"


def _finished_tiny_run(tmp_path, helpers, epochs=3):
    spec = RunSpec(run_key("tiny", "mid", "seed0"), {"variant": "mid", "seed": 0},
                   helpers.tiny_config("mid", 0, epochs=epochs), fit=helpers.FIT)
    store = RunStore(tmp_path)
    run_grid([spec], store, backend="inline", log=quiet)
    assert store.is_finished(spec.key)
    return spec, store


@pytest.mark.parametrize("damage", ["last row lost", "row repeated", "file lost"])
def test_a_finished_run_whose_csv_disagrees_is_rebuilt_from_its_checkpoint(
    tmp_path, helpers, caplog, damage
):
    """Older versions could finish a run with metrics.csv an epoch behind its checkpoint (killed
    between the two writes of the last epoch); its record must still hold every epoch."""
    spec, store = _finished_tiny_run(tmp_path, helpers)
    path = tmp_path / spec.key / "metrics.csv"
    whole = path.read_text()
    lines = whole.splitlines(keepends=True)
    if damage == "file lost":
        path.unlink()
    else:
        path.write_text("".join(lines[:-1] if damage == "last row lost" else lines + lines[-1:]))

    with caplog.at_level("WARNING", logger="attnact.experiments"):
        record = store.record(spec.key)
    assert [int(r["epoch"]) for r in record.metrics] == [1, 2, 3]
    assert path.read_text() == whole
    assert spec.key in caplog.text and "rebuilt it from" in caplog.text
    (row,) = Results([spec], store).index_rows()
    assert (row["status"], row["epochs"]) == ("finished", 3)


@pytest.mark.parametrize("checkpoint", ["missing", "behind"])
def test_a_finished_run_whose_csv_cannot_be_rebuilt_is_trained_again(
    tmp_path, helpers, caplog, checkpoint
):
    """Without a checkpoint that agrees with the summary the run is not finished: no record,
    and the next sweep retrains it (no checkpoint) or resumes it (an older one)."""
    from attnact.train.checkpoint import load_checkpoint, save_checkpoint

    spec, store = _finished_tiny_run(tmp_path, helpers)
    run_dir = tmp_path / spec.key
    path = run_dir / "metrics.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    ckpt_path = run_dir / "checkpoint.pt"
    if checkpoint == "missing":
        ckpt_path.unlink()
    else:
        ckpt = load_checkpoint(ckpt_path)
        ckpt["history"], ckpt["epoch"] = ckpt["history"][:2], 2
        save_checkpoint(ckpt_path, ckpt)

    with caplog.at_level("WARNING", logger="attnact.experiments"):
        assert store.record(spec.key) is None
        assert store.status(spec.key) == "unfinished"
    # behind: the summary names another checkpoint than the file, which verifies: resumed
    said = "resumes from it" if checkpoint == "behind" else "counts as unfinished"
    assert spec.key in caplog.text and said in caplog.text
    assert len(path.read_text().splitlines()) == 3  # header + 2 rows: left as it was

    sweep = run_grid([spec], store, backend="inline", log=quiet)
    assert [o.status for o in sweep.outcomes] == ["finished"]
    assert [int(r["epoch"]) for r in store.record(spec.key).metrics] == [1, 2, 3]
    resumed = "True" if checkpoint == "behind" else "False"
    assert (run_dir / "calls.log").read_text() == f"resume=False\nresume={resumed}\n"


# ---------------------------------------------------------------------------- commands
@pytest.mark.parametrize(
    "config",
    [
        TrainConfig.preset("atac-cifar", dataset="cifar100", act="atac", seed=2,
                           model_kwargs={"blocks": 2, "variant": "nin", "r": 4}),
        TrainConfig.preset("atac-imagenet", act="relu"),
        TrainConfig(model="resnet_cifar", dataset="fashion_mnist", pad_to=32, limit_train=8192,
                    act="atac", act_kwargs={"use_relu": False}, lr=0.1, schedule="cosine",
                    model_kwargs={"blocks": 1, "act_fraction": 3 / 7, "order": "last_first"}),
    ],
)
def test_train_command_reproduces_the_config_exactly(config, tmp_path):
    line = train_command(config, tmp_path / "run dir", nproc=4)
    argv = shlex.split(line)
    assert argv[:6] == ["torchrun", "--nproc-per-node", "4", "-m", "attnact", "train"]
    args = build_parser().parse_args(argv[5:])
    parsed = config_from_args(args)
    assert config_identity(parsed) == config_identity(config)
    assert parsed.out_dir == str(tmp_path / "run dir") and parsed.resume


def test_filter_specs():
    specs = specs_for(FakeFit(), seeds=3)
    assert [s.key for s in filter_specs(specs, {"seed": ["0", "2"], "act": ["atac"]})] == [
        "atac-seed0", "atac-seed2"]
    # an unknown axis: the message lists every axis with its values (issue #16: a user read the
    # key part "b1" as beta=1; with the values shown, "b: 1, 2" reads as the key's b1, b2)
    with pytest.raises(ValueError, match=r"no coordinate 'b'.*act: atac, relu; seed: 0, 1, 2"):
        filter_specs(specs, {"b": ["1"]})
    with pytest.raises(ValueError, match=r"no run has seed in \['7'\]"):
        filter_specs(specs, {"seed": ["7"]})
    # a value spelled as the keys spell it (the axis name glued on) selects the same runs
    assert [s.key for s in filter_specs(specs, {"seed": ["seed1"], "act": ["relu"]})] == [
        "relu-seed1"]
    with pytest.raises(ValueError, match=r"no run has seed in \['seed7'\]"):
        filter_specs(specs, {"seed": ["seed7"]})


# ---------------------------------------------------------------------------- reproduce
class FakeExperiment(Experiment):
    name = "fake-exp"
    title = "Fake: relu vs atac"
    source = "a test"

    def __init__(self, fit):
        self.fit = fit

    def grid(self, preset, seeds):
        self.check_preset(preset)
        return specs_for(self.fit, seeds=seeds)

    def required_datasets(self, specs):
        return []

    def report(self, results, out, context):
        from attnact.experiments.reporting import (
            group_stats,
            header,
            markdown,
            plot_series,
            stats_rows,
            write_tables,
        )

        stats = group_stats(results, [{"act": "relu"}, {"act": "atac"}],
                            baseline=lambda g: None if g["act"] == "relu" else {"act": "relu"},
                            paper=lambda g: 42.0 if g["act"] == "atac" else None)
        rows = stats_rows(stats, lambda st: {"act": st.coords["act"]}, baseline_name="ReLU")
        files = write_tables(out, head=header(self, context, results),
                             sections=[("table", markdown(rows))], latex=[("t", rows)],
                             summary_rows=[st.numeric() for st in stats])
        files["fig.png"] = plot_series(
            {st.coords["act"]: [(1, list(st.values.values()))] for st in stats},
            out / "fig.png", reference={"atac": [(1, 42.0)]})
        return files


def test_reproduce_writes_the_report_with_paired_statistics(tmp_path):
    exp = FakeExperiment(FakeFit())
    result = reproduce(exp, seeds=3, backend="inline", out=tmp_path / "rep",
                       runs=tmp_path / "runs", command="attnact reproduce fake-exp", log=quiet)
    assert result.ok and len(result.sweep.trained) == 6
    assert set(result.files) == {"results.csv", "table.md", "table.tex", "summary.csv",
                                 "fig.png"}
    md = result.files["table.md"].read_text()
    # relu: 50, 60, 70 -> 60 ± 10; atac: +5 on every seed -> paired diff exactly +5 (std 0)
    assert "| relu | 3 | 60.00 ± 10.00 | [35.16, 84.84] | baseline | – |" in md
    assert "| atac | 3 | 65.00 ± 10.00 | [40.16, 89.84] | +5.00 [5.00, 5.00] | 42.0 |" in md
    assert "**Command:** `attnact reproduce fake-exp`" in md
    assert "6 of 6 finished" in md and "1 invocation(s)" in md
    assert r"$\pm$" in result.files["table.tex"].read_text()
    assert result.files["fig.png"].read_bytes()[:4] == b"\x89PNG"
    summary = list(csv.DictReader(result.files["summary.csv"].open()))
    assert summary[1]["diff_mean"] == "5.0" and summary[1]["paper"] == "42.0"

    # again: nothing trains, the same table; report_only does not log a sweep
    again = FakeFit()
    exp.fit = again
    reproduce(exp, seeds=3, backend="inline", out=tmp_path / "rep", runs=tmp_path / "runs",
              report_only=True, log=quiet)
    assert again.calls == []
    assert len(RunStore(tmp_path / "runs").sweeps()) == 1
    # the header still names the command that trained the runs, not the re-report
    assert (tmp_path / "rep" / "table.md").read_text() == md


def test_reproduce_with_missing_runs_reports_what_finished(tmp_path):
    exp = FakeExperiment(FakeFit(fail={"atac-seed1"}))
    result = reproduce(exp, backend="inline", out=tmp_path / "rep", runs=tmp_path / "runs",
                       log=quiet)
    assert not result.ok
    md = result.files["table.md"].read_text()
    assert "3 of 4 finished" in md and "`atac-seed1` (failed)" in md
    assert "| atac | 1 | 55.00 | – | +5.00 | 42.0 |" in md


def test_reproduce_checks_data_before_training(tmp_path, monkeypatch):
    class NeedsData(FakeExperiment):
        def required_datasets(self, specs):
            return ["cifar100"]

    import attnact.data

    monkeypatch.setattr(attnact.data, "is_available", lambda name, data_dir=None: False)
    fake = FakeFit()
    with pytest.raises(ValueError, match=r"cifar100 not found.*--report-only"):
        reproduce(NeedsData(fake), backend="inline", out=tmp_path / "r", runs=tmp_path / "s",
                  log=quiet)
    assert fake.calls == []


def test_reproduce_pushes_real_data_through_every_engine_model_before_training(tmp_path,
                                                                               monkeypatch):
    """Plain-engine runs are checked on a batch of their data first: a model that cannot take
    it fails in seconds, before the runs ahead of it in the grid train."""
    import attnact.train.build as build
    from attnact.experiments.keys import DEFAULT_FIT

    checked = []

    def fake_preflight(configs, log=None):
        configs = list(configs)
        checked.append([(c.act, c.model_kwargs) for c in configs])
        if any(c.model_kwargs for c in configs):
            raise build.ModelDataMismatchError("mnist_conv (act atac) cannot take dataset x")
        return len(configs)

    monkeypatch.setattr(build, "preflight", fake_preflight)

    class EngineGrid(FakeExperiment):
        def grid(self, preset, seeds):
            specs = specs_for(DEFAULT_FIT, seeds=1)
            bad = specs[-1]
            bad_config = bad.config.replace(model_kwargs={"in_channels": 3})
            return [*specs[:-1], type(bad)(bad.key, bad.coords, bad_config, fit=DEFAULT_FIT)]

    with pytest.raises(ValueError, match="cannot take dataset"):
        reproduce(EngineGrid(None), backend="inline", out=tmp_path / "r", runs=tmp_path / "s",
                  log=quiet)
    assert checked == [[("relu", {}), ("atac", {"in_channels": 3})]]
    assert not RunStore(tmp_path / "s").run_dir("relu-seed0").exists()  # nothing trained
    # runs with their own training function (MAML, transfer) read data their own way
    checked.clear()
    reproduce(FakeExperiment(FakeFit()), backend="inline", out=tmp_path / "r2",
              runs=tmp_path / "s2", log=quiet)
    assert checked == [[]]


# ---------------------------------------------------------------------------- interruption
def _finished(runs: Path) -> dict[str, Path]:
    out = {}
    for path in runs.glob("*/summary.json"):
        if json.loads(path.read_text()).get("status") == "finished":
            out[path.parent.name] = path
    return out


def test_a_killed_sweep_restarts_and_every_run_appears_exactly_once(tmp_path):
    """SIGKILL the whole sweep (driver and workers) after the first run finished, restart it,
    and check: every run in results.csv once, finished runs untouched (same summary bytes and
    mtime, one fit call), interrupted runs resumed from their checkpoints."""
    runs, rep = tmp_path / "runs", tmp_path / "rep"
    argv = [sys.executable, str(DRIVER), "--runs", str(runs), "--out", str(rep),
            "--workers", "2", "--seeds", "2", "--quiet"]
    env = {**os.environ, "ATTNACT_TEST_SLEEP": "0.4"}
    keys = [f"tiny-{v}-seed{s}" for s in range(2) for v in ("slow", "fast", "mid")]

    proc = subprocess.Popen(argv, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _finished(runs):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no run finished within 120 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    finally:
        proc.wait()
        proc.stderr.close()
    before = {k: (p.stat().st_mtime_ns, p.read_bytes()) for k, p in _finished(runs).items()}
    assert 1 <= len(before) < len(keys), before.keys()
    assert not (rep / "results.csv").exists()  # killed before the report
    cut_short = [k for k in keys if k not in before and (runs / k / "checkpoint.pt").exists()]

    done = subprocess.run(argv, env={**env, "ATTNACT_TEST_SLEEP": "0"}, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    rows = list(csv.DictReader((rep / "results.csv").open()))
    assert sorted(r["key"] for r in rows) == sorted(keys)  # each run exactly once
    bad = [{k: r.get(k) for k in ("key", "status", "epochs", "detail")}
           for r in rows if r["status"] != "finished" or r["epochs"] != "3"]
    assert not bad, (bad, done.stdout[-3000:])
    for key, (mtime, data) in before.items():
        path = runs / key / "summary.json"
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), key
        assert (runs / key / "calls.log").read_text() == "resume=False\n", key
    for key in cut_short:
        assert (runs / key / "calls.log").read_text().splitlines()[-1] == "resume=True", key
        epochs = [r["epoch"] for r in csv.DictReader((runs / key / "metrics.csv").open())]
        assert epochs == ["1", "2", "3"], key  # no epoch lost or duplicated by the resume
    sweeps = json.loads((runs / "sweeps.json").read_text())
    assert sweeps[-1]["trained"] == len(keys) - len(before)
    assert sweeps[-1]["skipped"] == len(before)
    table = (rep / "table.md").read_text()
    assert "6 of 6 finished" in table


def test_registering_a_second_experiment_under_a_taken_name_fails(helpers):
    register_experiment(exp := helpers.TinyExperiment())
    register_experiment(exp)  # the same object again is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_experiment(helpers.TinyExperiment())


def test_yaml_of_a_stored_config_is_what_the_check_reads(tmp_path):
    """check_config compares the engine's config.yaml, so runs trained by `attnact train`
    (e.g. the ImageNet commands) are recognised as the grid's."""
    cfg = TrainConfig.preset("atac-cifar", act="atac", model_kwargs={"blocks": 1})
    spec = RunSpec("k", {}, cfg)
    store = RunStore(tmp_path)
    cfg.replace(out_dir=str(tmp_path / "k"), progress=False).to_yaml(tmp_path / "k" /
                                                                     "config.yaml")
    store.check_config(spec)
    data = yaml.safe_load((tmp_path / "k" / "config.yaml").read_text())
    data["lr"] = 0.1
    (tmp_path / "k" / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(StoreConflictError, match=r"lr: 0\.1 -> 0\.2"):
        store.check_config(spec)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sweep_under_torchrun_trains_each_run_once_with_every_rank(tmp_path):
    """torchrun -m attnact reproduce ... --backend inline: one process group for the sweep,
    every rank trains each run, rank 0 writes the run directories and the report."""
    runs, rep = tmp_path / "runs", tmp_path / "rep"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), str(DRIVER), "--backend", "inline",
            "--runs", str(runs), "--out", str(rep), "--seeds", "1", "--quiet"]
    done = subprocess.run(argv, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = list(csv.DictReader((rep / "results.csv").open()))
    assert sorted(r["key"] for r in rows) == ["tiny-fast-seed0", "tiny-mid-seed0",
                                              "tiny-slow-seed0"]
    assert all(r["status"] == "finished" for r in rows)
    for row in rows:
        run = runs / row["key"]
        assert (run / "calls.log").read_text() == "resume=False\n" * 2  # both ranks, once
        assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert len(json.loads((runs / "sweeps.json").read_text())) == 1  # rank 0 only


def test_compare_runs_on_the_same_store_and_runner(tmp_path):
    """attnact compare uses RunStore/run_grid: its runs have spec.json, and parallel workers
    need the engine (a fit callable cannot cross processes)."""
    from attnact.experiments.compare import compare

    fake = FakeFit()
    base = TrainConfig(epochs=2, progress=False)
    compare(["relu", "atac"], base, tmp_path, seeds=1, fit=fake, log=quiet)
    assert RunStore(tmp_path / "runs").keys() == ["atac/seed0", "relu/seed0"]
    with pytest.raises(ValueError, match="workers > 1"):
        compare(["relu"], base, tmp_path, seeds=1, fit=fake, workers=2)


def test_the_precision_top_up_adds_seed_indices_only_where_it_says(tmp_path):
    class TopUp(FakeExperiment):
        topups: ClassVar = {"quick": (({"act": "atac"}, 4),)}

    exp = TopUp(FakeFit())
    keys = sorted(s.key for s in exp.design("quick", 2))
    assert keys == ["atac-seed0", "atac-seed1", "atac-seed2", "atac-seed3",
                    "relu-seed0", "relu-seed1"]
    assert len(exp.design("quick", 5)) == 10  # the top-up is a floor, not a cap
    assert len(exp.design("paper", 2)) == 4  # only its own preset

    class Typo(FakeExperiment):
        topups: ClassVar = {"quick": (({"act": "atak"}, 4),)}

    with pytest.raises(ValueError, match=r"top-up names \{'act': 'atak'\}, which matches none"):
        Typo(FakeFit()).design("quick", 2)
    result = reproduce(exp, preset="quick", seeds=2, backend="inline", out=tmp_path / "rep",
                       runs=tmp_path / "runs", command="attnact reproduce fake-exp", log=quiet)
    assert result.ok and len(result.sweep.trained) == 6
    md = result.files["table.md"].read_text()
    assert "**Precision top-up:** 1 grid point(s) have more seeds" in md and "act atac: 4" in md
