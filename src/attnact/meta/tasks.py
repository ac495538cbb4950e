"""N-way K-shot episodes drawn from in-memory image arrays (for MAML, :mod:`attnact.meta.maml`).

An episode (task) picks ``ways`` classes in a random order — the order is the relabelling: the
i-th picked class becomes label i — and, per picked class, ``shots + queries`` distinct images:
the first ``shots`` form the support set, the rest the query set, so no image is in both.

Images are the uint8 arrays :func:`attnact.data.load_arrays` returns (``N×C×H×W``; ``N×H×W`` is
read as one channel) and are converted as :class:`attnact.data.TensorLoader` converts them:
optional centred zero padding to ``pad_to × pad_to`` (on the uint8 values), then
``(x / 255 − mean) / std`` per channel (only ``x / 255`` without mean and std).

Sampling draws only from the ``torch.Generator`` passed to :meth:`TaskSampler.sample`, on the CPU,
so the same generator state gives the same episodes on every machine and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from attnact._checks import check_int, check_positive_int

__all__ = ["TaskBatch", "TaskSampler"]


class TaskBatch(NamedTuple):
    """``T`` episodes. ``S = ways·shots`` support and ``Q = ways·queries`` query images per task,
    grouped by (relabelled) class: labels are ``0,…,0, 1,…,1, …`` (``shots`` resp. ``queries``
    of each)."""

    support_x: torch.Tensor  # float32 T×S×C×H×W, normalised
    support_y: torch.Tensor  # int64 T×S, in 0..ways-1
    query_x: torch.Tensor  # float32 T×Q×C×H×W
    query_y: torch.Tensor  # int64 T×Q
    classes: torch.Tensor  # int64 T×ways: classes[t, i] is the original class of label i
    support_index: torch.Tensor  # int64 T×S: positions of the support images in the pool
    query_index: torch.Tensor  # int64 T×Q


class TaskSampler:
    """Draws N-way K-shot classification episodes from a pool of labelled images.

    Args:
        images: uint8 ``N×C×H×W`` or ``N×H×W`` (tensor or numpy array).
        labels: ``N`` integer class labels.
        ways: classes per episode (N).
        shots: support images per class (K).
        queries: query images per class.
        classes: the classes episodes may use (default: every class in ``labels``); the
            held-out-classes protocol passes disjoint lists to the meta-training and test
            samplers. Images of other classes are never drawn.
        mean, std: per-channel statistics in [0, 1] units (the dataset's, as the engine's loaders
            use); None for both: images are only scaled to [0, 1].
        pad_to: zero-pad images (centred) to ``pad_to × pad_to`` first.

    Raises:
        ValueError: malformed arrays; ``ways`` more than the classes available; a class with
            fewer than ``shots + queries`` images; a requested class with no image; bad mean/std.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        ways: int,
        shots: int,
        queries: int,
        classes: Sequence[int] | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pad_to: int | None = None,
    ) -> None:
        self.ways = check_positive_int("ways", ways)
        self.shots = check_positive_int("shots", shots)
        self.queries = check_positive_int("queries", queries)
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 N×C×H×W or N×H×W, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"labels must be 1-D with one per image: {tuple(labels.shape)} for "
                f"{len(images)} images"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        labels = labels.to(torch.int64)
        _, channels, height, width = images.shape
        if pad_to is not None:
            check_int("pad_to", pad_to, max(height, width), why="at least the image size")
        self.pad_to = pad_to
        self.scale, self.bias = _affine(channels, mean, std)

        present = torch.unique(labels).tolist()
        if classes is None:
            chosen = present
        else:
            chosen = [int(c) for c in classes]
            if len(set(chosen)) != len(chosen):
                raise ValueError(f"classes lists a class twice: {chosen}")
            absent = sorted(set(chosen) - set(present))
            if absent:
                raise ValueError(f"classes {absent} have no images (classes present: {present})")
        if self.ways > len(chosen):
            raise ValueError(
                f"ways={self.ways} but only {len(chosen)} classes are available "
                f"({chosen}); lower ways or allow more classes"
            )
        need = self.shots + self.queries
        self.members: list[torch.Tensor] = []
        small = []
        for c in chosen:
            idx = torch.nonzero(labels == c).flatten()
            if len(idx) < need:
                small.append(f"class {c}: {len(idx)}")
            self.members.append(idx)
        if small:
            raise ValueError(
                f"every class needs shots + queries = {self.shots} + {self.queries} = {need} "
                f"images; too few in {', '.join(small)}"
            )
        self.classes = torch.tensor(chosen, dtype=torch.int64)
        self.images = images
        self.labels = labels

    def __repr__(self) -> str:
        return (
            f"TaskSampler({len(self.images)} images, {len(self.classes)} classes, "
            f"{self.ways}-way {self.shots}-shot, {self.queries} queries per class)"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images episodes hold (after padding)."""
        _, c, h, w = self.images.shape
        return (c, self.pad_to or h, self.pad_to or w)

    def sample(
        self, n_tasks: int, generator: torch.Generator | None = None
    ) -> TaskBatch:
        """``n_tasks`` independent episodes, drawn from ``generator`` (a CPU generator; None: a
        fresh, unseeded one)."""
        check_positive_int("n_tasks", n_tasks)
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        ways, shots, k = self.ways, self.shots, self.shots + self.queries
        picks = torch.empty(n_tasks, ways, dtype=torch.int64)
        index = torch.empty(n_tasks, ways, k, dtype=torch.int64)
        for t in range(n_tasks):
            order = torch.randperm(len(self.members), generator=generator)[:ways]
            picks[t] = order
            for i, c in enumerate(order.tolist()):
                members = self.members[c]
                index[t, i] = members[_choose(len(members), k, generator)]
        support_index = index[:, :, :shots].reshape(n_tasks, -1)
        query_index = index[:, :, shots:].reshape(n_tasks, -1)
        label = torch.arange(ways, dtype=torch.int64)
        return TaskBatch(
            support_x=self._convert(support_index),
            support_y=label.repeat_interleave(shots).expand(n_tasks, -1).clone(),
            query_x=self._convert(query_index),
            query_y=label.repeat_interleave(self.queries).expand(n_tasks, -1).clone(),
            classes=self.classes[picks],
            support_index=support_index,
            query_index=query_index,
        )

    def _convert(self, index: torch.Tensor) -> torch.Tensor:
        t, n = index.shape
        x = self.images[index.flatten()]
        if self.pad_to is not None:
            x = _pad_to(x, self.pad_to)
        out = x.to(torch.float32)
        out = out.view(out.shape[0], out.shape[1], -1).mul_(self.scale).add_(self.bias)
        return out.view(t, n, *x.shape[1:])


def _choose(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct positions in ``range(n)``, uniformly at random."""
    if n <= 4 * k:
        return torch.randperm(n, generator=generator)[:k]
    # Few out of many (e.g. 16 of 6,000): redraw on collisions instead of permuting all n.
    while True:
        pos = torch.randint(0, n, (k,), generator=generator)
        if len(torch.unique(pos)) == k:
            return pos


def _affine(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x·scale + bias`` on uint8 values = ``(x/255 − mean)/std`` (as TensorLoader computes)."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    m = torch.tensor(list(mean) if mean is not None else [0.0], dtype=torch.float64)
    s = torch.tensor(list(std) if std is not None else [1.0], dtype=torch.float64)
    for what, v in (("mean", m), ("std", s)):
        if v.ndim != 1 or len(v) not in (1, channels):
            raise ValueError(f"{what} needs 1 or {channels} values, got {v.tolist()}")
    if not bool((s > 0).all()):
        raise ValueError(f"std must be positive, got {s.tolist()}")
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(1, -1, 1)
    bias = (-m / s).to(torch.float32).view(1, -1, 1)
    return scale, bias


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))
