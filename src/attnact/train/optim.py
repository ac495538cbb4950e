"""Optimizers and learning-rate schedules for the papers' recipes.

- NAG (``"nag"``): ``torch.optim.SGD(nesterov=True)``, the optimizer of the ATAC paper (Sec. IV-A).
  Its update (``v = m v + g``; ``w -= lr (g + m v)``, weight decay added to ``g``) is the one of
  MXNet's NAG, which the paper used.
- SGD with momentum: AReLU Sec. 4.2-4.3. Adam: AReLU Sec. 4.2.
- ``no_wd_bn_bias``: weight decay only on weights of rank >= 2 (convolution and linear kernels);
  BatchNorm scales/shifts, biases and every other 0-d/1-d parameter (learnable activation
  parameters such as AReLU's alpha/beta or PReLU's slopes) are not decayed, the GluonCV ImageNet
  recipe the ATAC ImageNet numbers come from. Decaying a BN scale or an activation's slope pulls
  the function's shape toward zero rather than regularising the fit.

The schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per ITERATION (after
``optimizer.step()``), so warm-up and cosine decay are smooth within an epoch and a checkpoint
taken between epochs resumes on the same curve. Its multiplier is a pure function of the
iteration index and the config; ``scheduler.state_dict()`` (iteration count, base learning rates)
plus the config restore it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from attnact.train.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(
    model: nn.Module, *, weight_decay: float, no_wd_bn_bias: bool
) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups: one group, or decay / no-decay when asked.

    The no-decay group holds every parameter with ``ndim <= 1`` (BatchNorm weight and bias, all
    biases, scalar activation parameters) and any parameter named ``*.bias``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_wd_bn_bias:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    decay = [p for n, p in named if not _no_decay(n, p)]
    no_decay = [p for n, p in named if _no_decay(n, p)]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (``"sgd"``), Nesterov SGD (``"nag"``) or Adam (``"adam"``) over ``model``'s parameters.

    Weight decay is the L2 term added to the gradient (``torch.optim`` and MXNet semantics), not
    AdamW's decoupled decay.
    """
    groups = param_groups(
        model, weight_decay=config.weight_decay, no_wd_bn_bias=config.no_wd_bn_bias
    )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "nag":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    raise ValueError(f"optimizer must be one of sgd, nag, adam; got {config.optimizer!r}")


def lr_factor(
    step: int,
    *,
    steps_per_epoch: int,
    epochs: int,
    schedule: str,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (0-based, global).

    Linear warm-up: ``(step + 1) / W`` for the first ``W = round(warmup_epochs * steps_per_epoch)``
    iterations (the first step already moves; GluonCV's warm-up from 0 wastes one). Then:
    ``constant``: 1; ``step``: ``gamma ** k``, ``k`` = milestones reached (a milestone ``m`` takes
    effect from the first iteration of 0-based epoch ``m``, i.e. after ``m`` epochs);
    ``cosine``: ``(1 + cos(pi * t)) / 2``, ``t`` going from 0 after the warm-up to 1 at the end.

    Examples:
        The ``atac-cifar`` step schedule (× 0.1 after 300 and after 350 epochs), and a one-epoch
        linear warm-up whose first step already moves:

        >>> from attnact.train import lr_factor
        >>> [round(lr_factor(epoch * 10, steps_per_epoch=10, epochs=400, schedule="step",
        ...                  milestones=[300, 350]), 6) for epoch in (0, 299, 300, 350)]
        [1.0, 1.0, 0.1, 0.01]
        >>> lr_factor(0, steps_per_epoch=100, epochs=10, schedule="cosine", warmup_epochs=1)
        0.01
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    warmup = round(warmup_epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    warm = (step + 1) / warmup if step < warmup else 1.0
    if schedule == "constant":
        main = 1.0
    elif schedule == "step":
        main = gamma ** sum(step >= m * steps_per_epoch for m in milestones)
    elif schedule == "cosine":
        if step < warmup:
            main = 1.0
        else:
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            main = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ValueError(f"schedule must be one of constant, step, cosine; got {schedule!r}")
    return warm * main


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> LambdaLR:
    """Per-iteration :class:`LambdaLR` for ``config``'s warm-up and schedule.

    ``steps_per_epoch`` is the number of optimizer steps per epoch (per process; every process
    steps together under DDP).
    """
    epochs, schedule, gamma = config.epochs, config.schedule, config.gamma
    milestones, warmup = tuple(config.milestones), config.warmup_epochs

    # A plain function, not a callable object: LambdaLR.state_dict() then stores only the
    # iteration count, and a resumed run (possibly with more epochs) follows the NEW config.
    def factor(step: int) -> float:
        return lr_factor(
            step,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            schedule=schedule,
            milestones=milestones,
            gamma=gamma,
            warmup_epochs=warmup,
        )

    return LambdaLR(optimizer, factor)
