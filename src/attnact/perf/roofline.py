r"""The memory roofline of a training step: the machine's bandwidth, and the bytes a step moves.

On these units passes over memory, not FLOPs, set the time (DESIGN.md, Performance: how to
measure), so the floor of a unit's cost is the bytes it reads and writes divided by the bandwidth
the machine sustains.

* :func:`measure_bandwidth` times streaming kernels (copy: read + write; add: two reads and a
  write; sum: a read) over buffers of a given size with the threads torch uses and reports the
  best of them in bytes per second: a buffer of a few MiB measures the caches (an activation of
  ResNet-20's first stage, 8 MiB, lives in this machine's 32 MiB L3), a large one the DRAM.
* :func:`traffic` counts the bytes a call moves: every operator that reaches the dispatcher
  reads its distinct input tensors and writes its outputs once (one pass each, no reuse between
  operators: the model a roofline uses); views move nothing. Compiled
  :class:`~attnact.units.fused.FusedKernel` calls count as one operator over their arguments and
  results, as they run when compiled; attnact's native operators declare their own passes
  (:data:`attnact.units.native.TRAFFIC`), since they read some inputs more than once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

__all__ = ["measure_bandwidth", "traffic"]


def measure_bandwidth(nbytes: int = 256 * 2**20, *, repeats: int = 15) -> dict[str, float]:
    """Bytes per second of copy, add and sum over float32 buffers of ``nbytes`` each (median of
    ``repeats`` after a warm-up), and ``"best"``, the largest of the three."""
    if nbytes < 4096:
        raise ValueError(f"nbytes must be at least 4096, got {nbytes}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n = nbytes // 4
    a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
    kernels: dict[str, tuple[Callable[[], object], int]] = {
        "copy": (lambda: c.copy_(a), 2),
        "add": (lambda: torch.add(a, b, out=c), 3),
        "sum": (lambda: a.sum(), 1),
    }
    out: dict[str, float] = {}
    for name, (fn, passes) in kernels.items():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = passes * n * 4 / statistics.median(times)
    out["best"] = max(out.values())
    return out


def _storages(values: Any) -> dict[int, int]:
    found: dict[int, int] = {}
    for t in tree_leaves(values):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            # the bytes the view spans, not the whole storage (a slice reads only itself)
            found[t.untyped_storage().data_ptr() + int(t.storage_offset()) * t.element_size()] = (
                t.numel() * t.element_size()
            )
    return found


def _base(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Traffic(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # TorchDispatchMode's is unannotated
        self.bytes = 0
        self.ops: dict[str, int] = {}

    def add(self, name: str, nbytes: int) -> None:
        self.bytes += nbytes
        self.ops[name] = self.ops.get(name, 0) + nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        from attnact.units import native

        declared = native.TRAFFIC.get(name)
        if declared is not None:
            self.add(name, declared(args, out))
            return out
        read = _storages((args, kwargs))
        written = _storages(out)
        schema = getattr(func, "_schema", None)
        if schema is None or not schema.is_mutable:
            # an output sharing an input's storage is a view (permute, _unsafe_view, detach):
            # it moves no data, and an operator returning only views reads nothing either
            inputs = {_base(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if outs and all(_base(t) in inputs for t in outs):
                return out
        self.add(name, sum(read.values()) + sum(written.values()))
        return out


@contextmanager
def _fused_kernels_as_one_op(mode: _Traffic) -> Iterator[None]:
    from attnact.units.fused import FusedKernel

    original = FusedKernel.__call__

    def call(self: FusedKernel, *args: Any) -> Any:
        with _disable_current_modes():
            out = original(self, *args)
        mode.add(f"fused.{self.__name__}",
                 sum(_storages(args).values()) + sum(_storages(out).values()))
        return out

    FusedKernel.__call__ = call  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        FusedKernel.__call__ = original  # type: ignore[method-assign]


def traffic(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """(total bytes, bytes per operator name) that ``fn()`` moves (module docstring); ``fn``'s
    backward counts too when it calls ``backward()``."""
    mode = _Traffic()
    with _fused_kernels_as_one_op(mode), mode:
        fn()
    return mode.bytes, dict(sorted(mode.ops.items(), key=lambda kv: -kv[1]))
