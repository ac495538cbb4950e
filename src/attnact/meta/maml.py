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
:func:`fit_maml` runs it from a :class:`~attnact.train.config.TrainConfig` whose ``extra`` holds
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
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from attnact._checks import (
    check_choice,
    check_int,
    check_known_keys,
    check_positive_int,
    check_positive_number,
)
from attnact.meta.tasks import TaskBatch, TaskSampler
from attnact.train.checkpoint import (
    capture_rng_state,
    restore_rng_state,
)
from attnact.train.config import TrainConfig
from attnact.train.rundir import RunDirectory

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
BATCHING = ("auto", "vmap", "loop")
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
@dataclass(frozen=True)
class MAMLSettings:
    """The meta-learning settings :func:`fit_maml` reads from ``TrainConfig.extra``.

    Attributes:
        ways, shots: N-way K-shot tasks (paper: 5-way, 1 and 5 shots).
        queries: query images per class and task. The paper does not say (the authors' script
            uses as many queries as shots and reports the meta-training query accuracy); 15 is
            the usual few-shot protocol (Finn et al. used 15 for miniImageNet) and makes the
            held-out accuracy less noisy.
        tasks_per_step: tasks per meta update (paper: 32).
        inner_steps: SGD steps of adaptation, in meta-training and at test time (paper: 5).
        inner_lr: their learning rate α. The paper gives one learning rate, 0.005; the authors'
            script (densechen/AReLU, meta_mnist.py, run with its defaults) uses it for both the
            inner SGD steps and the outer Adam, so α defaults to 0.005 and the meta learning
            rate is ``TrainConfig.lr``. Larger α is not safe for every unit: with 5 steps,
            Fashion-MNIST 5-way 1-shot and MNIST-Conv, AReLU (whose positive slope 1 + σ(β)
            ≈ 1.88 compounds over the three layers) diverged in meta-training at α = 0.05 and
            0.1 (ReLU trained) and already in the first inner steps at α = 0.2 and 0.4 (Finn et
            al.'s Omniglot value); α = 0.005 and 0.02 trained both.
        iterations: meta updates (paper: 100). ``TrainConfig.epochs`` is not used.
        eval_every: evaluate (and checkpoint) every this many iterations and after the last.
        test_tasks: tasks of each evaluation; the same tasks every time (a generator seeded from
            ``TrainConfig.seed`` alone), so every activation of a seed meets the same tasks.
        split: ``"samples"``: meta-train on tasks from the training split, test on tasks from the
            test split (same classes, images never seen in meta-training); ``"classes"``:
            meta-train on ``train_classes`` of the training split, test on the disjoint
            ``test_classes`` of the test split (default: the first and the second half of the
            classes).
        train_classes, test_classes: restrict the pools to these classes (both modes).
        first_order: first-order MAML (default: second order, as the paper's framework).
        batching: tasks at once with vmap, one by one, or ``"auto"`` (vmap if possible).
    """

    ways: int = 5
    shots: int = 1
    queries: int = 15
    tasks_per_step: int = 32
    inner_steps: int = 5
    inner_lr: float = 0.005
    iterations: int = 100
    eval_every: int = 10
    test_tasks: int = 200
    split: str = "samples"
    train_classes: list[int] | None = None
    test_classes: list[int] | None = None
    first_order: bool = False
    batching: str = "auto"

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries", "tasks_per_step", "iterations", "eval_every",
                     "test_tasks"):
            check_positive_int(f"extra.{name}", getattr(self, name))
        check_int("extra.inner_steps", self.inner_steps, 0)
        check_positive_number("extra.inner_lr", self.inner_lr)
        object.__setattr__(self, "inner_lr", float(self.inner_lr))
        check_choice("extra.split", self.split, ("samples", "classes"))
        check_choice("extra.batching", self.batching, BATCHING)
        if not isinstance(self.first_order, bool):
            raise ValueError(f"extra.first_order must be true or false, got {self.first_order!r}")
        for name in ("train_classes", "test_classes"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value
            ):
                raise ValueError(f"extra.{name} must be a list of class indices, got {value!r}")
            object.__setattr__(self, name, [int(c) for c in value])
        if self.split == "classes" and self.train_classes and self.test_classes:
            common = sorted(set(self.train_classes) & set(self.test_classes))
            if common:
                raise ValueError(
                    f"split 'classes' needs disjoint train_classes and test_classes; both hold "
                    f"{common}"
                )

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> MAMLSettings:
        """Settings from ``TrainConfig.extra``; unknown keys raise (with a suggestion)."""
        check_known_keys(extra, [f.name for f in fields(cls)], what="MAML setting in extra:")
        return cls(**dict(extra))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Settings that may change between a run and its resumption (more iterations, say).
