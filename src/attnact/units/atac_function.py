"""ATAC (Eq. 4-5 of the ATAC paper) as one ``torch.autograd.Function`` with a hand-written
backward: a fast path and a memory-efficient path that recomputes the gate.

    z₁ = W₁x,  a = δ(γ₁·n(z₁) + β₁),  z₂ = W₂a,  s = σ(γ₂·n(z₂) + β₂),  y = s ⊙ x

with n the BatchNorm normalisation (batch statistics in training, running ones in eval).

What autograd saves for the reference composition (:meth:`attnact.units.atac.ATAC.gate`, plain
``torch.nn`` modules): x (conv1, mul), z₁ (bn1), a (relu, conv2), z₂ (bn2) and s (sigmoid, mul) —
four activation-sized tensors per unit at r = 2, where a ReLU saves one. This Function saves

* fast path (``recompute=False``): x, z₁ and z₂ (2.5 activation-sized tensors at r = 2). s is
  rebuilt inside the backward kernel that reads z₂ anyway, a by one pass over z₁ (C/r channels);
* memory-efficient path (``recompute=True``): x only. Backward recomputes z₁ = W₁x, a and z₂ =
  W₂a with the per-channel statistics saved by forward, so BatchNorm's running statistics are
  updated once, in forward, and the gate is recomputed by the same operations on the same values.

Either way the Function also saves the two weights and, per BatchNorm, four per-channel
vectors (mean, 1/std, and the folded scale γ/std and shift β − mean·γ/std).

Why a Function and not ``torch.utils.checkpoint(use_reentrant=False)`` around the reference: the
checkpoint re-runs the modules, so BatchNorm in training mode would update running_mean,
running_var and num_batches_tracked a second time in backward; the recomputation would also save
the reference's full set of tensors during backward and run its unfused passes a second time.

Speed (on these units memory passes set the time, DESIGN.md):

* the two point-wise convolutions are matrix products over the channel dimension — one GEMM on
  the (N·H·W, C) view of a channels_last input, a batched GEMM on the (N, C, H·W) view of an NCHW
  one — so no layout reorder happens around them;
* BatchNorm becomes a per-channel scale and shift (statistics from
  ``torch.batch_norm_update_stats``, the same native kernel ``nn.BatchNorm2d`` uses, which also
  updates the running statistics), fused with δ into one kernel, and with σ and the product with x
  into another: two element-wise kernels where the reference runs five (BN₁, δ, BN₂, σ, product);
* backward is three element-wise kernels — a again from z₁, then gate + BN₂ and δ + BN₁ with
  their per-channel reductions — and four GEMMs, the last one adding W₁ᵀ·∂L/∂z₁ into the buffer
  that holds g ⊙ s (β = 1), so ∂L/∂x takes no separate addition.

The element-wise kernels are :class:`~attnact.units.fused.FusedKernel`s: compiled lazily where
``torch.compile`` works, eager otherwise. Backward is ``once_differentiable``: the batch
statistics are constants here, so a second derivative would be wrong; use
``implementation="reference"`` for double backward.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from attnact.units.fused import FusedKernel

__all__ = ["ATACFunction", "BNConfig"]


class BNConfig(NamedTuple):
    """How one BatchNorm of the unit acts in this call (decided as ``nn.BatchNorm2d`` decides).

    ``batch_stats``: normalise with the batch's statistics (training, or no running statistics);
    otherwise with ``running_mean``/``running_var``. ``momentum``: the exponential average factor
    for the running-statistics update (already 1/num_batches_tracked when momentum is None).
    """

    batch_stats: bool
    momentum: float
    eps: float


# --- kernels (plain torch; compiled by FusedKernel where possible) ----------------------------
# Every tensor here has its channels on dim 1: (M, C) for channels_last inputs (M = N·H·W), or
# (N, C, H·W) for NCHW ones. Per-channel vectors broadcast along dim 1.


def _pc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (like.dim() - 2)))


def _dims(t: torch.Tensor) -> list[int]:
    return [0, *range(2, t.dim())]


def _affine_act(
    z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, use_relu: bool, inplace: bool
) -> torch.Tensor:
    """a = δ(z·scale + shift): BN₁ (folded) and the ReLU in one pass."""
    h = z.mul_(_pc(scale, z)) if inplace else z * _pc(scale, z)
    h = h.add_(_pc(shift, z))
    return h.relu_() if use_relu else h


def _gate_mul(
    x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """y = σ(z·scale + shift) ⊙ x: BN₂ (folded), the sigmoid and Eq. (5) in one pass; ``inplace``
    writes y into z."""
    h = z.mul_(_pc(scale, z)) if inplace else z * _pc(scale, z)
    return h.add_(_pc(shift, z)).sigmoid_().mul_(x)


def _bn_input_grad(
    gh: torch.Tensor,
    z: torch.Tensor,
    scale: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    batch_stats: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Given gh = ∂L/∂(BN output): (∂L/∂z, ∂L/∂γ, ∂L/∂β) of h = γ·(z − mean)·rstd + β."""
    dims = _dims(z)
    n = (z - _pc(mean, z)) * _pc(rstd, z)
    grad_beta = gh.sum(dims)
    grad_gamma = (gh * n).sum(dims)
    if batch_stats:
        # mean and variance depend on z: subtract the projections onto 1 and onto n
        m = z.numel() // z.shape[1]
        gh = gh - _pc(grad_beta / m, z) - n * _pc(grad_gamma / m, z)
    return gh * _pc(scale, z), grad_gamma, grad_beta


