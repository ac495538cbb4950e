"""The training engine: :func:`fit` a model to a :class:`TrainConfig`, :func:`evaluate` a model.

One run = one run directory (``config.out_dir``)::

    config.yaml      the config, written at start (rewritten on resume)
    metrics.csv      one row per completed epoch (see METRIC_COLUMNS), rewritten atomically
    checkpoint.pt    model, optimizer, scheduler, every rank's RNG states, history, config;
                     after every epoch
    summary.json     status ("running", "finished", "diverged", "interrupted", "failed"),
                     final and best metrics, parameter count, epochs, wall time
    tracking.json, tensorboard/, wandb/, mlruns/
                     the loggers' files, with TrainConfig.loggers (attnact.train.loggers)

metrics.csv is not appended to: the metric history lives in the checkpoint and the CSV is
rewritten from it after the checkpoint, so after a crash and resume the CSV never holds an
epoch the checkpoint does not (rows of the epoch that was cut short, or duplicates). A crash
between the two writes leaves the CSV one epoch behind; a resume rewrites it from the checkpoint
first thing, so it is whole even when no epoch is left to train.

Resuming (``resume=True``) continues from ``checkpoint.pt``: weights, optimizer and scheduler
state, every RNG state and the epoch counter are restored and ``loader.set_epoch(epoch)`` replays
the same data order, so on the CPU a resumed run ends with bit-identical weights to an
uninterrupted one (a schedule that depends on ``epochs``, i.e. cosine, is the same only if
``epochs`` is). Changed config fields take effect from the resume point (a warning lists them),
except model, act, act_kwargs, model_kwargs, optimizer and no_wd_bn_bias, which the checkpoint
fixes.

Recipes: the ATAC paper, Sec. IV-A (NAG, step or cosine schedule, warm-up, label smoothing,
no weight decay on BatchNorm and biases) and AReLU, Sec. 4.2-4.3 (SGD/Adam at constant learning
rates; accuracy after the first epoch), all expressed through :class:`TrainConfig`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from attnact.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    restore_rng_state,
)
from attnact.train.config import TrainConfig, check_plain_training, migrate_config_dict
from attnact.train.distributed import (
    DistEnv,
    all_reduce_sum,
    per_rank_batch,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from attnact.train.optim import build_optimizer, build_scheduler
from attnact.train.rundir import RunDirectory

__all__ = [
    "CHECKPOINT_NAME",
    "METRIC_COLUMNS",
    "Callback",
    "NonFiniteLossError",
    "RunResult",
    "TrainState",
    "evaluate",
    "fit",
]

logger = logging.getLogger("attnact.train")

# the run directory's file names live in attnact.train.rundir; this one is kept for callers
CHECKPOINT_NAME = RunDirectory.CHECKPOINT
CHECKPOINT_FORMAT = 1
#: Columns of metrics.csv. Accuracies are percentages; ``epoch`` counts completed epochs (1 = the
#: first); ``lr`` is the learning rate of the epoch's first iteration (first parameter group);
#: ``train_*`` are running averages over the epoch (train_loss includes label smoothing), test_loss
#: is plain cross entropy; test_top5 is empty for 5 classes or fewer.
METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_top1",
    "test_top5",
    "epoch_time_s",
    "train_images_per_s",
)
# Fields that may change between a run and its resumption without a warning.
_RESUME_QUIET_FIELDS = {"epochs", "resume", "progress", "loggers", "log_every_steps",
                        "mlflow_tracking_uri", "out_dir"}
# What a resume reads from a checkpoint (a file without one of them cannot be resumed).
_CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "rng_per_rank", "config",
                              "history", "epoch", "global_step", "wall_time_s"})
# Fields that define what the checkpoint holds: a resumed run cannot change them.
_RESUME_FIXED_FIELDS = ("model", "act", "act_kwargs", "model_kwargs", "optimizer", "no_wd_bn_bias")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the step was not applied."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        kept = (
            f"the checkpoint of epoch {epoch} (if the run writes one) is kept"
            if epoch
            else "no epoch had completed"
        )
        super().__init__(
            f"non-finite training loss {value} at epoch {epoch + 1}, step {step + 1}; the step "
            f"was not applied and {kept}. Lower the learning rate or add warm-up "
            f"(warmup_epochs)."
        )


@dataclass
class TrainState:
    """What callbacks see. ``epoch`` and ``step`` are 0-based indices of the current epoch and of
    the step within it; ``global_step`` counts optimizer steps since the start of training."""

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    env: DistEnv
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class Callback:
    """Hooks into :func:`fit`; override the ones you need. Called on every rank.

    An exception raised from a hook stops training (the run's summary says ``failed``; the last
    checkpoint stays, so ``resume=True`` continues from the last completed epoch).
    """

    def on_fit_start(self, state: TrainState) -> None:
        """After setup (and after restoring a checkpoint), before the first epoch."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the first step of ``state.epoch``."""

    def on_step_end(self, state: TrainState) -> None:
        """After each batch; ``state.loss`` is its loss (with ``grad_accum_steps`` k > 1 an
        optimizer step follows every k-th batch and the last of the epoch)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After evaluation and the checkpoint; ``state.history[-1]`` is the epoch's row."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch and the summary."""