_RESUME_QUIET = {"resume", "progress", "tensorboard", "out_dir", "data_dir", "device"}
_RESUME_QUIET_META = {"iterations"}
# What the checkpoint holds: a resumed run cannot change it.
_RESUME_FIXED = ("model", "act", "act_kwargs", "model_kwargs")


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
            raise ValueError(f"extra.{name}: {bad} are not classes of {info.name} "
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
    old, new = ckpt["config"], config.to_dict()
    old_meta = MAMLSettings.from_extra(old.get("extra", {})).to_dict()
    new_meta = MAMLSettings.from_extra(new["extra"]).to_dict()
    fixed = [k for k in _RESUME_FIXED if old.get(k) != new[k]]
    if old_meta["ways"] != new_meta["ways"]:
        fixed.append("extra.ways")
    if fixed:
        raise ValueError(
            f"cannot resume {path} with a different {', '.join(fixed)}: the checkpoint holds "
            f"that model; start a new run in another out_dir"
        )
    changed = sorted(
        k for k in new if k not in _RESUME_QUIET | {"extra"} and old.get(k, new[k]) != new[k]
    )
    changed += sorted(
        f"extra.{k}" for k in new_meta if k not in _RESUME_QUIET_META and old_meta[k] != new_meta[k]
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

    Reads the meta-learning settings from ``config.extra`` (see :class:`MAMLSettings`) and from
    the config: model, act, act_kwargs, model_kwargs, dataset, data_dir, pad_to, limit_train /
    limit_test (restrict the image pools to the first N images of each split), lr (the meta
    learning rate of Adam; paper: 0.005), weight_decay (Adam's), seed, device, out_dir, resume.
    Optimizer, batch sizes, epochs and schedules of plain training do not apply.

    With ``out_dir`` it writes a run directory like the training engine's: ``config.yaml``;
    ``metrics.csv`` (:data:`METRIC_COLUMNS`, one row per evaluation); ``checkpoint.pt``
    (meta-parameters, Adam state, iteration, task generator and RNG states, history) after each
    evaluation; ``summary.json`` (status ``running`` … ``finished``). ``resume=True`` continues
    from the checkpoint and ends exactly as an uninterrupted run would.

    Returns:
        The summary (also ``summary.json``): status, model, act, dataset, epochs (= iterations),
        epochs_completed, final and best metrics rows, params, wall_time_s, config, meta.
    """
    meta = MAMLSettings.from_extra(config.extra)
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
    try:
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
            logger.info(
                "iteration %d/%d  train loss %.4f acc %.2f%%  |  test acc %.2f%% ± %.2f  |  %.1f s",
                done, meta.iterations, row["train_loss"], row["train_acc"], row["test_top1"],
                row["test_top1_ci"], row["epoch_time_s"],
            )
    except FloatingPointError as err:
        summary("diverged", err)
        raise
    except KeyboardInterrupt as err:
        summary("interrupted", err)
        raise
    except Exception as err:
        summary("failed", err)
        raise
    return summary("finished")