def _gate_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    z2: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    batch_stats: bool,
    need_x: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g⊙s, ∂L/∂z₂, ∂L/∂γ₂, ∂L/∂β₂) for y = s ⊙ x, s = σ(BN₂(z₂)); s is rebuilt from z₂."""
    s = torch.sigmoid(z2 * _pc(scale, z2) + _pc(shift, z2))
    grad_x = grad * s if need_x else None
    gh = grad * x * (s * (1.0 - s))
    grad_z, grad_gamma, grad_beta = _bn_input_grad(gh, z2, scale, mean, rstd, batch_stats)
    return grad_x, grad_z, grad_gamma, grad_beta


def _act_backward(
    grad_a: torch.Tensor,
    a: torch.Tensor,
    z1: torch.Tensor,
    scale: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    batch_stats: bool,
    use_relu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂L/∂z₁, ∂L/∂γ₁, ∂L/∂β₁) for a = δ(BN₁(z₁)); δ's mask from a > 0, as ReLU's backward."""
    gh = torch.where(a > 0, grad_a, 0.0) if use_relu else grad_a
    return _bn_input_grad(gh, z1, scale, mean, rstd, batch_stats)


AFFINE_ACT = FusedKernel(_affine_act)
GATE_MUL = FusedKernel(_gate_mul)
GATE_BACKWARD = FusedKernel(_gate_backward)
ACT_BACKWARD = FusedKernel(_act_backward)
KERNELS = (AFFINE_ACT, GATE_MUL, GATE_BACKWARD, ACT_BACKWARD)


# --- point-wise convolutions as matrix products -----------------------------------------------


