"""Test-only training function and experiment for the framework tests, importable by name
(``sweep_helpers:engine_fit``) from worker processes: the tests put this directory on
``sys.path`` / ``PYTHONPATH`` (the suite runs in importlib mode, without packages).

``engine_fit`` is the real :func:`attnact.train.engine.fit` on tiny synthetic data (a width-4
ResNet-v2 with b = 1 on 8×8 images), so the run directories are the engine's own: atomic
``summary.json``, checkpoints, resume. Knobs, for the tests that need them:

* ``ATTNACT_TEST_SLEEP`` (seconds, env): sleep after every epoch, to give a kill a wide window;
* ``<run dir>/calls.log``: one line per call (``resume=True|False``), so a test can see that a
  finished run was never trained again;
* a run whose key contains ``boom`` raises after its first epoch (the engine writes a failed
  summary); one containing ``die`` kills its worker process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from attnact.data import TensorLoader
from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.keys import RunSpec, run_key
from attnact.experiments.reporting import group_stats, header, markdown, stats_rows, write_tables
from attnact.experiments.results import Results
from attnact.train.config import TrainConfig
from attnact.train.engine import Callback, fit

FIT = "sweep_helpers:engine_fit"


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable uint8 images: a class prototype plus noise, 4 classes, 1×8×8."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(4, 1, 8, 8, generator=g) * 200
    g.manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = (protos[labels] + 40 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 255)
    return images.to(torch.uint8), labels


class _Sleep(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_epoch_end(self, state: Any) -> None:
        if self.seconds:
            time.sleep(self.seconds)


class _Boom(Callback):
    def on_epoch_end(self, state: Any) -> None:
        raise RuntimeError("boom: this run always fails")


def engine_fit(config: TrainConfig) -> Any:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "calls.log").open("a") as fh:
        fh.write(f"resume={config.resume}\n")
    if "die" in out.name:
        os._exit(3)  # the worker process dies without a word, like an OOM kill
    x_train, y_train = synthetic(64, 1)
    x_test, y_test = synthetic(32, 2)
    train = TensorLoader(x_train, y_train, batch_size=16, shuffle=True, seed=config.seed,
                         drop_last=True)
    test = TensorLoader(x_test, y_test, batch_size=32, shuffle=False)
    info = SimpleNamespace(num_classes=4, channels=1, image_size=(8, 8))
    callbacks: list[Callback] = [_Sleep(float(os.environ.get("ATTNACT_TEST_SLEEP", "0")))]
    if "boom" in out.name:
        callbacks.append(_Boom())
    return fit(config, loaders=(train, test, info), callbacks=callbacks)


def tiny_config(variant: str, seed: int, epochs: int = 2) -> TrainConfig:
    lr = {"slow": 0.01, "fast": 0.1}.get(variant, 0.05)
    return TrainConfig(
        model="resnet_cifar", act="relu", model_kwargs={"blocks": 1, "width": 4},
        dataset="fashion_mnist", epochs=epochs, batch_size=16, lr=lr, seed=seed,
        progress=False,
    )


class TinyExperiment(Experiment):
    """Two learning rates × seeds on synthetic data; reports their accuracies and difference."""

    name = "tiny-sweep"
    title = "Test: learning rates on synthetic data"
    source = "the framework tests"
    variants = ("slow", "fast", "mid")
    epochs = 3

    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        self.check_preset(preset)
        return [
            RunSpec(run_key("tiny", v, f"seed{s}"), {"variant": v, "seed": s},
                    tiny_config(v, s, self.epochs), fit=FIT)
            for s in range(seeds)
            for v in self.variants
        ]

    def required_datasets(self, specs: Any) -> list[str]:
        return []  # synthetic data

    def settings(self, preset: str) -> str:
        return "synthetic 8×8 images, 4 classes."

    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        stats = group_stats(
            results, [{"variant": v} for v in self.variants],
            baseline=lambda g: None if g["variant"] == "slow" else {"variant": "slow"},
        )
        rows = stats_rows(stats, lambda st: {"variant": st.coords["variant"]})
        return write_tables(
            out, head=header(self, context, results),
            sections=[("accuracy", markdown(rows))],
            latex=[("tiny", rows)], summary_rows=[st.numeric() for st in stats],
        )
