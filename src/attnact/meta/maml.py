"""Second-order MAML (Finn et al., 2017) with ``torch.func``, and a run-store fit function for the
AReLU paper's meta-learning experiment (Chen et al., "AReLU", Sec. 4.5, Table 3).

MAML learns initial parameters θ from which a few gradient steps on a task's support set give a
model that does well on the task's query set:

    θ'_t = θ − α ∇L_support,t(θ)   (repeated ``inner_steps`` times)
    θ   ← Adam step on  (1/T) Σ_t L_query,t(θ'_t)   (T = tasks per meta step)

The meta-gradient differentiates through the inner steps, Hessian-vector products included
(second order); ``first_order=True`` treats each inner gradient as a constant (FOMAML), so
∂θ'_t/∂θ = I. Every parameter is meta-learned and adapted, including those of learnable
activations (AReLU's α and β, PReLU's slopes, PAU's coefficients).

Implementation: the network is evaluated functionally (``torch.func.functional_call``) on a dict of
parameters; inner gradients come from ``torch.func.grad`` and the meta-gradient from another
``torch.func.grad`` around the whole inner loop, which gives the second-order terms. Tasks are
batched with ``torch.func.vmap`` (``batching="vmap"``) or processed one after another
(``"loop"``; the meta-gradient is then accumulated task by task). Both compute the same gradient
(up to float rounding); vmap refuses modules that draw random numbers (dropout) or update state
in place (BatchNorm in training mode), and ``"auto"`` falls back to the loop for those.

The paper's protocol (Sec. 4.5): MNIST-Conv, 5 fast-adaptation steps, 32 tasks per meta step,
100 iterations, learning rate 0.005, 5-way 1-shot and 5-way 5-shot, final test accuracy.
:func:`fit_maml` runs it from a :class:`~attnact.train.config.TrainConfig` whose ``maml`` holds
the meta-learning settings (:class:`MAMLSettings`) and writes a run directory the experiment
framework's :class:`~attnact.experiments.framework.RunStore` understands.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from attnact._checks import check_choice, check_int, check_positive_int
from attnact.meta.tasks import TaskBatch, TaskSampler
from attnact.train.checkpoint import (
    capture_rng_state,
    restore_rng_state,
)
from attnact.train.config import TrainConfig, migrate_config_dict
from attnact.train.rundir import RunDirectory
from attnact.train.settings import BATCHING, MAMLSettings

__all__ = [
    "BATCHING",
    "METRIC_COLUMNS",
    "EvalResult",
    "MAMLSettings",
    "adapt",
    "evaluate_tasks",
    "fit_maml",
    "meta_gradient",
    "meta_step",
    "model_params",
]

logger = logging.getLogger("attnact.meta")

Params = dict[str, torch.Tensor]
CHECKPOINT_FORMAT = "maml-1"
#: Columns of a MAML run's metrics.csv, one row per evaluation. ``epoch`` is the number of meta
#: iterations done; ``train_loss``/``train_acc``: mean query loss / accuracy (%) of the last meta
#: batch, after adaptation, before that iteration's meta update; ``test_*``: query loss,
#: accuracy (%) and the half-width of its 95% confidence interval over the test tasks;
#: ``epoch_time_s``: seconds since the previous row (meta steps and this evaluation).
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_top1",
    "test_top1_ci",
    "epoch_time_s",
)
_TEST_CHUNK = 50  # test tasks adapted at once (memory bound only; results do not depend on it)


# ====================================================================== functional core
def model_params(model: nn.Module) -> tuple[Params, Params]:
    """The module's parameters and buffers as dicts of detached tensors (for :func:`adapt`)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return params, buffers


