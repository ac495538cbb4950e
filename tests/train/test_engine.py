"""fit/evaluate on a tiny model and fake loaders: run directory, exact resumption, divergence."""

import csv
import json
import math

import pytest
import torch
from torch import nn

from attnact.train import (
    METRIC_COLUMNS,
    Callback,
    NonFiniteLossError,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
)


def config(tmp_path, name="run", **kw):
    base = dict(
        model="tiny",
        dataset="fake",
        epochs=2,
        batch_size=16,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        deterministic=True,
        progress=False,
        out_dir=str(tmp_path / name) if tmp_path is not None else None,
    )
    base.update(kw)
    return TrainConfig(**base)


def run(fakes, cfg, callbacks=(), **kw):
    torch.manual_seed(cfg.seed)  # the model is built outside fit: make its init a f(seed)
    model = fakes.tiny_model()
    loaders = fakes.make_loaders(batch_size=cfg.batch_size, seed=cfg.seed)
    return fit(cfg, model=model, loaders=loaders, callbacks=callbacks, **kw)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory_layout(tmp_path, fakes):
    result = run(fakes, config(tmp_path, epochs=3))
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == [
        ".writer.lock",  # held while a process writes the directory (empty, flock only)
        "checkpoint.pt",
        "config.yaml",
        "metrics.csv",
        "summary.json",
    ]
    assert TrainConfig.from_yaml(out / "config.yaml") == config(tmp_path, epochs=3)
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and result.status == "finished"
    assert summary["epochs"] == summary["epochs_completed"] == 3
    assert summary["params"] == sum(p.numel() for p in result.model.parameters())
    assert summary["final"]["epoch"] == 3 and summary["best"]["test_top1"] == max(
        r["test_top1"] for r in result.history
    )
    assert summary["wall_time_s"] > 0 and summary["time_per_epoch_s"] > 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and ckpt["global_step"] == 3 * 8
    (rng,) = ckpt["rng_per_rank"]  # one process
    assert set(rng) >= {"torch", "numpy", "python"}
    # it learns (10 classes: chance is 10%)
    assert result.history[-1]["test_top1"] > 25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(math.isfinite(result.history[-1][k]) for k in METRIC_COLUMNS)


def test_without_out_dir_nothing_is_written(tmp_path, fakes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(fakes, config(None, epochs=1))
    assert result.out_dir is None and list(tmp_path.iterdir()) == []
    assert result.summary["status"] == "finished"


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


class StopAt(Callback):
    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_step_end(self, state):
        if (state.epoch, state.step) == (self.epoch, self.step):
            raise RuntimeError("simulated crash")


# step schedule with its milestone inside the resumed part; Adam with cosine + warm-up (the
# exception variant keeps epochs=3, so a schedule that depends on the length is fine there)
RECIPES = {
    "sgd-step": dict(optimizer="sgd", schedule="step", milestones=[2], no_wd_bn_bias=False),
    "nag-step-ls": dict(
        optimizer="nag", schedule="step", milestones=[2], label_smoothing=0.1, no_wd_bn_bias=True
    ),
    "adam-cosine": dict(
        optimizer="adam", lr=3e-3, schedule="cosine", warmup_epochs=1, no_wd_bn_bias=True
    ),
}


@pytest.mark.parametrize("recipe", ["sgd-step", "nag-step-ls"])
def test_resume_after_fewer_epochs_is_exact(tmp_path, fakes, recipe):
    straight = run(fakes, config(tmp_path, "straight", epochs=3, **RECIPES[recipe]))
    first = run(fakes, config(tmp_path, "split", epochs=2, **RECIPES[recipe]))
    assert first.epochs_completed == 2
    resumed = run(fakes, config(tmp_path, "split", epochs=3, **RECIPES[recipe]), resume=True)
    assert_same_weights(straight.model, resumed.model)
    assert resumed.epochs_completed == 3
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_top1")
    assert [{k: r[k] for k in keys} for r in resumed.history] == [
        {k: r[k] for k in keys} for r in straight.history
    ]
    assert len(read_csv(tmp_path / "split" / "metrics.csv")) == 3


@pytest.mark.parametrize("recipe", ["sgd-step", "adam-cosine"])
def test_resume_after_a_crash_mid_epoch_is_exact(tmp_path, fakes, recipe):
    cfg = config(tmp_path, "crash", epochs=3, **RECIPES[recipe])
    straight = run(fakes, config(tmp_path, "straight", epochs=3, **RECIPES[recipe]))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(fakes, cfg, callbacks=[StopAt(epoch=1, step=3)])
    out = tmp_path / "crash"
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert len(read_csv(out / "metrics.csv")) == 1
    resumed = run(fakes, cfg.replace(resume=True))
    assert_same_weights(straight.model, resumed.model)
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in straight.history]
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_existing_run_is_not_overwritten(tmp_path, fakes):
    run(fakes, config(tmp_path, epochs=1))
    with pytest.raises(FileExistsError, match="resume"):
        run(fakes, config(tmp_path, epochs=1))


