"""Training-step time of several models as ratios, measured side by side in one process.

Wall times of runs made minutes apart on a shared machine say more about the machine's load
than about the models (under load they can put a cheap unit far below ReLU). Here every
model does one training step (forward, backward, SGD update) on the same batch, in interleaved
rounds — A, B, C, A, B, C, … — so load drifts hit all of them alike, and the median over rounds
drops the outliers. Only ratios to a baseline are reported, never absolute times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["interleaved_medians", "relative_step_times"]


def _make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def relative_step_times(
    factories: Mapping[str, Callable[[], nn.Module]],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    baseline: str,
    rounds: int = 15,
    warmup: int = 3,
) -> dict[str, float]:
    """Median training-step time of each model divided by the baseline's.

    Args:
        factories: name → function building a fresh model in training mode.
        x, y: one batch (inputs and integer class labels) every model trains on.
        baseline: the name whose time is 1.0.
        rounds: interleaved timed rounds (each model steps once per round).
        warmup: untimed steps per model first (allocator and kernel warm-up).
    """
    if baseline not in factories:
        raise ValueError(f"baseline {baseline!r} is not among the models: {sorted(factories)}")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    steps = {name: _make_step(build().train(), x, y) for name, build in factories.items()}
    medians = interleaved_medians(steps, rounds=rounds, warmup=warmup)
    return {name: medians[name] / medians[baseline] for name in medians}


def interleaved_medians(
    calls: Mapping[str, Callable[[], object]], *, rounds: int = 15, warmup: int = 3
) -> dict[str, float]:
    """Median seconds of each call over ``rounds`` interleaved rounds (A, B, C, A, B, C, …)
    after ``warmup`` untimed calls each. Absolute values are for ratios only."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