@dataclass
class RunResult:
    """What :func:`fit` returns (also in ``summary.json``; ``model`` is the trained module,
    without the DDP wrapper)."""

    status: str
    epochs_completed: int
    final: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]]
    params: int
    wall_time_s: float
    out_dir: Path | None
    model: nn.Module
    summary: dict[str, Any]


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    bf16: bool = False,
    env: DistEnv | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Cross-entropy loss, top-1 and top-5 accuracy (percent) of ``model`` over ``loader``.

    Returns ``{"loss", "top1", "top5", "n"}``; ``top5`` is None when the model has 5 classes or
    fewer (it would be 100% by construction). Under DDP (``env`` distributed) each process
    evaluates its shard and the sums are all-reduced. Leaves the model in eval mode.
    """
    env = env or DistEnv()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    model.eval()
    # float64 sums: a float32 loss sum over 50k+ images loses digits.
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    num_classes = None
    for i, (x, y) in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        x, y = _to_device(x, y, device, channels_last)
        with _autocast(device, bf16):
            logits = model(x)
        logits = logits.float()
        num_classes = logits.shape[1]
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        k = min(5, num_classes)
        topk = logits.topk(k, dim=1).indices
        hits = topk == y[:, None]
        sums[1] += hits[:, 0].sum()
        sums[2] += hits.any(dim=1).sum()
        sums[3] += y.shape[0]
    all_reduce_sum(sums, env)
    loss, top1, top5, n = sums.tolist()
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    if num_classes is None:  # this shard was empty; the others decide whether top-5 applies
        num_classes = 6
    return {
        "loss": loss / n,
        "top1": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n if num_classes > 5 else None,
        "n": int(n),
    }


# ---------------------------------------------------------------------- fit
def fit(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    loaders: Sequence[Any] | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool | None = None,
) -> RunResult:
    """Train according to ``config``; write the run directory if ``config.out_dir`` is set.

    Args:
        config: the run (see :class:`TrainConfig` and its presets).
        model: train this module instead of ``attnact.models.create_model(config.model, ...)``.
        loaders: ``(train_loader, test_loader, info)`` (as from ``attnact.data.make_loaders``;
            ``info`` may be left out when ``model`` is given) instead of building them. Under
            DDP they must already be this process's shard with ``batch_size // world_size``.
        callbacks: :class:`Callback` hooks.
        resume: overrides ``config.resume``. True continues from ``<out_dir>/checkpoint.pt`` if
            it exists (and starts afresh if not); False refuses to overwrite an existing run.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (summary status "diverged"; the checkpoint of
            the last completed epoch is kept).
        FileExistsError: ``out_dir`` already holds a checkpoint and resume is off.
        ValueError: a bad setting (unknown model or dataset, batch not divisible by the world
            size, resuming with another model, activation or optimizer).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"fit: config must be a TrainConfig (TrainConfig.preset(name), "
                         f"TrainConfig.from_dict(...)), got {type(config).__name__}")
    if resume is not None and resume != config.resume:
        config = config.replace(resume=resume)
    check_plain_training(config, "fit")
    env = setup_distributed(config.device)
    clean = False
    try:
        with _writer_lock(config, env), _determinism(config.deterministic):
            result = _Run(config, env, model, loaders, list(callbacks)).run()
        clean = True
        return result
    finally:
        teardown_distributed(env, clean=clean)


