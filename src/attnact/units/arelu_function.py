"""AReLU and ELSA as ``torch.autograd.Function``s that save one activation-sized tensor.

The composition of torch ops in :mod:`attnact.units.arelu` (the reference) lets autograd save
what each op needs: the input, the slope map and the sign mask — two float tensors and one bool
tensor per unit. These Functions save one tensor and rebuild the rest in backward:

* :class:`AReLUFunction` saves its output y. Both slopes are positive (C(α) ≥ 0.01, 1 + σ(β) > 1),
  so y has the sign of x and x = y / slope: the mask and the input come back from y, exactly as
  ReLU's backward uses its output. Like ReLU it can write y into x's storage (``inplace``).
* :class:`ELSAFunction` saves its input x (the wrapped activation A is arbitrary, so y does not
  determine x) and recomputes A(x) with a local autograd graph in backward.

Each saves the two scalar parameters as well (and the wrapped activation's own small
parameters), which are not activation-sized.

Gradients are those of the reference (Eqs. 9-11 of the AReLU paper): ∂/∂α = Σ_{x<0} g·x while α
lies in [0.01, 0.99] (the clamp passes gradient at both end points, as ``torch.clamp`` does) and 0
outside; ∂/∂β = Σ_{x≥0} g·x·σ(β)(1 − σ(β)); ∂/∂x the slope of x's branch. At x = 0 (±0) ∂/∂x is
σ(β) for both: R'(0) = 0 as torch's ReLU, plus L'(0) = σ(β), x = 0 being in Eq. (5)'s x ≥ 0
branch (:mod:`attnact.units.arelu`); AReLU tells x = 0 from y = +0, which only x = ±0 gives.
Backward is written in differentiable torch ops, so double backward works.

The element-wise work runs in :class:`~attnact.units.fused.FusedKernel`s: one forward kernel and
one backward kernel (with the two reductions) per unit, compiled on first use where
``torch.compile`` works and run eagerly otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from attnact.units.fused import FusedKernel, condition, masked, select

__all__ = ["ALPHA_RANGE", "AReLUFunction", "ELSAFunction"]

ALPHA_RANGE = (0.01, 0.99)  # C(·) of Eq. (3): the clamp applied to α
_LO, _HI = ALPHA_RANGE


def _sign_bit_set(y: torch.Tensor) -> torch.Tensor:
    """``torch.signbit(y)`` (for non-NaN y), in a form inductor vectorises on CPU.

    Compiled, ``signbit`` becomes a scalar loop, several times slower than ReLU's backward
    (benchmarks/unit-kernels-notes.md). ``y < 0`` alone misses −0, which
    ``1 / y < 0`` catches (1 / −0 = −inf); ``1 / y`` in turn misses −inf (1 / −inf = −0). The
    division costs nothing next to the memory traffic once fused. Eagerly, ``signbit`` is one
    pass where this would be four.
    """
    if torch.compiler.is_compiling():
        return (y < 0) | (torch.reciprocal(y) < 0)
    return torch.signbit(y)


def _inside(alpha: torch.Tensor) -> torch.Tensor:
    """Where the clamp passes gradient: ``torch.clamp``'s backward keeps both end points."""
    return (alpha >= _LO) & (alpha <= _HI)


# --- kernels (plain torch; compiled by FusedKernel where possible) ----------------------------


def _arelu_forward(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, inplace: bool
) -> torch.Tensor:
    neg = alpha.clamp(_LO, _HI).to(x.dtype)
    pos = (1.0 + torch.sigmoid(beta)).to(x.dtype)
    # |x|·(−C(α)) equals C(α)·x bit for bit below zero and keeps the sign bit even when the
    # product underflows to −0; |x|·(1 + σ(β)) turns an input −0 into +0. So the sign bit of y
    # tells the branch exactly, including at x = ±0 and for subnormal x (see _arelu_backward).
    slope = select(x < 0, -neg, pos)
    out = x.abs_() if inplace else x.abs()
    return out.mul_(slope)