def test_resume_without_checkpoint_starts_fresh(tmp_path, fakes):
    result = run(fakes, config(tmp_path, epochs=1, resume=True))
    assert result.epochs_completed == 1


def test_resume_of_a_finished_run_trains_nothing(tmp_path, fakes):
    done = run(fakes, config(tmp_path, epochs=2))
    again = run(fakes, config(tmp_path, epochs=2), resume=True)
    assert again.history == done.history
    assert_same_weights(done.model, again.model)


def test_resume_after_a_kill_between_the_last_checkpoint_and_the_csv(tmp_path, fakes, monkeypatch,
                                                                    kill_before_last_csv):
    """Killed after the last epoch's checkpoint but before its metrics.csv rewrite, a run resumes
    with no epoch left to train; the resume must still rebuild the CSV from the checkpoint (a
    sweep's results.csv counted 2 epochs of a finished 3-epoch run)."""
    cfg = config(tmp_path, epochs=3)
    with pytest.raises(kill_before_last_csv):
        run(fakes, cfg)
    monkeypatch.undo()
    out = tmp_path / "run"
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 3
    assert len(read_csv(out / "metrics.csv")) == 2  # the window: the CSV lags the checkpoint
    assert json.loads((out / "summary.json").read_text())["status"] == "running"

    resumed = run(fakes, cfg, resume=True)
    assert resumed.epochs_completed == 3
    assert [int(r["epoch"]) for r in read_csv(out / "metrics.csv")] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_resume_applies_and_warns_about_changed_fields(tmp_path, fakes):
    run(fakes, config(tmp_path, epochs=1))
    seen = {}

    class Hyper(Callback):
        def on_fit_start(self, state):
            g = state.optimizer.param_groups[0]
            seen.update(lr=g["lr"], weight_decay=g["weight_decay"], momentum=g["momentum"])

    cfg = config(tmp_path, epochs=2, lr=0.01, weight_decay=0.0, momentum=0.5)
    with pytest.warns(UserWarning, match=r"lr: 0\.05 -> 0\.01"):
        result = run(fakes, cfg, callbacks=[Hyper()], resume=True)
    assert seen == {"lr": 0.01, "weight_decay": 0.0, "momentum": 0.5}
    assert [r["lr"] for r in result.history] == [0.05, 0.01]


def test_resume_refuses_another_model_or_optimizer(tmp_path, fakes):
    run(fakes, config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match="optimizer: 'sgd' -> 'adam'"):
        run(fakes, config(tmp_path, epochs=2, optimizer="adam"), resume=True)


