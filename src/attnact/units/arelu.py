"""AReLU and ELSA of Chen et al., "AReLU: Attention-based Rectified Linear Unit" (2020).

ELSA, the element-wise sign-based attention, scales each element by a factor chosen by its sign:

    L(x, α, β) = C(α)·x  for x < 0,   σ(β)·x  for x ≥ 0         Eq. (5)

with C clamping to [0.01, 0.99] and σ the sigmoid; α and β are two learnable scalars per layer.
AReLU adds it to ReLU:

    F(x, α, β) = R(x) + L(x, α, β) = C(α)·x  for x < 0,   (1 + σ(β))·x  for x ≥ 0      Eq. (7)

Gradients (Sec. 3.4): ∂F/∂α = Σ_{x<0} x while 0.01 ≤ α ≤ 0.99 and 0 outside (the clamp detaches
it), ∂F/∂β = Σ_{x≥0} σ(β)(1−σ(β))·x, ∂F/∂x = C(α) for x < 0 and 1 + σ(β) for x ≥ 0 (Eq. (11)
prints α where C(α) is meant). Autograd of the composition below gives exactly these.

ELSA as a plug-in (Sec. 4.6): F(x) = A(x) + L(x, α, β) for any activation A. The authors'
published ELSA code multiplies by the raw α and β; we follow the paper (C(α), σ(β)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnact.units.registry import (
    _REGISTRY,
    create_act_layer,
    list_activations,
    register_activation,
)

__all__ = ["ALPHA_RANGE", "ELSA", "AReLU", "arelu", "elsa_gate", "register_elsa_variants"]

ALPHA_RANGE = (0.01, 0.99)  # C(·) of Eq. (3): the clamp applied to α


def elsa_gate(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """L(x, α, β) of Eq. (5): C(α)·x where x < 0, σ(β)·x where x ≥ 0."""
    neg = alpha.clamp(*ALPHA_RANGE).to(x.dtype)
    pos = torch.sigmoid(beta).to(x.dtype)
    return x * torch.where(x >= 0, pos, neg)


def arelu(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """F(x, α, β) of Eq. (7) as one multiply by a sign-selected slope (the reference composition).

    Equal to ``relu(x) + elsa_gate(x, alpha, beta)``; folding R into the positive slope saves a
    pass over memory.
    """
    neg = alpha.clamp(*ALPHA_RANGE).to(x.dtype)
    pos = (1.0 + torch.sigmoid(beta)).to(x.dtype)
    return x * torch.where(x >= 0, pos, neg)


def _check_scalar(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


@register_activation(
    "arelu",
    formula="C(a) x if x < 0 else (1 + sigmoid(b)) x, C clamps to [0.01, 0.99]",
    source="Chen, Li & Xu, arXiv 2020 (AReLU, Eq. 7)",
    learnable=True,
)
class AReLU(nn.Module):
    """Attention-based ReLU, Eq. (7) of the AReLU paper: ReLU plus ELSA.

    Args:
        alpha: initial α (raw; the forward uses C(α), clamped to [0.01, 0.99]). Paper: 0.9.
        beta: initial β (raw; the forward uses 1 + σ(β)). Paper: 2.0.
        inplace: accepted for ``act_layer=`` compatibility; ignored.

    Parameters ``alpha`` and ``beta`` (shape (1,), as in the authors' checkpoints) hold the raw,
    unconstrained values. Works on inputs of any shape.
    """

    def __init__(self, alpha: float = 0.9, beta: float = 2.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([_check_scalar("alpha", alpha)]))
        self.beta = nn.Parameter(torch.tensor([_check_scalar("beta", beta)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return arelu(x, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}, beta={self.beta.item():.4g}"


class ELSA(nn.Module):
    """ELSA as a plug-in for any activation (Sec. 4.6): F(x) = A(x) + L(x, α, β).

    Args:
        activation: a registered name, an activation class, or a module instance to wrap.
        alpha, beta: initial raw values of ELSA's two parameters (paper: 0.9 and 2.0).
        channels: channel count, passed on to activations that need it (e.g. ``"atac"``).
        inplace: accepted for ``act_layer=`` compatibility; ignored.
        **act_kwargs: forwarded to the activation's constructor.

    ``ELSA("relu")`` computes exactly AReLU. For an activation that changes the channel count
    (Maxout), each output equals one selected input element, so L is applied to that selected
    element: F(x) = A(x) + L(A(x)).
    """

    def __init__(
        self,
        activation: str | type[nn.Module] | nn.Module = "relu",
        alpha: float = 0.9,
        beta: float = 2.0,
        channels: int | None = None,
        inplace: bool = False,
        **act_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(activation, nn.Module):
            if act_kwargs:
                raise ValueError("activation keyword arguments need a name or class, not a module")
            self.activation = activation
        else:
            self.activation = create_act_layer(activation, channels=channels, **act_kwargs)
        self.alpha = nn.Parameter(torch.tensor([_check_scalar("alpha", alpha)]))
        self.beta = nn.Parameter(torch.tensor([_check_scalar("beta", beta)]))
        out_channels = getattr(self.activation, "out_channels", None)
        self._gate_after = callable(out_channels)  # channel-changing units such as Maxout
        if self._gate_after:
            # Hosts widen the layer before a channel-changing unit by its pool size (ActPlan);
            # ELSA changes the channels exactly as the unit it wraps, so it says the same.
            self.out_channels = out_channels
            self.pool_size = getattr(self.activation, "pool_size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(x)
        return y + elsa_gate(y if self._gate_after else x, self.alpha, self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}, beta={self.beta.item():.4g}"


def _elsa_factory(base: str) -> Callable[..., nn.Module]:
    def build(channels: int | None = None, **kwargs: Any) -> ELSA:
        return ELSA(base, channels=channels, **kwargs)

    build.__name__ = f"elsa_{base}"
    build.__doc__ = f"ELSA plugged into {base!r}: {base}(x) + L(x, alpha, beta) (AReLU Sec. 4.6)."
    return build


def register_elsa_variants() -> None:
    """Register ``elsa_<name>`` for every registered unit except AReLU (which is ``elsa_relu``'s
    own closed form) and existing ELSA variants. Idempotent."""
    for name in list_activations(include_elsa=False):
        if name == "arelu" or f"elsa_{name}" in _REGISTRY:
            continue
        base = _REGISTRY[name]
        register_activation(
            f"elsa_{name}",
            formula=f"{name}(x) + (C(a) x if x < 0 else sigmoid(b) x)",
            source="Chen et al., arXiv 2020 (AReLU, Sec. 4.6) over " + base.source,
            needs_channels=base.needs_channels,
            learnable=True,
            changes_channels=base.changes_channels,
            elementwise=base.elementwise,
        )(_elsa_factory(name))
