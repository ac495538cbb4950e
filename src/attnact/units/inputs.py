"""Input checks shared by the units: what every unit refuses before it computes anything.

Integer and bool tensors are refused because the units' formulas need real arithmetic: AReLU's
slopes C(α) and 1 + σ(β) are fractions, so an integer result would be truncated (AReLU of
[3, −3] would read [3, 0] instead of [5.64, −2.7]), and the learned parameters could never
receive a gradient through an integer tensor.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_float_input"]


def check_float_input(x: Any, unit: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a floating-point tensor (or not a tensor at all:
    ``torch.fx`` proxies and other tracing objects pass, their dtype is not known yet)."""
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        raise TypeError(
            f"{unit} needs a floating-point input (float16, bfloat16, float32 or float64), got "
            f"a tensor of dtype {x.dtype}; convert it first, e.g. x.float()"
        )