class PoisonAfter(nn.Module):
    """Wraps a model; its output turns NaN from the `after`-th training forward on."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                return out * float("nan")
        return out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fakes):
    cfg = config(tmp_path, epochs=3)
    torch.manual_seed(0)
    model = PoisonAfter(fakes.tiny_model(), after=8 + 5)  # 8 steps per epoch: epoch 2, step 6
    loaders = fakes.make_loaders(batch_size=16)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 6") as info:
        fit(cfg, model=model, loaders=loaders)
    assert (info.value.epoch, info.value.step) == (1, 5) and math.isnan(info.value.value)
    out = tmp_path / "run"
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the bad step was never applied: the live weights are finite too
    assert all(torch.isfinite(p).all() for p in model.parameters())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 1
    assert summary["error"]["type"] == "NonFiniteLossError"
    assert (summary["error"]["epoch"], summary["error"]["step"]) == (2, 6)
    assert summary["error"]["value"] is None  # NaN is written as null in JSON


def test_large_learning_rate_diverges_with_a_clear_error(tmp_path, fakes):
    cfg = config(tmp_path, epochs=2, lr=1e6, momentum=0.0, weight_decay=0.0)
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        run(fakes, cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_bf16_channels_last_label_smoothing_run(tmp_path, fakes):
    cfg = config(
        tmp_path,
        epochs=1,
        bf16=True,
        channels_last=True,
        label_smoothing=0.1,
        max_steps_per_epoch=3,
    )
    result = run(fakes, cfg)
    assert math.isfinite(result.final["train_loss"])
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["global_step"] == 3


def test_deterministic_mode_is_restored_after_fit(tmp_path, fakes):
    before = torch.are_deterministic_algorithms_enabled()
    run(fakes, config(tmp_path, epochs=1, max_steps_per_epoch=1))
    assert torch.are_deterministic_algorithms_enabled() == before


def test_tensorboard_logger_writes_below_the_run_directory(tmp_path, fakes):
    pytest.importorskip("tensorboard")  # tests/train/test_loggers.py reads the events back
    run(fakes, config(tmp_path, epochs=1, max_steps_per_epoch=1, loggers=["tensorboard"]))
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_callbacks_see_every_step(tmp_path, fakes):
    seen = []

    class Record(Callback):
        def on_fit_start(self, state):
            seen.append("start")

        def on_step_end(self, state):
            seen.append((state.epoch, state.step, state.global_step))

        def on_epoch_end(self, state):
            seen.append(("end", state.history[-1]["epoch"]))

    run(fakes, config(tmp_path, epochs=2, max_steps_per_epoch=2), callbacks=[Record()])
    assert seen == ["start", (0, 0, 1), (0, 1, 2), ("end", 1), (1, 0, 3), (1, 1, 4), ("end", 2)]


class FixedLogits(nn.Module):
    """Logits that rank the classes (label + k) % C in order k = 0, 1, ..."""

    def __init__(self, num_classes, shift):
        super().__init__()
        self.num_classes, self.shift = num_classes, shift
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        labels = x[:, 0, 0, 0].long()
        order = (labels[:, None] + self.shift + torch.arange(self.num_classes)) % self.num_classes
        logits = torch.empty(len(x), self.num_classes)
        logits.scatter_(1, order, torch.arange(self.num_classes, 0, -1).float().expand_as(order))
        return logits


def test_evaluate_topk(fakes):
    labels = torch.arange(40) % 10
    images = labels.float()[:, None, None, None].expand(40, 1, 2, 2).clone()
    loader = fakes.FakeLoader(images, labels, batch_size=16, shuffle=False)
    exact = evaluate(FixedLogits(10, 0), loader)
    assert (exact["top1"], exact["top5"], exact["n"]) == (100.0, 100.0, 40)
    # the true class ranks 3rd (shift so that label is at position 2): top-1 0%, top-5 100%
    third = evaluate(FixedLogits(10, -2), loader)
    assert (third["top1"], third["top5"]) == (0.0, 100.0)
    sixth = evaluate(FixedLogits(10, -5), loader)
    assert (sixth["top1"], sixth["top5"]) == (0.0, 0.0)
    logits = FixedLogits(10, -2)(images)
    assert third["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item())


def test_evaluate_without_top5_for_five_classes(fakes):
    labels = torch.arange(10) % 5
    images = labels.float()[:, None, None, None].expand(10, 1, 2, 2).clone()
    loader = fakes.FakeLoader(images, labels, batch_size=4, shuffle=False)
    assert evaluate(FixedLogits(5, 0), loader)["top5"] is None