@contextlib.contextmanager
def _writer_lock(config: TrainConfig, env: DistEnv) -> Iterator[None]:
    """One writer per run directory: a second ``fit`` on the same ``out_dir`` (two ``attnact
    train --out DIR`` at once) is refused before it reads or writes anything there."""
    if config.out_dir is None or not env.is_main:
        yield
        return
    with RunDirectory(config.out_dir).writing():
        yield


class _Run:
    """One invocation of :func:`fit` (state shared by its phases)."""

    def __init__(
        self,
        config: TrainConfig,
        env: DistEnv,
        model: nn.Module | None,
        loaders: Sequence[Any] | None,
        callbacks: list[Callback],
    ) -> None:
        self.config, self.env, self.callbacks = config, env, callbacks
        self.given_model, self.given_loaders = model, loaders
        self.out = Path(config.out_dir) if config.out_dir is not None else None
        self.files = RunDirectory(self.out) if self.out is not None else None
        self.session_start = time.perf_counter()
        self.wall_before = 0.0  # wall time of earlier sessions of this run (resume)
        self.history: list[dict[str, Any]] = []
        self.checkpoint_sha256: str | None = None
        self.metrics_sha256: str | None = None
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        self.provenance: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.global_step = 0
        self.tracker: Any = None  # attnact.train.loggers.Loggers on rank 0, with loggers
        # per-step scalars of the epoch in progress, handed to the loggers after its checkpoint
        self.pending_steps: list[tuple[int, dict[str, float], float]] = []

    # -------------------------------------------------------------- setup
    def _checkpoint_to_resume(self) -> dict[str, Any] | None:
        if self.files is None:
            return None
        path = self.files.checkpoint_path
        if not self.files.has_checkpoint():
            if self.config.resume and self.env.is_main:
                logger.info("no checkpoint in %s: starting from scratch", self.out)
            return None
        if not self.config.resume:
            raise FileExistsError(
                f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass resume=True "
                f"(attnact train --resume) to continue it, or choose another out_dir"
            )
        ckpt = self.files.load_checkpoint()
        self.checkpoint_sha256 = self.files.checkpoint_digest()
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {ckpt.get('format')!r}")
        missing = sorted(_CHECKPOINT_KEYS - set(ckpt))
        if missing:
            raise CheckpointError(f"{path}: not a complete training checkpoint (no "
                                  f"{', '.join(missing)}); move the run directory aside and "
                                  "train the run again")
        old = migrate_config_dict(ckpt["config"])  # an older version's field names
        new = self.config.to_dict()
        fixed = [k for k in _RESUME_FIXED_FIELDS if k in old and old[k] != new[k]]
        if fixed:
            details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in fixed)
            raise ValueError(
                f"cannot resume {path} with a different {', '.join(fixed)} ({details}): the "
                f"checkpoint holds that model and optimizer; start a new run in another out_dir"
            )
        changed = sorted(
            k for k in new if k not in _RESUME_QUIET_FIELDS and old.get(k, new[k]) != new[k]
        )
        if changed and self.env.is_main:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            warnings.warn(
                f"resuming {path} with a changed config ({details}); the new values apply from "
                f"epoch {ckpt['epoch'] + 1}",
                stacklevel=4,
            )
        return ckpt

    def _build_loaders(self) -> tuple[Any, Any, Any]:
        if self.given_loaders is not None:
            parts = tuple(self.given_loaders)
            if len(parts) == 3:
                return parts
            if len(parts) == 2:
                return parts[0], parts[1], None
            raise ValueError("loaders must be (train_loader, test_loader[, info])")
        from attnact.data import make_loaders  # lazy: the engine must not need the data stack

        c = self.config
        return make_loaders(
            c.dataset,
            batch_size=per_rank_batch(c.batch_size, self.env.world_size),
            data_dir=c.data_dir,
            augment=c.augment,
            pad_to=c.pad_to,
            seed=c.seed,
            rank=self.env.rank,
            world_size=self.env.world_size,
            limit_train=c.limit_train,
            limit_test=c.limit_test,
            test_batch_size=c.test_batch_size,
            # batches are assembled where the model runs, already in its memory format
            device=self.env.device,
            channels_last=c.channels_last,
            num_workers=c.num_workers,
        )

    def _build_model(self, info: Any) -> nn.Module:
        if self.given_model is not None:
            return self.given_model
        if info is None:
            raise ValueError("fit: pass loaders=(train, test, info) so the model gets num_classes")
        from attnact.train.build import build_model, check_model_takes_data, data_shape

        shape = data_shape(self.config, info)
        model = build_model(self.config, shape)
        # A model that cannot take the data fails here with a message naming both, not with a
        # shape error from deep inside the first training step.
        check_model_takes_data(model, self.config, shape)
        return model

    def _session_provenance(self) -> dict[str, Any]:
        from attnact.train.provenance import collect

        # Loaders passed in (tests, custom data) are no catalogued copy: nothing to hash.
        return collect(self.config, device=self.env.device,
                       hash_data=self.given_loaders is None)

    # -------------------------------------------------------------- files (rank 0)
    def _write_metrics_csv(self) -> None:
        if self.files is None or not self.env.is_main:
            return
        self.metrics_sha256 = self.files.write_metrics(self.history, METRIC_COLUMNS)

    def _summary(self, status: str, error: BaseException | None = None) -> dict[str, Any]:
        c = self.config
        final = dict(self.history[-1]) if self.history else {}
        best = _best_row(self.history)
        times = [r["epoch_time_s"] for r in self.history]
        summary: dict[str, Any] = {
            "status": status,
            "model": c.model,
            "act": c.act,
            "dataset": c.dataset,
            "epochs": c.epochs,
            "epochs_completed": len(self.history),
            "final": final,
            "best": best,
            "params": self.params,
            "wall_time_s": self.wall_time(),
            "time_per_epoch_s": sum(times) / len(times) if times else None,
            "world_size": self.env.world_size,
            "device": str(self.env.device),
            "torch_version": str(torch.__version__),
            "config": c.to_dict(),
            # the checkpoint and metrics.csv this summary describes: a reused run's files must
            # be these (the checkpoint is the truth; a CSV that differs is rebuilt from it)
            "checkpoint_sha256": self.checkpoint_sha256,
            "metrics_sha256": self.metrics_sha256,
            # which code, versions and data made it: one record per session, oldest first
            "provenance": list(self.provenance),
        }
        if error is not None:
            summary["error"] = {"type": type(error).__name__, "message": str(error)}
            if isinstance(error, NonFiniteLossError):
                summary["error"].update(
                    epoch=error.epoch + 1, step=error.step + 1, value=error.value
                )
        return summary

    def _write_summary(self, status: str, error: BaseException | None = None) -> dict[str, Any]:
        summary = self._summary(status, error)
        if self.files is not None and self.env.is_main:
            self.files.write_summary(summary)
        return summary

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.session_start

    # -------------------------------------------------------------- main
    def run(self) -> RunResult:
        c, env = self.config, self.env
        if c.loggers and self.files is None:
            raise ValueError(f"TrainConfig.loggers={c.loggers} need a run directory (out_dir): "
                             "the loggers write below it")
        if c.loggers and env.is_main:
            from attnact.train.loggers import check_available

            check_available(c.loggers)  # a missing package fails now, not after setup
        ckpt = self._checkpoint_to_resume()

        _seed_everything(c.seed)
        train_loader, test_loader, info = self._build_loaders()
        # Re-seed so the initial weights depend on the seed only, not on what the loaders drew.
        _seed_everything(c.seed)
        core = self._build_model(info).to(env.device)
        if c.channels_last:
            # Module.to takes memory_format at run time; torch's overloads leave it out
            core = core.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if ckpt is not None:
            core.load_state_dict(ckpt["model"])
        # DDP broadcasts rank 0's weights here, so every rank starts identical.
        model = wrap_model(core, env, sync_bn=c.sync_bn)
        # SyncBN conversion swaps modules
        core = cast(nn.Module, model.module) if model is not core else core
        self.params = sum(p.numel() for p in core.parameters())
        if env.rank > 0 and ckpt is None:
            # Ranks other than 0 draw their own random numbers from here on (dropout, stochastic
            # units such as RReLU): with one stream, every rank would drop the same positions.
            _seed_everything(_rank_seed(c.seed, env.rank))

        steps = len(train_loader)
        if c.max_steps_per_epoch is not None:
            steps = min(steps, c.max_steps_per_epoch)
        steps = _agree_min(steps, env)  # every rank must take the same number of DDP steps
        if steps == 0:
            raise ValueError(
                "the training loader yields no batches (is the dataset smaller than a batch?)"
            )
        optimizer = build_optimizer(core, c)
        # the schedule counts optimizer steps: one per grad_accum_steps batches (and one for a
        # last, shorter group of the epoch)
        scheduler = build_scheduler(optimizer, c, -(-steps // c.grad_accum_steps))
        self.ema = _ema_model(core, c.ema_decay)

        if ckpt is not None:
            # Hyperparameters as the current config sets them; loading would restore the old.
            configured = [
                {k: v for k, v in g.items() if k not in ("params", "lr")}
                for g in optimizer.param_groups
            ]
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            for group, hyper in zip(optimizer.param_groups, configured, strict=True):
                group.update(hyper)
            scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
            # The multiplier follows the current config too (e.g. more epochs of a cosine).
            for group, base, fn in zip(
                optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
            ):
                group["lr"] = base * fn(scheduler.last_epoch)
            if self.ema is not None:
                if "ema" not in ckpt:
                    assert self.files is not None  # a checkpoint comes from the run directory
                    raise ValueError(f"cannot resume {self.files.checkpoint_path} with ema_decay "
                                     f"set: it was trained without an EMA of its weights")
                self.ema.load_state_dict(ckpt["ema"])
            self.history = list(ckpt["history"])
            self.start_epoch = int(ckpt["epoch"])
            self.global_step = int(ckpt["global_step"])
            self.wall_before = float(ckpt["wall_time_s"])
            self._restore_rng(ckpt)  # last: nothing above may draw from the RNGs
            if env.is_main:
                logger.info("resuming %s after epoch %d", self.out, self.start_epoch)

        self.state = TrainState(
            config=c,
            model=core,
            optimizer=optimizer,
            scheduler=scheduler,
            env=env,
            epoch=self.start_epoch,
            global_step=self.global_step,
            history=self.history,
        )
        # Rank 0 writes the run's files, so only it records the session (git, data hash).
        self.provenance = [*(ckpt or {}).get("provenance", []),
                           *([self._session_provenance()] if env.is_main else [])]
        if self.files is not None and env.is_main:
            self.files.write_config(c.to_yaml())
        if ckpt is not None:
            # The CSV may lag the checkpoint by an epoch (killed between the two writes). Rebuild
            # it now, not only after the next epoch: a run killed after its last checkpoint has
            # no next epoch, and would be marked finished with the last row missing.
            self._write_metrics_csv()
        self._write_summary("running")
        status = "failed"
        try:
            self._open_loggers()
            for cb in self.callbacks:
                cb.on_fit_start(self.state)
            for epoch in range(self.start_epoch, c.epochs):
                self._epoch(epoch, model, core, train_loader, test_loader, steps)
            status = "finished"
        except NonFiniteLossError as err:
            status = "diverged"
            self._write_summary("diverged", err)
            if env.is_main:
                logger.error("%s", err)
            raise
        except KeyboardInterrupt as err:
            status = "interrupted"
            self._write_summary("interrupted", err)
            raise
        except Exception as err:
            self._write_summary("failed", err)
            raise
        finally:
            if self.tracker is not None:
                self.tracker.finish(status)
        summary = self._write_summary("finished")
        for cb in self.callbacks:
            cb.on_fit_end(self.state)
        return RunResult(
            status="finished",
            epochs_completed=len(self.history),
            final=summary["final"],
            best=summary["best"],
            history=list(self.history),
            params=self.params,
            wall_time_s=summary["wall_time_s"],
            out_dir=self.out,
            model=core,
            summary=summary,
        )

    def _epoch(
        self,
        epoch: int,
        model: nn.Module,
        core: nn.Module,
        train_loader: Any,
        test_loader: Any,
        steps: int,
    ) -> None:
        c, env, state = self.config, self.env, self.state
        state.epoch, state.step = epoch, 0
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # order and augmentation = f(seed, epoch): resumable
        for cb in self.callbacks:
            cb.on_epoch_start(state)
        t0 = time.perf_counter()
        lr = state.optimizer.param_groups[0]["lr"]
        train = self._train_epoch(epoch, model, train_loader, steps)
        t_train = time.perf_counter() - t0
        test = evaluate(
            core if self.ema is None else self.ema.module,
            test_loader,
            device=env.device,
            channels_last=c.channels_last,
            bf16=c.bf16,
            env=env,
        )
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "test_loss": test["loss"],
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "epoch_time_s": time.perf_counter() - t0,
            "train_images_per_s": train["n"] / t_train if t_train > 0 else float("nan"),
        }
        self.history.append(row)
        rng = self._gather_rng()  # a collective: every rank, before rank 0 writes
        if self.files is not None and env.is_main:
            # Checkpoint first, CSV second: the CSV is rebuilt from the checkpoint's history on
            # resume, so it can lag by one epoch after a crash but never run ahead.
            state_dict = self._checkpoint_state(core, epoch + 1, rng)
            self.checkpoint_sha256 = self.files.save_checkpoint(state_dict)
            self._write_metrics_csv()
        self._log_epoch(row)  # after the checkpoint: a resume never logs a step twice
        if env.is_main:
            logger.info(_format_row(row, c.epochs))
        for cb in self.callbacks:
            cb.on_epoch_end(state)

    def _train_epoch(
        self, epoch: int, model: nn.Module, loader: Any, steps: int
    ) -> dict[str, float]:
        c, env, state = self.config, self.env, self.state
        optimizer, scheduler = state.optimizer, state.scheduler
        model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss, correct, n
        bar = _progress_bar(
            enabled=c.progress and env.is_main,
            total=steps * c.batch_size,
            desc=f"epoch {epoch + 1}/{c.epochs}",
        )
        try:
            for step, (x, y) in enumerate(loader):
                if step >= steps:
                    break
                lr = optimizer.param_groups[0]["lr"]  # this step's (the scheduler steps after)
                x, y = _to_device(x, y, env.device, c.channels_last)
                with _autocast(env.device, c.bf16):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=c.label_smoothing)
                # The mean over all ranks: a NaN on any rank stops every rank at the same step
                # (one rank raising alone would leave the others waiting in all_reduce).
                check = loss.detach().reshape(1).clone()
                value = all_reduce_sum(check, env).item() / env.world_size
                if not math.isfinite(value):
                    raise NonFiniteLossError(epoch, step, value)
                k = c.grad_accum_steps
                if step % k == 0:
                    optimizer.zero_grad(set_to_none=True)
                (loss / k if k > 1 else loss).backward()
                if (step + 1) % k == 0 or step + 1 == steps:
                    if c.grad_clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in optimizer.param_groups for p in g["params"]],
                            c.grad_clip_norm)
                    optimizer.step()
                    scheduler.step()
                    if self.ema is not None:
                        self.ema.update_parameters(_unwrapped(model))
                n = y.shape[0]
                sums[0] += loss.detach().double() * n
                sums[1] += (logits.detach().argmax(dim=1) == y).sum()
                sums[2] += n
                self.global_step += 1
                state.step, state.global_step, state.loss = step, self.global_step, value
                if self.tracker is not None and self.global_step % c.log_every_steps == 0:
                    self.pending_steps.append(
                        (self.global_step, {"train/step_loss": value, "lr": lr}, time.time()))
                if bar is not None:
                    bar.update(n * env.world_size)
                    bar.set_postfix(
                        loss=f"{value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.3g}", refresh=False
                    )
                for cb in self.callbacks:
                    cb.on_step_end(state)
        finally:
            if bar is not None:
                bar.close()
        all_reduce_sum(sums, env)
        loss_sum, correct, n = sums.tolist()
        return {"loss": loss_sum / n, "acc": 100.0 * correct / n, "n": n}

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's RNG states, index = rank (an all_gather when distributed)."""
        state = capture_rng_state()
        if not self.env.distributed:
            return [state]
        import torch.distributed as dist

        states: list[Any] = [None] * self.env.world_size
        dist.all_gather_object(states, state)
        return states

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        states = ckpt["rng_per_rank"]
        env = self.env
        if len(states) == env.world_size:
            restore_rng_state(states[env.rank])
            return
        # Resumed with another number of processes: exact continuation is impossible anyway.
        restore_rng_state(states[0])
        if env.rank > 0:
            _seed_everything(_rank_seed(self.config.seed + int(ckpt["epoch"]), env.rank))
        if env.is_main:
            warnings.warn(
                f"resuming a run of {len(states)} process(es) with {env.world_size}: random "
                f"streams (dropout, ...) continue differently than they would have",
                stacklevel=4,
            )

    def _checkpoint_state(
        self, core: nn.Module, epochs_completed: int, rng: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epochs_completed,
            "global_step": self.global_step,
            "model": core.state_dict(),
            "optimizer": self.state.optimizer.state_dict(),
            "scheduler": self.state.scheduler.state_dict(),
            "rng_per_rank": rng,
            "config": self.config.to_dict(),
            "history": list(self.history),
            "best": _best_row(self.history),
            "last": dict(self.history[-1]),
            "wall_time_s": self.wall_time(),
            "torch_version": str(torch.__version__),
            "provenance": list(self.provenance),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    # -------------------------------------------------------------- tracking (rank 0)
    def _open_loggers(self) -> None:
        c = self.config
        if not (c.loggers and self.files is not None and self.env.is_main):
            return
        from attnact.train.loggers import hyperparameters, open_loggers

        self.tracker = open_loggers(c.loggers, self.files, resume_step=self.global_step,
                                    mlflow_tracking_uri=c.mlflow_tracking_uri)
        self.tracker.log_hyperparams(hyperparameters(
            c.to_dict(), self.provenance[-1] if self.provenance else None,
            **{"run.params": self.params, "run.world_size": self.env.world_size}))

    def _log_epoch(self, row: dict[str, Any]) -> None:
        """The epoch's per-step scalars, then its own, at the global step it ended on."""
        if self.tracker is None:
            return
        for step, metrics, walltime in self.pending_steps:
            self.tracker.log_metrics(metrics, step, walltime=walltime)
        self.pending_steps.clear()
        self.tracker.log_metrics({
            "epoch": row["epoch"],
            "train/loss": row["train_loss"],
            "train/acc": row["train_acc"],
            "test/loss": row["test_loss"],
            "test/top1": row["test_top1"],
            "test/top5": row["test_top5"],
            "time/epoch_s": row["epoch_time_s"],
            "time/images_per_s": row["train_images_per_s"],
        }, self.global_step)


# ---------------------------------------------------------------------- helpers
def _ema_model(core: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """PyTorch's AveragedModel as an exponential moving average of ``core``'s parameters and
    buffers (BatchNorm statistics too), or None without ``decay``."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module DDP wraps (the EMA averages its weights, not the wrapper's)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _best_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest test top-1 (the earliest on ties); {} before any epoch."""
    if not history:
        return {}
    return dict(max(history, key=lambda r: (r["test_top1"], -r["epoch"])))


def _format_row(row: dict[str, Any], epochs: int) -> str:
    top5 = f" top5 {row['test_top5']:.2f}%" if row["test_top5"] is not None else ""
    return (
        f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.4g}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%  |  "
        f"test loss {row['test_loss']:.4f} top1 {row['test_top1']:.2f}%{top5}  |  "
        f"{row['epoch_time_s']:.1f} s, {row['train_images_per_s']:.0f} img/s"
    )


def _rank_seed(seed: int, rank: int) -> int:
    # SeedSequence mixes the pair: (seed, rank) streams do not overlap (seed + rank would:
    # seed 1 rank 0 = seed 0 rank 1).
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


@contextlib.contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the previous global settings after."""
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        # cuBLAS is deterministic only with this set before its first use (PyTorch's notes on
        # reproducibility).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a kernel without a deterministic version warns instead of failing the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        # Fixed input shapes: let cuDNN pick the fastest algorithms once.
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _agree_min(value: int, env: DistEnv) -> int:
    if not env.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _progress_bar(*, enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar counting images (so it shows img/s), only on a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True
    )