def _loss_and_logits(
    model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = functional_call(model, (params, buffers), (x,))
    return F.cross_entropy(logits, y), logits


def adapt(
    model: nn.Module,
    params: Params,
    buffers: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    first_order: bool = False,
) -> Params:
    """``steps`` SGD steps of ``lr`` on the cross-entropy of ``model(x)`` against ``y``.

    ``params`` and ``buffers`` map the module's parameter and buffer names to tensors (see
    :func:`model_params`); the module's own tensors are not used or changed. Returns the adapted
    parameters. They stay differentiable functions of ``params`` — through ``torch.autograd``
    (leaf tensors with ``requires_grad``) as well as under ``torch.func`` transforms — with
    second-order terms, unless ``first_order``: then each step's gradient is a constant.
    """
    check_int("steps", steps, 0)

    def loss(p: Params) -> torch.Tensor:
        return _loss_and_logits(model, p, buffers, x, y)[0]

    step_grad = grad(loss)
    for _ in range(steps):
        g = step_grad(params)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        params = {k: p - lr * g[k] for k, p in params.items()}
    return params


def _task_fn(
    model: nn.Module, buffers: Params, steps: int, lr: float, first_order: bool
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``(params, support x, support y, query x, query y) -> (query loss, query accuracy)``."""

    def task(
        params: Params,
        sx: torch.Tensor,
        sy: torch.Tensor,
        qx: torch.Tensor,
        qy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fast = adapt(model, params, buffers, sx, sy, steps, lr, first_order)
        loss, logits = _loss_and_logits(model, fast, buffers, qx, qy)
        acc = (logits.argmax(dim=1) == qy).to(logits.dtype).mean()
        return loss, acc

    return task


def _check_batching(batching: str) -> str:
    return check_choice("batching", batching, BATCHING)


def _with_fallback(
    batching: str, run: Callable[[str], Any], what: str
) -> tuple[Any, str]:
    """``run("vmap")`` or ``run("loop")`` as asked; ``"auto"``: vmap, else the loop (warns)."""
    _check_batching(batching)
    if batching != "auto":
        return run(batching), batching
    try:
        return run("vmap"), "vmap"
    except (RuntimeError, NotImplementedError) as err:
        out = run("loop")  # a genuine error (not a vmap limitation) raises here again
        warnings.warn(
            f"{what}: torch.func.vmap failed for this model ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); tasks are processed one by one",
            stacklevel=3,
        )
        return out, "loop"


def meta_gradient(
    model: nn.Module,
    params: Params,
    buffers: Params,
    tasks: TaskBatch | Sequence[torch.Tensor],
    steps: int,
    lr: float,
    first_order: bool = False,
    batching: str = "auto",
) -> tuple[Params, torch.Tensor, torch.Tensor, str]:
    """The MAML meta-gradient at ``params``: d/dθ of the mean query loss after adaptation.

    Args:
        tasks: a :class:`TaskBatch` (or its first four tensors: support x, support y, query x,
            query y, each with a leading task dimension).
        steps, lr, first_order: the inner loop (see :func:`adapt`).
        batching: ``"vmap"`` (all tasks at once), ``"loop"`` (one task at a time) or
            ``"auto"`` (vmap if the model allows it).

    Returns:
        ``(gradients by parameter name, per-task query losses, per-task query accuracies in
        [0, 1], the batching used)``; losses and accuracies are detached.
    """
    sx, sy, qx, qy = tuple(tasks)[:4]
    n = sx.shape[0]
    task = _task_fn(model, buffers, steps, lr, first_order)

    def run(mode: str) -> tuple[Params, torch.Tensor, torch.Tensor]:
        if mode == "vmap":
            batched = vmap(task, in_dims=(None, 0, 0, 0, 0), randomness="error")

            def mean_loss(p: Params) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
                losses, accs = batched(p, sx, sy, qx, qy)
                return losses.mean(), (losses, accs)

            g, (losses, accs) = grad(mean_loss, has_aux=True)(params)
            return g, losses, accs

        def one(p: Params, t: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            loss, acc = task(p, sx[t], sy[t], qx[t], qy[t])
            return loss, (loss, acc)

        total: Params = {k: torch.zeros_like(v) for k, v in params.items()}
        losses, accs = [], []
        task_grad = grad(one, has_aux=True)
        for t in range(n):
            g, (loss, acc) = task_grad(params, t)
            for k in total:
                total[k] += g[k]
            losses.append(loss)
            accs.append(acc)
        return {k: v / n for k, v in total.items()}, torch.stack(losses), torch.stack(accs)

    (g, losses, accs), used = _with_fallback(batching, run, "meta_gradient")
    return g, losses.detach(), accs.detach(), used


def meta_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tasks: TaskBatch | Sequence[torch.Tensor],
    steps: int,
    lr: float,
    first_order: bool = False,
    batching: str = "auto",
) -> dict[str, Any]:
    """One meta update: the meta-gradient of ``tasks`` (see :func:`meta_gradient`) becomes the
    ``.grad`` of ``model``'s parameters and ``optimizer`` (Adam in MAML) takes a step.

    Returns ``{"loss": mean query loss, "acc": mean query accuracy (%), "batching": used}``
    (query loss and accuracy after adaptation, before this update).
    """
    params, buffers = model_params(model)
    g, losses, accs, used = meta_gradient(
        model, params, buffers, tasks, steps, lr, first_order, batching
    )
    loss = float(losses.mean())
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"non-finite meta loss {loss}; the update was not applied (lower inner_lr or the "
            f"meta learning rate)"
        )
    for name, p in model.named_parameters():
        p.grad = g[name].detach().to(p.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss, "acc": 100.0 * float(accs.mean()), "batching": used}


class EvalResult(NamedTuple):
    """Few-shot test performance: mean query accuracy (%) over tasks and the half-width of its
    95% Student-t confidence interval, mean query loss, and every task's accuracy (%)."""

    accuracy: float
    ci95: float
    loss: float
    per_task: torch.Tensor


def evaluate_tasks(
    model: nn.Module,
    params: Params | None,
    sampler: TaskSampler,
    n_tasks: int,
    steps: int,
    lr: float,
    generator: torch.Generator,
    *,
    batching: str = "auto",
    device: torch.device | str | None = None,
) -> EvalResult:
    """Adapt to ``n_tasks`` episodes of ``sampler`` (``steps`` SGD steps of ``lr`` on each support
    set, as in meta-training) and score the query sets.

    ``params`` None: the module's own parameters. Tasks are drawn from ``generator``; give every
    model a generator in the same state to test them on the same tasks. No gradient reaches
    ``model``.
    """
    check_positive_int("n_tasks", n_tasks)
    if params is None:
        params, buffers = model_params(model)
    else:
        params = {k: v.detach() for k, v in params.items()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
    if device is None:
        device = next(iter(params.values())).device if params else torch.device("cpu")
    task = _task_fn(model, buffers, steps, lr, first_order=True)
    losses, accs = [], []
    used = batching
    done = 0
    while done < n_tasks:
        chunk = min(_TEST_CHUNK, n_tasks - done)
        tb = sampler.sample(chunk, generator)
        sx, sy, qx, qy = (t.to(device) for t in tb[:4])

        def run(mode: str, sx: torch.Tensor = sx, sy: torch.Tensor = sy, qx: torch.Tensor = qx,
                qy: torch.Tensor = qy) -> tuple[torch.Tensor, torch.Tensor]:
            if mode == "vmap":
                return vmap(task, in_dims=(None, 0, 0, 0, 0), randomness="error")(
                    params, sx, sy, qx, qy
                )
            out = [task(params, sx[t], sy[t], qx[t], qy[t]) for t in range(sx.shape[0])]
            return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

        with torch.no_grad():
            (loss, acc), used = _with_fallback(used, run, "evaluate_tasks")
        losses.append(loss.detach().double().cpu())
        accs.append(acc.detach().double().cpu())
        done += chunk
    per_task = 100.0 * torch.cat(accs)
    from attnact.report.stats import summarize  # lazy: scipy is only needed here

    stats = summarize(per_task.tolist())
    ci = stats.half_width if n_tasks > 1 else float("nan")
    return EvalResult(stats.mean, ci, float(torch.cat(losses).mean()), per_task)


# ====================================================================== run-store fit function
# Settings that may change between a run and its resumption (more iterations, say).
_RESUME_QUIET = {"resume", "progress", "loggers", "log_every_steps", "mlflow_tracking_uri",
                 "out_dir", "data_dir", "device"}
_RESUME_QUIET_META = {"iterations"}
# What the checkpoint holds: a resumed run cannot change it.
_RESUME_FIXED = ("model", "act", "act_kwargs", "model_kwargs")


def _settings(value: MAMLSettings | Mapping[str, Any] | None) -> MAMLSettings:
    """A config's MAML settings (None: the defaults; a mapping: a checkpoint's)."""
    if value is None:
        return MAMLSettings()
    return value if isinstance(value, MAMLSettings) else MAMLSettings.from_dict(value)


def _stream(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one named random stream of a run (0: meta-training tasks, 1: test
    tasks), from ``(seed, stream)`` alone."""
    state = np.random.SeedSequence([seed, 0x4D414D4C, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pools(
    config: TrainConfig, meta: MAMLSettings
) -> tuple[TaskSampler, TaskSampler, Any, list[int], list[int]]:
    """The meta-training and test samplers of the run (see :class:`MAMLSettings`.split)."""
    from attnact.data import dataset_info, load_arrays  # lazy, like the engine

    info = dataset_info(config.dataset)
    train_x, train_y = load_arrays(info.name, info.train_split, config.data_dir)
    test_x, test_y = load_arrays(info.name, info.eval_split, config.data_dir)
    if config.limit_train is not None:
        train_x, train_y = train_x[: config.limit_train], train_y[: config.limit_train]
    if config.limit_test is not None:
        test_x, test_y = test_x[: config.limit_test], test_y[: config.limit_test]
    all_classes = list(range(info.num_classes))
    train_classes, test_classes = meta.train_classes, meta.test_classes
    if meta.split == "classes":
        half = info.num_classes // 2
        if train_classes is None and test_classes is None:
            train_classes, test_classes = all_classes[:half], all_classes[half:]
        elif train_classes is None:
            train_classes = [c for c in all_classes if c not in set(test_classes or [])]
        elif test_classes is None:
            test_classes = [c for c in all_classes if c not in set(train_classes)]
    train_classes = all_classes if train_classes is None else train_classes
    test_classes = all_classes if test_classes is None else test_classes
    for name, cls in (("train_classes", train_classes), ("test_classes", test_classes)):
        bad = [c for c in cls if not 0 <= c < info.num_classes]
        if bad:
            raise ValueError(f"maml.{name}: {bad} are not classes of {info.name} "
                             f"(0..{info.num_classes - 1})")
    # Only classes with images in the (possibly limited) pool take part.
    present_train = set(torch.unique(train_y).tolist())
    present_test = set(torch.unique(test_y).tolist())
    train_classes = [c for c in train_classes if c in present_train]
    test_classes = [c for c in test_classes if c in present_test]
    common: dict[str, Any] = {
        "ways": meta.ways,
        "shots": meta.shots,
        "queries": meta.queries,
        "mean": info.mean,
        "std": info.std,
        "pad_to": config.pad_to,
    }
    try:
        train = TaskSampler(train_x, train_y, classes=train_classes, **common)
    except ValueError as err:
        raise ValueError(f"meta-training pool ({info.name} {info.train_split}): {err}") from None
    try:
        test = TaskSampler(test_x, test_y, classes=test_classes, **common)
    except ValueError as err:
        raise ValueError(f"test pool ({info.name} {info.eval_split}): {err}") from None
    return train, test, info, train_classes, test_classes


def _build_model(config: TrainConfig, meta: MAMLSettings, info: Any) -> nn.Module:
    from attnact.train.build import build_model, data_shape

    # The network classifies a task's ways, not the dataset's classes.
    return build_model(config, data_shape(config, info), num_classes=meta.ways)


def _best_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    if not history:
        return {}
    return dict(max(history, key=lambda r: (r["test_top1"], -r["epoch"])))


def _checkpoint_to_resume(
    files: RunDirectory | None, config: TrainConfig
) -> dict[str, Any] | None:
    if files is None or not files.has_checkpoint():
        return None
    path = files.checkpoint_path
    if not config.resume:
        raise FileExistsError(
            f"{files.path} already holds a run ({path.name}); pass resume=True to continue it, "
            f"or choose another out_dir"
        )
    ckpt = files.load_checkpoint()
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a MAML checkpoint (format {ckpt.get('format')!r})")
    # a checkpoint of an older version holds the settings as ``extra``
    old, new = migrate_config_dict(ckpt["config"]), config.to_dict()
    old_meta = _settings(old.get("maml")).to_dict()
    new_meta = _settings(config.maml).to_dict()
    fixed = [k for k in _RESUME_FIXED if old.get(k) != new[k]]
    if old_meta["ways"] != new_meta["ways"]:
        fixed.append("maml.ways")
    if fixed:
        raise ValueError(
            f"cannot resume {path} with a different {', '.join(fixed)}: the checkpoint holds "
            f"that model; start a new run in another out_dir"
        )
    changed = sorted(
        k for k in new if k not in _RESUME_QUIET | {"maml"} and old.get(k, new[k]) != new[k]
    )
    changed += sorted(
        f"maml.{k}" for k in new_meta if k not in _RESUME_QUIET_META and old_meta[k] != new_meta[k]
    )
    if changed:
        warnings.warn(
            f"resuming {path} with a changed config ({', '.join(changed)}); the new values apply "
            f"from iteration {ckpt['iteration'] + 1}",
            stacklevel=3,
        )
    return ckpt


def fit_maml(config: TrainConfig) -> dict[str, Any]:
    """Meta-train ``config.model`` with MAML and evaluate it on held-out few-shot tasks.

    Reads the meta-learning settings from ``config.maml`` (see :class:`MAMLSettings`; None:
    the defaults) and from
    the config: model, act, act_kwargs, model_kwargs, dataset, data_dir, pad_to, limit_train /
    limit_test (restrict the image pools to the first N images of each split), lr (the meta
    learning rate of Adam; paper: 0.005), weight_decay (Adam's), seed, device, out_dir, resume.
    Optimizer, batch sizes, epochs and schedules of plain training do not apply.

    With ``out_dir`` it writes a run directory like the training engine's: ``config.yaml``;
    ``metrics.csv`` (:data:`METRIC_COLUMNS`, one row per evaluation); ``checkpoint.pt``
    (meta-parameters, Adam state, iteration, task generator and RNG states, history) after each
    evaluation; ``summary.json`` (status ``running`` … ``finished``). ``resume=True`` continues
    from the checkpoint and ends exactly as an uninterrupted run would. ``loggers``
    (:mod:`attnact.train.loggers`) get the hyperparameters, every ``log_every_steps``
    iterations ``train/step_loss`` and ``train/step_acc``, and every evaluation's metrics, at
    the iteration as the step.

    Returns:
        The summary (also ``summary.json``): status, model, act, dataset, epochs (= iterations),
        epochs_completed, final and best metrics rows, params, wall_time_s, config, meta.
    """
    if config.transfer is not None:
        raise ValueError("fit_maml: TrainConfig.transfer is set; transfer learning is "
                         "attnact.experiments.arelu_transfer:fit_transfer")
    meta = _settings(config.maml)
    if config.loggers and config.out_dir is None:
        raise ValueError(f"TrainConfig.loggers={config.loggers} need a run directory (out_dir): "
                         "the loggers write below it")
    files = RunDirectory(config.out_dir) if config.out_dir is not None else None
    with files.writing() if files is not None else contextlib.nullcontext():
        return _fit_maml(config, meta, files)


def _fit_maml(
    config: TrainConfig, meta: MAMLSettings, files: RunDirectory | None
) -> dict[str, Any]:
    """:func:`fit_maml`'s work, by the one writer of ``files``."""
    out = files.path if files is not None else None
    session_start = time.perf_counter()
    ckpt = _checkpoint_to_resume(files, config)
    device = _device(config.device)

    train_pool, test_pool, info, train_classes, test_classes = _pools(config, meta)
    torch.manual_seed(config.seed)  # the initial meta-parameters depend on the seed alone
    model = _build_model(config, meta, info).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    n_params = sum(p.numel() for p in model.parameters())
    task_gen = _stream(config.seed, 0)
    history: list[dict[str, Any]] = []
    start, wall_before = 0, 0.0
    batching = meta.batching
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # hyperparameters as configured now
            group.update(lr=config.lr, weight_decay=config.weight_decay)
        task_gen.set_state(ckpt["task_generator"])
        history = list(ckpt["history"])
        start = int(ckpt["iteration"])
        wall_before = float(ckpt["wall_time_s"])
        if batching == "auto":
            batching = ckpt.get("batching", "auto")
        restore_rng_state(ckpt["rng"])
        logger.info("resuming %s after iteration %d", out, start)

    from attnact.train.provenance import collect

    provenance = [*(ckpt or {}).get("provenance", []), collect(config, device=device)]
    meta_info = {
        **meta.to_dict(),
        "train_classes": train_classes,
        "test_classes": test_classes,
        "meta_lr": config.lr,
        "train_pool": len(train_pool.images),
        "test_pool": len(test_pool.images),
    }

    def wall_time() -> float:
        return wall_before + time.perf_counter() - session_start

    def summary(status: str, error: BaseException | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": status,
            "model": config.model,
            "act": config.act,
            "dataset": config.dataset,
            "epochs": meta.iterations,
            "epochs_completed": int(history[-1]["epoch"]) if history else 0,
            "final": dict(history[-1]) if history else {},
            "best": _best_row(history),
            "params": n_params,
            "wall_time_s": wall_time(),
            "device": str(device),
            "torch_version": str(torch.__version__),
            "config": config.to_dict(),
            "meta": {**meta_info, "batching": batching},
            "provenance": provenance,
        }
        if error is not None:
            data["error"] = {"type": type(error).__name__, "message": str(error)}
        if files is not None:
            files.write_summary(data)
        return data

    if files is not None:
        files.write_config(config.to_yaml())
        if ckpt is not None:
            # The CSV may lag the checkpoint (killed between the two writes); a resume with no
            # iteration left would otherwise finish the run with its last row missing.
            files.write_metrics(history, METRIC_COLUMNS)
    summary("running")
    tracker = None
    pending: list[tuple[int, dict[str, float]]] = []  # per-iteration scalars since the checkpoint
    status = "failed"
    try:
        if config.loggers and files is not None:
            from attnact.train.loggers import hyperparameters, open_loggers

            tracker = open_loggers(config.loggers, files, resume_step=start,
                                   mlflow_tracking_uri=config.mlflow_tracking_uri)
            tracker.log_hyperparams(hyperparameters(config.to_dict(), provenance[-1],
                                                    **{"run.params": n_params}))
        t_row = time.perf_counter()
        last: dict[str, Any] = {}
        for it in range(start, meta.iterations):
            tasks = train_pool.sample(meta.tasks_per_step, task_gen)
            tasks = TaskBatch(*(t.to(device) for t in tasks))
            model.train()
            last = meta_step(
                model, optimizer, tasks, meta.inner_steps, meta.inner_lr, meta.first_order,
                batching,
            )
            batching = last["batching"]
            done = it + 1
            if tracker is not None and done % config.log_every_steps == 0:
                pending.append((done, {"train/step_loss": last["loss"],
                                       "train/step_acc": last["acc"]}))
            if done % meta.eval_every and done != meta.iterations:
                continue
            model.eval()
            result = evaluate_tasks(
                model, None, test_pool, meta.test_tasks, meta.inner_steps, meta.inner_lr,
                _stream(config.seed, 1), batching=batching, device=device,
            )
            row = {
                "epoch": done,
                "train_loss": last["loss"],
                "train_acc": last["acc"],
                "test_loss": result.loss,
                "test_top1": result.accuracy,
                "test_top1_ci": result.ci95,
                "epoch_time_s": time.perf_counter() - t_row,
            }
            history.append(row)
            t_row = time.perf_counter()
            if files is not None:
                # Checkpoint first, CSV second (rebuilt from the checkpoint's history): after a
                # crash the CSV may lag the checkpoint, never run ahead of it.
                files.save_checkpoint(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "iteration": done,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "task_generator": task_gen.get_state(),
                        "rng": capture_rng_state(),
                        "batching": batching,
                        "config": config.to_dict(),
                        "history": list(history),
                        "provenance": provenance,
                        "wall_time_s": wall_time(),
                        "torch_version": str(torch.__version__),
                    },
                )
                files.write_metrics(history, METRIC_COLUMNS)
            if tracker is not None:  # after the checkpoint: a resume logs no iteration twice
                for step, metrics in pending:
                    tracker.log_metrics(metrics, step)
                pending.clear()
                tracker.log_metrics({
                    "iteration": done, "train/loss": row["train_loss"],
                    "train/acc": row["train_acc"], "test/loss": row["test_loss"],
                    "test/top1": row["test_top1"], "test/top1_ci": row["test_top1_ci"],
                    "time/interval_s": row["epoch_time_s"]}, done)
            logger.info(
                "iteration %d/%d  train loss %.4f acc %.2f%%  |  test acc %.2f%% ± %.2f  |  %.1f s",
                done, meta.iterations, row["train_loss"], row["train_acc"], row["test_top1"],
                row["test_top1_ci"], row["epoch_time_s"],
            )
        status = "finished"
    except FloatingPointError as err:
        status = "diverged"
        summary("diverged", err)
        raise
    except KeyboardInterrupt as err:
        status = "interrupted"
        summary("interrupted", err)
        raise
    except Exception as err:
        summary("failed", err)
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
    return summary("finished")
