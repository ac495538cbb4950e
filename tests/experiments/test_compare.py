"""``compare`` aggregation, resumption and errors, with a fake training function whose
accuracies are known, so every number in the table can be checked by hand."""

import csv
import json
import math
from pathlib import Path

import pytest

from attnact.experiments.compare import compare
from attnact.train.checkpoint import save_checkpoint
from attnact.train.config import TrainConfig

# final accuracies (percent) per activation and seed; epoch 1 is always 10 points lower
FINAL = {"relu": [80.0, 82.0, 84.0], "arelu": [81.0, 84.0, 86.0], "atac": [85.0, 85.0, 85.0]}
STEP_TIME = {"relu": 1.0, "arelu": 1.2, "atac": 2.0}


def fake_ratios(config, acts, baseline):
    return {a: STEP_TIME[a] / STEP_TIME[baseline] for a in acts}


QUIET = {"log": lambda s: None, "time_ratios": fake_ratios}


class FakeFit:
    """Writes what the engine writes: metrics.csv (2 epochs) and summary.json."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg):
        self.calls.append((cfg.act, cfg.seed, cfg.resume))
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        k = cfg.seed - 7  # base seed 7 in these tests
        acc = FINAL[cfg.act][k]
        with (out / "metrics.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "test_top1", "epoch_time_s"])
            w.writerow([1, acc - 10, 99.0])  # wall times are not what the table reports
            w.writerow([2, acc, 99.0])
        save_checkpoint(out / "checkpoint.pt", {"epoch": 2})  # as the engine leaves one
        (out / "summary.json").write_text(json.dumps({"status": "finished"}))


@pytest.fixture
def base():
    return TrainConfig.preset("demo", seed=7, epochs=2)


def test_table_numbers_by_hand(tmp_path, base):
    fake = FakeFit()
    report = compare(
        ["relu", "arelu", "atac"], base, tmp_path, seeds=3, fit=fake, **QUIET
    )
    assert len(fake.calls) == 9
    # interleaved: every activation for seed 0 before any for seed 1
    assert [c[0] for c in fake.calls[:3]] == ["relu", "arelu", "atac"]
    rows = {r["activation"]: r for r in report.rows}

    # relu: mean 82, sample std 2
    assert rows["relu"]["final top-1 (%)"] == "82.00 ± 2.00"
    assert rows["relu"]["top-1 after epoch 1 (%)"] == "72.00 ± 2.00"
    half = 4.302652730 * 2 / math.sqrt(3)  # t_{0.975,2} s / sqrt(n)
    assert rows["relu"]["95% CI (%)"] == f"[{82 - half:.2f}, {82 + half:.2f}]"
    # arelu - relu per seed: 1, 2, 2 -> mean 1.67
    assert rows["arelu"]["vs relu (points)"].startswith("+1.67 [")
    assert rows["relu"]["vs relu (points)"] == "baseline"
    assert rows["atac"]["time/epoch vs relu"] == "2.00x"
    assert rows["arelu"]["time/epoch vs relu"] == "1.20x"
    assert rows["relu"]["params"] == 12930  # mnist_conv with ReLU (AReLU paper Sec. 4.1)

    for name in ("table.md", "table.tex", "results.csv", "curves.csv", "curves.png"):
        assert (tmp_path / name).is_file()
    runs = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(runs) == 9 and {r["activation"] for r in runs} == set(FINAL)
    assert "82.00 ± 2.00" in report.markdown()


def test_runs_are_the_stores_records(tmp_path, base):
    # one record type for a finished run: compare reads its runs as the store does
    import attnact.experiments.compare as compare_module
    from attnact.experiments import RunRecord

    report = compare(["relu", "atac"], base, tmp_path, seeds=2, fit=FakeFit(), **QUIET)
    assert compare_module.RunRecord is RunRecord
    assert all(type(r) is RunRecord for r in report.runs)
    by = {(r.coords["act"], r.coords["seed"]): r for r in report.runs}
    assert set(by) == {("relu", 0), ("relu", 1), ("atac", 0), ("atac", 1)}
    atac1 = by[("atac", 1)]
    assert atac1.key == "atac/seed1" and atac1.curve("test_top1") == [75.0, 85.0]
    assert atac1.metric("test_top1", "first") == 75.0 and atac1.final_top1 == 85.0
    assert atac1.mean_epoch_time_s == 99.0
    rows = {(r["activation"], r["seed_index"]): r
            for r in csv.DictReader((tmp_path / "results.csv").open())}
    assert rows[("relu", "1")]["first_epoch_top1"] == "72.0"
    assert rows[("relu", "1")]["best_top1"] == "82.0"
    curves = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert [float(c["test_top1"]) for c in curves
            if (c["activation"], c["seed_index"]) == ("atac", "0")] == [75.0, 85.0]


def test_rerun_skips_finished_and_resumes_unfinished(tmp_path, base):
    fake = FakeFit()
    compare(["relu", "atac"], base, tmp_path, seeds=2, fit=fake, **QUIET)
    # an interrupted run: summary missing, checkpoint present
    run = tmp_path / "runs" / "atac" / "seed1"
    (run / "summary.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"x")
    again = FakeFit()
    compare(["relu", "atac"], base, tmp_path, seeds=2, fit=again, **QUIET)
    assert again.calls == [("atac", 8, True)]


def test_unfinished_run_is_an_error(tmp_path, base):
    def broken_fit(cfg):
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)

    with pytest.raises(RuntimeError, match="did not finish: relu/seed0"):
        compare(["relu"], base, tmp_path, seeds=1, fit=broken_fit, log=lambda s: None)


def test_bad_arguments(tmp_path, base):
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        compare(["relu", "relux"], base, tmp_path, fit=FakeFit())
    with pytest.raises(ValueError, match="seeds"):
        compare(["relu"], base, tmp_path, seeds=0, fit=FakeFit())
    with pytest.raises(ValueError, match="duplicates"):
        compare(["relu", "relu"], base, tmp_path, fit=FakeFit())


def test_baseline_defaults_to_first_when_absent(tmp_path, base):
    with pytest.raises(ValueError, match="baseline 'relu' is not one of the activations"):
        compare(["arelu", "atac"], base, tmp_path, baseline="relu", fit=FakeFit(), **QUIET)
    report = compare(["arelu", "atac"], base, tmp_path, seeds=3, fit=FakeFit(), **QUIET)
    rows = {r["activation"]: r for r in report.rows}
    assert rows["arelu"]["vs arelu (points)"] == "baseline"
    assert rows["atac"]["time/epoch vs arelu"] == f"{2.0 / 1.2:.2f}x"


def test_time_ratios_measured_side_by_side_once(tmp_path, base):
    """The default measurement: real models timed in one process, cached for re-runs."""
    calls = []

    def counting(config, acts, baseline):
        from attnact.experiments.compare import measure_time_ratios

        calls.append(tuple(acts))
        return measure_time_ratios(config.replace(batch_size=16), acts, baseline)

    kw = dict(seeds=1, fit=FakeFit(), log=lambda s: None, time_ratios=counting)
    report = compare(["relu", "atac"], base, tmp_path, **kw)
    rows = {r["activation"]: r for r in report.rows}
    assert rows["relu"]["time/epoch vs relu"] == "1.00x"
    assert float(rows["atac"]["time/epoch vs relu"].rstrip("x")) > 0
    table = (tmp_path / "table.md").read_text()
    compare(["relu", "atac"], base, tmp_path, **kw)
    assert calls == [("relu", "atac")]  # measured once, reused by the re-run
    assert (tmp_path / "table.md").read_text() == table


def test_a_failed_time_measurement_keeps_the_table(tmp_path, base):
    """The runs are trained: a timing that fails is reported in its column, not raised."""

    def failing(config, acts, baseline):
        raise RuntimeError("running_mean should contain 1 elements not 3")

    fake = FakeFit()
    report = compare(["relu", "arelu"], base, tmp_path, seeds=3, fit=fake, log=lambda s: None,
                     time_ratios=failing)
    rows = {r["activation"]: r for r in report.rows}
    assert rows["arelu"]["time/epoch vs relu"] == (
        "not measured (RuntimeError: running_mean should contain 1 elements not 3)"
    )
    assert rows["arelu"]["final top-1 (%)"] == "83.67 ± 2.52"  # the accuracies are all there
    assert "not measured" in (tmp_path / "table.md").read_text()
    assert not (tmp_path / "time_ratios.json").exists()  # a re-run measures again


def test_a_model_that_rejects_the_data_fails_before_any_run(tmp_path, base):
    """With the engine, every model is checked on a batch of the real data first."""
    pytest.importorskip("attnact.data")
    from attnact.data import is_available

    if not is_available("fashion_mnist"):
        pytest.skip("Fashion-MNIST not on this machine")
    bad = base.replace(model_kwargs={"in_channels": 3})  # the data is 1×28×28
    with pytest.raises(ValueError, match=r"mnist_conv \(act relu\) cannot take dataset "
                                         r"fashion_mnist.*drop model_kwargs.in_channels"):
        compare(["relu", "arelu"], bad, tmp_path, seeds=1, log=lambda s: None)
    assert not (tmp_path / "runs" / "relu").exists()


def test_time_rounds_zero_measures_nothing(tmp_path, base):
    report = compare(["relu", "atac"], base, tmp_path, seeds=3, fit=FakeFit(),
                     log=lambda s: None, time_rounds=0)
    assert {r["time/epoch vs relu"] for r in report.rows} == {"not measured (time_rounds=0)"}
    with pytest.raises(ValueError, match="time_rounds"):
        compare(["relu"], base, tmp_path, fit=FakeFit(), time_rounds=-1)
