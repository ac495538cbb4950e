"""Training: config and presets, optimizers and schedules, the fit/evaluate engine, resumable
atomic checkpoints and torchrun data parallelism.

>>> from attnact.train import TrainConfig, fit
>>> result = fit(TrainConfig.preset("demo", out_dir="runs/demo"))  # doctest: +SKIP
"""

from attnact.train.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from attnact.train.config import PRESETS, TrainConfig, list_presets
from attnact.train.engine import (
    METRIC_COLUMNS,
    Callback,
    NonFiniteLossError,
    RunResult,
    TrainState,
    evaluate,
    fit,
)
from attnact.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups

__all__ = [
    "METRIC_COLUMNS",
    "PRESETS",
    "Callback",
    "NonFiniteLossError",
    "RunResult",
    "TrainConfig",
    "TrainState",
    "atomic_write_json",
    "atomic_write_text",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "list_presets",
    "load_checkpoint",
    "lr_factor",
    "param_groups",
    "save_checkpoint",
]