def _flat(t4: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(M, C) rows of positions for channels_last, (N, C, H·W) for NCHW; a view when ``t4`` is
    contiguous in that format (a copy otherwise, e.g. an incoming gradient of other strides)."""
    if channels_last:
        return t4.permute(0, 2, 3, 1).reshape(-1, t4.shape[1])
    return t4.reshape(t4.shape[0], t4.shape[1], -1)


def _unflat(t: torch.Tensor, channels_last: bool, n: int, h: int, w: int) -> torch.Tensor:
    c = t.shape[1]
    if channels_last:
        return t.view(n, h, w, c).permute(0, 3, 1, 2)
    return t.view(n, c, h, w)


def _pw(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The 1×1 convolution with weight ``w`` (C_out, C_in) of a flat tensor."""
    return t @ w.t() if t.dim() == 2 else w @ t


def _pw_weight_grad(grad: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∂L/∂w (C_out, C_in) of ``_pw(w, t)`` given ∂L/∂output ``grad``."""
    if grad.dim() == 2:
        return grad.t() @ t
    return (grad @ t.transpose(1, 2)).sum(0)


def _pw_input_grad_(out: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """out += ∂L/∂t of ``_pw(w, t)``, in place in one GEMM (β = 1)."""
    if grad.dim() == 2:
        return out.addmm_(grad, w)
    return out.baddbmm_(w.t().expand(grad.shape[0], -1, -1), grad)


def _stats(
    z: torch.Tensor,
    channels_last: bool,
    shape: tuple[int, int, int],
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    cfg: BNConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, 1/std, scale, shift) of one BatchNorm; with batch statistics also updates the running
    ones (when given) by ``torch.batch_norm_update_stats``, the update ``nn.BatchNorm2d`` makes."""
    if cfg.batch_stats:
        # the 4-D view in the layout the reference's convolution would produce, so that the
        # native kernel takes the same route (and, for equal z, gives bit-equal statistics)
        z4 = _unflat(z, channels_last, *shape)
        mean, var = torch.batch_norm_update_stats(z4, running_mean, running_var, cfg.momentum)
    else:
        assert running_mean is not None and running_var is not None
        mean, var = running_mean.clone(), running_var
    rstd = torch.rsqrt(var + cfg.eps)
    scale = gamma * rstd
    shift = beta - mean * scale
    return mean, rstd, scale, shift


class ATACFunction(torch.autograd.Function):
    """y = σ(BN₂(W₂ δ(BN₁(W₁ x)))) ⊙ x for a 4-D x, saving x (and z₁, z₂ unless ``recompute``).

    ``ATACFunction.apply(x, w1, gamma1, beta1, w2, gamma2, beta2, running_mean1, running_var1,
    running_mean2, running_var2, bn1, bn2, use_relu, recompute)``: ``w1`` (C/r, C, 1, 1) and
    ``w2`` (C, C/r, 1, 1) are the convolution weights; ``bn1``/``bn2`` are :class:`BNConfig`s;
    the running statistics may be None (then ``batch_stats`` must be True) and are updated in
    place in forward when ``batch_stats`` is True. x, the weights and the BN affine parameters
    must share one floating dtype and device. The output has x's layout (channels_last stays
    channels_last; other strides become NCHW). Without autograd recording (no_grad, inference)
    pass ``recompute=True``: the intermediates are then overwritten in place.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        w1: torch.Tensor,
        gamma1: torch.Tensor,
        beta1: torch.Tensor,
        w2: torch.Tensor,
        gamma2: torch.Tensor,
        beta2: torch.Tensor,
        running_mean1: torch.Tensor | None,
        running_var1: torch.Tensor | None,
        running_mean2: torch.Tensor | None,
        running_var2: torch.Tensor | None,
        bn1: BNConfig,
        bn2: BNConfig,
        use_relu: bool,
        recompute: bool,
    ) -> torch.Tensor:
        n, _, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        if not channels_last and not x.is_contiguous():
            x = x.contiguous()
        # needs_input_grad says which inputs require grad, also under no_grad, where nothing is
        # recorded: callers pass recompute=True there, so that the kernels work in place.
        save = any(ctx.needs_input_grad)
        w1m, w2m = w1.flatten(1), w2.flatten(1)
        xf = _flat(x, channels_last)
        z1 = _pw(w1m, xf)
        st1 = _stats(z1, channels_last, (n, h, w), gamma1, beta1, running_mean1, running_var1, bn1)
        keep = save and not recompute  # the fast path keeps z₁ and z₂ for backward
        a = AFFINE_ACT(z1, st1[2], st1[3], use_relu, not keep)
        z2 = _pw(w2m, a)
        del a
        st2 = _stats(z2, channels_last, (n, h, w), gamma2, beta2, running_mean2, running_var2, bn2)
        y = GATE_MUL(xf, z2, st2[2], st2[3], not keep)
        if save:
            big = (z1, z2) if keep else ()
            ctx.save_for_backward(x, w1, w2, *st1, *st2, *big)
            ctx.cfg = (bn1.batch_stats, bn2.batch_stats, use_relu, channels_last, (n, h, w))
        return _unflat(y, channels_last, n, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w1, w2, mean1, rstd1, scale1, shift1, mean2, rstd2, scale2, shift2, *big = (
            ctx.saved_tensors
        )
        batch1, batch2, use_relu, channels_last, shape = ctx.cfg
        need = ctx.needs_input_grad
        need_x = need[0]
        w1m, w2m = w1.flatten(1), w2.flatten(1)
        xf = _flat(x, channels_last)
        if big:
            z1, z2 = big
            a = AFFINE_ACT(z1, scale1, shift1, use_relu, False)
        else:  # memory-efficient: the gate again, from x and forward's statistics
            z1 = _pw(w1m, xf)
            a = AFFINE_ACT(z1, scale1, shift1, use_relu, False)
            z2 = _pw(w2m, a)
        g = _flat(grad, channels_last)  # a copy only if grad has other strides than x
        grad_x, grad_z2, grad_gamma2, grad_beta2 = GATE_BACKWARD(
            g, xf, z2, scale2, shift2, mean2, rstd2, batch2, need_x
        )
        del z2, g
        grad_w2 = _pw_weight_grad(grad_z2, a) if need[4] else None
        grad_a = _pw(w2m.t(), grad_z2)
        del grad_z2
        grad_z1, grad_gamma1, grad_beta1 = ACT_BACKWARD(
            grad_a, a, z1, scale1, mean1, rstd1, batch1, use_relu
        )
        del grad_a, a, z1
        grad_w1 = _pw_weight_grad(grad_z1, xf) if need[1] else None
        if grad_x is not None:
            grad_x = _unflat(_pw_input_grad_(grad_x, w1m, grad_z1), channels_last, *shape)
        return (
            grad_x,
            grad_w1.view_as(w1) if grad_w1 is not None else None,
            grad_gamma1 if need[2] else None,
            grad_beta1 if need[3] else None,
            grad_w2.view_as(w2) if grad_w2 is not None else None,
            grad_gamma2 if need[5] else None,
            grad_beta2 if need[6] else None,
            *([None] * 8),
        )

