"""Small element-wise kernels compiled lazily with ``torch.compile``, with an eager fallback.

Why: on element-wise units, passes over memory — not FLOPs — set the time (DESIGN.md,
Performance: how to measure — "memory passes, not FLOPs, set the time, and fusion is what
pays"). Written as eager torch ops inside an autograd Function, a unit costs one pass per op;
the same Function calling one compiled forward kernel and one compiled backward kernel (with its
reductions) makes one pass each way. So each kernel here is a plain torch function that is
correct when run eagerly and is handed to ``torch.compile`` on first use (the measurements
behind this are in ``benchmarks/unit-kernels-notes.md``).

When the compiled kernel is not used (the function simply runs eagerly):

* ``ATTNACT_NO_COMPILE=1`` in the environment, or :func:`set_fused` ``(False)``;
* compilation is unavailable: dynamo does not support this Python, or on CPU no C++ compiler is
  on ``PATH`` (inductor generates C++; with none it fails on every call);
* compilation failed once for this kernel on this device type (a warning names the error, then
  the kernel stays eager for that device type);
* the call happens where a nested compiled call would not help or not work: inside an outer
  ``torch.compile`` (which fuses the whole graph itself), under ``torch.func`` transforms, or
  while a ``TorchDispatchMode`` (e.g. ``FlopCounterMode``) is active;
* grad mode is on (a backward with ``create_graph=True``): the eager ops then record the graph
  that double backward needs.

Compiling costs seconds, once per process (mostly starting inductor and the C++ compiler; less
with inductor's on-disk cache warm), about a second for each further kernel, and one recompile
with dynamic sizes for the first call with a new shape, which then serves every later shape.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = [
    "FusedKernel",
    "condition",
    "fused_enabled",
    "fused_mode",
    "fused_status",
    "masked",
    "select",
    "set_fused",
]

ENV_NO_COMPILE = "ATTNACT_NO_COMPILE"

_forced: bool | None = None  # set_fused(); None: follow the environment variable
_KERNELS: list[FusedKernel] = []


def set_fused(enabled: bool | None) -> None:
    """Turn the compiled kernels of AReLU and ELSA on (``True``) or off (``False``).

    ``None`` restores the default: on, unless the environment variable ``ATTNACT_NO_COMPILE`` is
    set to a non-empty value other than ``0``. Off, the same autograd Functions run their
    kernels as eager torch ops (same results, more passes over memory).
    """
    global _forced
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    _forced = enabled


@contextlib.contextmanager
def fused_mode(enabled: bool) -> Iterator[None]:
    """``with fused_mode(False): ...`` — :func:`set_fused` for a block only, restored after."""
    global _forced
    before = _forced
    set_fused(enabled)
    try:
        yield
    finally:
        _forced = before


def fused_enabled() -> bool:
    """Whether the kernels are asked to compile (the switch, not whether compiling works)."""
    if _forced is not None:
        return _forced
    return os.environ.get(ENV_NO_COMPILE, "") in ("", "0")


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _compile_unavailable(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot work for this device type here, or None if it may."""
    try:
        import torch._dynamo as dynamo

        # torch._dynamo imports is_dynamo_supported without re-exporting it (stubs only)
        if not dynamo.is_dynamo_supported():  # type: ignore[attr-defined]
            return f"torch.compile does not support Python {sys.version.split()[0]}"
    except Exception as exc:  # a broken or partial torch install: stay eager, say why
        return f"torch._dynamo does not import ({type(exc).__name__}: {exc})"
    if device_type == "cpu" and sys.platform != "win32" and _cxx_compiler() is None:
        return "inductor needs a C++ compiler for CPU kernels and none is on PATH"
    return None


def _nested_call_unsafe() -> bool:
    """True where a call into a separately compiled function must not happen."""
    if torch.compiler.is_compiling():
        return True
    if torch._C._are_functorch_transforms_active():
        return True
    return torch._C._len_torch_dispatch_stack() > 0


# --- element-wise selection that is fast both compiled and eager ------------------------------
# Eager ``torch.where`` on CPU is a non-vectorised kernel, several times slower than a multiply
# (DESIGN.md, Performance: how to measure); compiled, it is the fastest form, faster than the
# arithmetic forms below. So the kernels pick the form by context
# (benchmarks/unit-kernels-notes.md).


