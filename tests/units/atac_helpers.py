"""Helpers shared by the ATAC path tests (test_atac_paths.py, test_atac_native.py).

Importable by name because tests/units/conftest.py puts this directory on ``sys.path`` (the
suite runs in importlib mode, without packages).
"""

from __future__ import annotations

import torch
from torch import nn


def run_unit(m: nn.Module, x0: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output and gradients w.r.t. the input and every parameter, through a fresh leaf."""
    leaf = x0.clone(memory_format=torch.preserve_format).requires_grad_()
    y = m(leaf)
    named = sorted(m.named_parameters())
    grads = torch.autograd.grad(y, [leaf, *(p for _, p in named)], g)
    out = {"y": y.detach(), "x": grads[0]}
    out.update((n, t) for (n, _), t in zip(named, grads[1:], strict=True))
    return out


def assert_close(
    got: torch.Tensor, want: torch.Tensor, *, rtol: float, floor: float, name: str = ""
) -> None:
    """``torch.testing.assert_close`` with an absolute tolerance of ``floor`` times the largest
    magnitude of ``want`` (a gradient's small entries carry the rounding of its large ones)."""
    atol = floor * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