def _arelu_backward(
    grad: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sig = torch.sigmoid(beta)
    neg = alpha.clamp(_LO, _HI).to(y.dtype)
    pos = (1.0 + sig).to(y.dtype)
    below = condition(_sign_bit_set(y), y.dtype)  # x < 0, recovered from y (_arelu_forward)
    # Eq. (11) with C(α); at x = ±0 (y = +0, nothing else maps there) R'(0) + σ(β) = σ(β).
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        grad_x = grad * select(below, neg, select(y == 0, sig.to(y.dtype), pos))
    else:
        # Eagerly each selection is a pass over memory, and exact zeros are rare after a conv or
        # BN: one comparison, and the correction only where zeros exist.
        grad_x = grad * select(below, neg, pos)
        zero = y == 0
        if zero.any():
            zero &= ~torch.signbit(y)  # −0 is an underflowed negative x: the x < 0 branch
            grad_x = torch.where(zero, grad * sig.to(y.dtype), grad_x)
    gy = grad * y
    # y = C(α)·x below zero and (1 + σ(β))·x above, so Σ g·x = Σ g·y / slope: one division per
    # parameter instead of recovering x element by element.
    gy_neg = masked(below, gy)
    s_neg = gy_neg.sum_to_size(alpha.shape)
    s_pos = (gy - gy_neg).sum_to_size(beta.shape)
    grad_alpha = torch.where(  # Eq. (9)
        _inside(alpha), s_neg.to(alpha.dtype) / neg.to(alpha.dtype), 0.0
    )
    grad_beta = s_pos.to(beta.dtype) / pos.to(beta.dtype) * (sig * (1.0 - sig))  # Eq. (10)
    return grad_x, grad_alpha, grad_beta


def _elsa_forward(
    a: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """A(x) + L(x, α, β), L of Eq. (5); ``inplace`` writes the result into x."""
    neg = alpha.clamp(_LO, _HI).to(x.dtype)
    pos = torch.sigmoid(beta).to(x.dtype)
    slope = select(x >= 0, pos, neg)
    out = x.mul_(slope) if inplace else x * slope
    return out.add_(a)


def _elsa_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    grad_a: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of A(x) + L(x, α, β) given ``grad_a`` = (∂A/∂x)ᵀ·grad (None: not needed)."""
    sig = torch.sigmoid(beta)
    above = condition(x >= 0, x.dtype)
    grad_x = grad * select(above, sig.to(x.dtype), alpha.clamp(_LO, _HI).to(x.dtype))
    if grad_a is not None:
        grad_x = grad_x + grad_a
    gx = grad * x
    gx_pos = masked(above, gx)
    s_neg = (gx - gx_pos).sum_to_size(alpha.shape)
    s_pos = gx_pos.sum_to_size(beta.shape)
    grad_alpha = torch.where(_inside(alpha), s_neg.to(alpha.dtype), 0.0)
    grad_beta = s_pos.to(beta.dtype) * (sig * (1.0 - sig))
    return grad_x, grad_alpha, grad_beta


ARELU_FORWARD = FusedKernel(_arelu_forward)
ARELU_BACKWARD = FusedKernel(_arelu_backward)
ELSA_FORWARD = FusedKernel(_elsa_forward)
ELSA_BACKWARD = FusedKernel(_elsa_backward)


# --- Functions --------------------------------------------------------------------------------


class AReLUFunction(torch.autograd.Function):
    """F(x, α, β) of Eq. (7), saving only its output (and α, β).

    ``AReLUFunction.apply(x, alpha, beta, inplace=False)``; ``alpha`` and ``beta`` are the raw
    parameters, of any shape that broadcasts to x's shape without enlarging it. With
    ``inplace=True`` y is written into x (autograd then refuses a leaf x that requires grad, as
    for ``nn.ReLU(inplace=True)``).
    """

    generate_vmap_rule = True  # out of place, under torch.func.vmap; the kernels then run eagerly

    @staticmethod
    def forward(
        x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, inplace: bool = False
    ) -> torch.Tensor:
        return cast(torch.Tensor, ARELU_FORWARD(x, alpha, beta, bool(inplace)))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, alpha, beta = inputs[:3]
        if len(inputs) > 3 and inputs[3]:
            ctx.mark_dirty(x)
        ctx.save_for_backward(output, alpha, beta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, alpha, beta = ctx.saved_tensors
        grad_x, grad_alpha, grad_beta = ARELU_BACKWARD(grad, y, alpha, beta)
        need = ctx.needs_input_grad
        return (
            grad_x if need[0] else None,
            grad_alpha if need[1] else None,
            grad_beta if need[2] else None,
            None,
        )


def _call_activation(
    activation: nn.Module,
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    if not names:
        return cast(torch.Tensor, activation(x))
    return cast(torch.Tensor, torch.func.functional_call(
        activation, dict(zip(names, tensors, strict=True)), (x,)))


class ELSAFunction(torch.autograd.Function):
    """A(x) + L(x, α, β) (AReLU paper, Sec. 4.6), saving only its input x (and α, β, and A's
    own parameters and buffers); backward recomputes A(x) with a local autograd graph.

    ``ELSAFunction.apply(x, alpha, beta, activation, names, *tensors)``: ``names`` and
    ``tensors`` are the parameters and buffers the activation holds at this call
    (``named_parameters()`` then ``named_buffers()``; forward calls the module as it is). They
    are passed in so that their gradients flow, and so that backward recomputes with the tensors
    forward used even when ``torch.func.functional_call`` swapped them only for the forward.

    A must be a deterministic function of x and those tensors that changes no state:
    recomputing BatchNorm in training mode would update its running statistics twice, and a
    random unit (RReLU, dropout) would draw new noise. :func:`~attnact.units.arelu.elsa` checks
    this and uses the reference composition otherwise.
    """

    @staticmethod
    def forward(
        x: torch.Tensor,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        activation: nn.Module,
        names: Sequence[str],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        a = activation(x)  # in forward the module holds ``tensors`` already
        return cast(torch.Tensor, ELSA_FORWARD(a, x, alpha, beta, False))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, alpha, beta, activation, names, *tensors = inputs
        ctx.activation = activation
        ctx.names = tuple(names)
        ctx.save_for_backward(x, alpha, beta, *tensors)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, alpha, beta, *tensors = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_x, need_t = need[0], need[5:]  # as long as tensors, by construction
        grad_a: torch.Tensor | None = None
        grad_t: list[torch.Tensor | None] = [None] * len(tensors)
        if need_x or any(need_t):
            create_graph = torch.is_grad_enabled()  # backward(create_graph=True)
            with torch.enable_grad():
                if create_graph:  # keep the recomputation connected to the outer graph
                    x_in, t_in = x, list(tensors)
                else:
                    x_in = x.detach().requires_grad_(need_x)
                    t_in = [t.detach().requires_grad_(need_t[i]) for i, t in enumerate(tensors)]
                a = _call_activation(ctx.activation, ctx.names, t_in, x_in)
                wrt = [x_in] if need_x else []
                wrt += [t for i, t in enumerate(t_in) if need_t[i]]
                if a.requires_grad:
                    got: list[torch.Tensor | None] = list(
                        torch.autograd.grad(
                            a, wrt, grad, allow_unused=True, create_graph=create_graph
                        )
                    )
                else:  # A ignores everything that needs a gradient
                    got = [None] * len(wrt)
            if need_x:
                grad_a = got.pop(0)
            for i, n in enumerate(need_t):
                if n:
                    grad_t[i] = got.pop(0)
        grad_x, grad_alpha, grad_beta = ELSA_BACKWARD(grad, x, alpha, beta, grad_a)
        return (
            grad_x if need_x else None,
            grad_alpha if need[1] else None,
            grad_beta if need[2] else None,
            None,
            None,
            *grad_t,
        )