def condition(cond: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``cond`` in the form :func:`select` and :func:`masked` use: bool when compiling, 0/1 of
    ``dtype`` eagerly. Convert once where one condition serves several selections (a pass over
    memory each time eagerly)."""
    return cond if torch.compiler.is_compiling() else cond.to(dtype)


def select(mask: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, if_true, if_false)`` for a bool (or :func:`condition`) ``mask`` and
    finite operands.

    Eagerly ``lerp(if_false, if_true, mask)``, which is exact at weights 0 and 1 (torch computes
    ``start + w·(end − start)`` for w < 0.5 and ``end − (end − start)·(1 − w)`` otherwise), so
    the result is bit-equal to ``where``'s.
    """
    if torch.compiler.is_compiling():
        return torch.where(mask, if_true, if_false)
    return torch.lerp(if_false, if_true, mask.to(if_true.dtype))


def masked(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` where ``mask`` (bool, or :func:`condition`), else 0 (eagerly ``t · mask``: equal
    unless t holds inf or NaN where the mask is False, which then turn into NaN)."""
    if torch.compiler.is_compiling():
        return torch.where(mask, t, 0.0)
    return t * mask.to(t.dtype)


RECOMPILE_LIMIT = 64


def _with_recompile_limit(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with dynamo's per-function recompile limit raised to RECOMPILE_LIMIT.

    Set and restored by hand: ``torch._dynamo.config.patch`` costs ~50 µs per call, which over
    AReLU's 19 sites of a ResNet-20 step (two kernel calls each) came to about 1% of the step.
    """
    config = torch._dynamo.config
    old = config.recompile_limit
    if old >= RECOMPILE_LIMIT:
        return fn(*args)
    config.recompile_limit = RECOMPILE_LIMIT
    try:
        return fn(*args)
    finally:
        config.recompile_limit = old


class FusedKernel:
    """``fn`` run through ``torch.compile`` when possible, else eagerly (same results).

    ``fn`` must be a pure function of its tensor arguments except for in-place updates it makes
    explicitly; it may take Python flags, which become guards of the compiled code.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: Callable[..., Any] | None = None
        self.unavailable: dict[str, str] = {}  # device type -> why this kernel stays eager
        self._available: set[str] = set()  # device types found able to compile
        _KERNELS.append(self)

    def _use_compiled(self, device_type: str) -> bool:
        if not fused_enabled() or torch.is_grad_enabled() or _nested_call_unsafe():
            return False
        if device_type in self.unavailable:
            return False
        if device_type not in self._available:  # the environment check costs ~30 µs: once
            reason = _compile_unavailable(device_type)
            if reason is not None:
                self.unavailable[device_type] = reason
                return False
            self._available.add(device_type)
        return True

    def __call__(self, x: torch.Tensor, *args: Any) -> Any:
        device_type = x.device.type
        if not self._use_compiled(device_type):
            return self.fn(x, *args)
        if self._compiled is None:
            # dynamic=None: the first shape compiles static; a second shape recompiles once
            # with dynamic sizes, which then serves every later shape.
            self._compiled = torch.compile(self.fn, fullgraph=True, dynamic=True)
        try:
            # One kernel meets several ranks, layouts, flags and requires_grad states in one
            # network (each a guard); dynamo's default limit of 8 variants per function would
            # turn it eager half-way through the first step. The patch applies to our kernels
            # only, for the duration of the call.
            return _with_recompile_limit(self._compiled, x, *args)
        except Exception as exc:
            # Run eagerly first: bad inputs raise their own error here and do not switch the
            # kernel off; otherwise compiling failed, and the kernel stays eager on this device.
            out = self.fn(x, *args)
            self.unavailable[device_type] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            warnings.warn(
                f"attnact: torch.compile of the {self.__name__} kernel failed on {device_type} "
                f"({self.unavailable[device_type]}); running it eagerly from now on "
                f"(set {ENV_NO_COMPILE}=1 to skip compiling)",
                RuntimeWarning,
                stacklevel=2,
            )
            return out

    def reset(self) -> None:
        """Forget compiled code and failures (tests; after installing a compiler)."""
        self._compiled = None
        self.unavailable.clear()
        self._available.clear()


def fused_status() -> dict[str, Any]:
    """What the kernels will do: the switch, the C++ compiler found, and per kernel the device
    types on which it runs eagerly and why."""
    return {
        "enabled": fused_enabled(),
        "cxx_compiler": _cxx_compiler(),
        "eager": {k.__name__: dict(k.unavailable) for k in _KERNELS if k.unavailable},
    }
