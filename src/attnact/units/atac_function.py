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

Speed (on these units memory passes set the time: DESIGN.md, Performance: how to measure):

* the two point-wise convolutions stay the native convolution (oneDNN on CPU) and its
  ``convolution_backward``, not GEMMs over the channel dimension, which are slower for these
  skinny shapes (:func:`_pw`);
* BatchNorm becomes a per-channel scale and shift (statistics from
  ``torch.batch_norm_update_stats``, the same native kernel ``nn.BatchNorm2d`` uses, which also
  updates the running statistics), fused with δ into one kernel, and with σ and the product with x
  into another: two element-wise kernels where the reference runs five (BN₁, δ, BN₂, σ, product);
* backward is three element-wise kernels — a again from z₁, then gate + BN₂ and δ + BN₁ with
  their per-channel reductions — and two convolution backwards. The kernels work on flat
  views, (N·H·W, C) or (N, C, H·W), which cost nothing to make.

Each call costs more fixed overhead than the reference's native calls (five compiled-kernel
calls and their guards), so on CPU ATAC's default path takes the reference for small inputs
(:data:`attnact.units.atac.CPU_FAST_PATH_MIN`). The measurements behind these choices are in
``benchmarks/unit-kernels-notes.md`` and the ``attnact bench`` tables of ``benchmarks/``.

The element-wise kernels are :class:`~attnact.units.fused.FusedKernel`s: compiled lazily where
``torch.compile`` works, eager otherwise. Backward is ``once_differentiable``: the batch
statistics are constants here, so a second derivative would be wrong; use
``implementation="reference"`` for double backward.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from attnact.units.fused import FusedKernel, masked

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
# Every tensor here is a 3-D view of a 4-D one: (N, H·W, C) when ``cl`` (channels_last), else
# (N, C, H·W); per-channel vectors broadcast along the channel dim. Per-channel sums first reduce
# each sample, then the N partial sums: inductor parallelises a reduction over its output
# elements, so summing (N·H·W, C) straight to (C,) would run on one thread for C ≤ 16.


def _pc(v: torch.Tensor, cl: bool) -> torch.Tensor:
    return v.view(1, 1, -1) if cl else v.view(1, -1, 1)


def _csum(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """Σ over every position of each channel: per sample first, then over the batch."""
    return t.sum(1 if cl else 2).sum(0)


def _affine_act(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    use_relu: bool,
    inplace: bool,
    cl: bool,
) -> torch.Tensor:
    """a = δ(z·scale + shift): BN₁ (folded) and the ReLU in one pass."""
    h = z.mul_(_pc(scale, cl)) if inplace else z * _pc(scale, cl)
    h = h.add_(_pc(shift, cl))
    return h.relu_() if use_relu else h


def _gate_mul(
    x: torch.Tensor,
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    inplace: bool,
    cl: bool,
) -> torch.Tensor:
    """y = σ(z·scale + shift) ⊙ x: BN₂ (folded), the sigmoid and Eq. (5) in one pass; ``inplace``
    writes y into z."""
    h = z.mul_(_pc(scale, cl)) if inplace else z * _pc(scale, cl)
    return h.add_(_pc(shift, cl)).sigmoid_().mul_(x)


def _bn_input_grad(
    gh: torch.Tensor,
    z: torch.Tensor,
    scale: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    batch_stats: bool,
    cl: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Given gh = ∂L/∂(BN output): (∂L/∂z, ∂L/∂γ, ∂L/∂β) of h = γ·(z − mean)·rstd + β."""
    n = (z - _pc(mean, cl)) * _pc(rstd, cl)
    grad_beta = _csum(gh, cl)
    grad_gamma = _csum(gh * n, cl)
    if batch_stats:
        # mean and variance depend on z: subtract the projections onto 1 and onto n
        m = z.numel() // z.shape[2 if cl else 1]
        gh = gh - _pc(grad_beta / m, cl) - n * _pc(grad_gamma / m, cl)
    return gh * _pc(scale, cl), grad_gamma, grad_beta


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
    cl: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g⊙s, ∂L/∂z₂, ∂L/∂γ₂, ∂L/∂β₂) for y = s ⊙ x, s = σ(BN₂(z₂)); s is rebuilt from z₂."""
    s = torch.sigmoid(z2 * _pc(scale, cl) + _pc(shift, cl))
    grad_x = grad * s if need_x else None
    gh = grad * x * (s * (1.0 - s))
    grad_z, grad_gamma, grad_beta = _bn_input_grad(gh, z2, scale, mean, rstd, batch_stats, cl)
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
    cl: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂L/∂z₁, ∂L/∂γ₁, ∂L/∂β₁) for a = δ(BN₁(z₁)); δ's mask from a > 0, as ReLU's backward."""
    gh = masked(a > 0, grad_a) if use_relu else grad_a
    return _bn_input_grad(gh, z1, scale, mean, rstd, batch_stats, cl)


AFFINE_ACT = FusedKernel(_affine_act)
GATE_MUL = FusedKernel(_gate_mul)
GATE_BACKWARD = FusedKernel(_gate_backward)
ACT_BACKWARD = FusedKernel(_act_backward)
KERNELS = (AFFINE_ACT, GATE_MUL, GATE_BACKWARD, ACT_BACKWARD)


def _flat(t4: torch.Tensor, cl: bool) -> torch.Tensor:
    """(N, H·W, C) for channels_last, (N, C, H·W) for NCHW; a view when ``t4`` is contiguous in
    that format (a copy otherwise, e.g. an incoming gradient of other strides)."""
    n, c = t4.shape[:2]
    if cl:
        return t4.permute(0, 2, 3, 1).reshape(n, -1, c)
    return t4.reshape(n, c, -1)


def _unflat(t: torch.Tensor, like: torch.Tensor, cl: bool) -> torch.Tensor:
    """The 4-D tensor (``like``'s N, H, W) whose 3-D view is ``t``."""
    n, _, h, w = like.shape
    c = t.shape[2 if cl else 1]
    if cl:
        return t.view(n, h, w, c).permute(0, 3, 1, 2)
    return t.view(n, c, h, w)


# --- point-wise convolutions -----------------------------------------------------------------


def _pw(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The 1×1 convolution with weight ``w`` (C_out, C_in, 1, 1) of a 4-D tensor.

    The native convolution, not a matrix product over the channels: on CPU oneDNN's 1×1
    convolution beats the equivalent (N·H·W, C) × (C, C/r) GEMM forward and backward (DESIGN.md,
    Performance: how to measure; figures in benchmarks/unit-kernels-notes.md). Skinny GEMMs
    are what BLAS does worst.
    """
    return torch.nn.functional.conv2d(t, w)


def _pw_backward(
    grad: torch.Tensor, t: torch.Tensor, w: torch.Tensor, need_input: bool, need_weight: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(∂L/∂t, ∂L/∂w) of ``_pw(w, t)`` given ∂L/∂output ``grad`` (None where not needed)."""
    if not (need_input or need_weight):
        return None, None
    grad_t, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, t, w, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1,
        (need_input, need_weight, False),
    )
    return grad_t, grad_w


def _stats(
    z: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    cfg: BNConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, 1/std, scale, shift) of one BatchNorm; with batch statistics also updates the running
    ones (when given) by ``torch.batch_norm_update_stats``, the update ``nn.BatchNorm2d`` makes."""
    if cfg.batch_stats:
        mean, var = torch.batch_norm_update_stats(z, running_mean, running_var, cfg.momentum)
    else:
        assert running_mean is not None and running_var is not None
        mean, var = running_mean.clone(), running_var
    rstd = torch.rsqrt(var + cfg.eps)
    scale = gamma * rstd
    shift = beta - mean * scale
    return mean, rstd, scale, shift


class _Reentry(threading.local):
    active = False


_REENTRY = _Reentry()  # ATACFunction.apply inside torch.func's own call (per thread)


class ATACFunction(torch.autograd.Function):
    """y = σ(BN₂(W₂ δ(BN₁(W₁ x)))) ⊙ x for a 4-D x, saving x (and z₁, z₂ unless ``recompute``).

    ``ATACFunction.apply(x, w1, gamma1, beta1, w2, gamma2, beta2, running_mean1, running_var1,
    running_mean2, running_var2, bn1, bn2, use_relu, recompute)``: ``w1`` (C/r, C, 1, 1) and
    ``w2`` (C, C/r, 1, 1) are the convolution weights; ``bn1``/``bn2`` are :class:`BNConfig`s;
    the running statistics may be None (then ``batch_stats`` must be True) and are updated in
    place in forward when ``batch_stats`` is True. x, the weights and the BN affine parameters
    must share one floating dtype and device. The output has x's layout (channels_last stays
    channels_last; other strides become NCHW). When no input requires grad, or with
    ``recompute=True``, the intermediates are overwritten in place.

    ``forward`` + ``setup_context`` (the style of the AReLU Functions, which ``torch.func``
    transforms need): forward cannot reach ``ctx``, so it returns the tensors backward needs
    as outputs of their own, marked non-differentiable; :meth:`apply` hands back y alone.
    Which tensors those are says the path: with z₁ and z₂ among them backward reads them (fast
    path), without them it recomputes the gate (memory-efficient path, and wherever forward
    saw no input requiring grad, e.g. under ``torch.func``, whose forward sees plain tensors).
    """

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """y, as the Function's public signature promises; the saved tensors stay internal.

        Under ``torch.func`` transforms torch calls ``apply`` once more for the innermost
        level, with the transforms peeled off, and builds the transformed outputs from what
        that call returns: that call must return forward's full outputs.
        """
        apply = super().apply  # torch's Function.apply is unannotated
        if _REENTRY.active:
            return apply(*args, **kwargs)  # type: ignore[no-untyped-call]
        if not torch._C._are_functorch_transforms_active():
            return apply(*args, **kwargs)[0]  # type: ignore[no-untyped-call]
        _REENTRY.active = True
        try:
            return apply(*args, **kwargs)[0]  # type: ignore[no-untyped-call]
        finally:
            _REENTRY.active = False

    @staticmethod
    def forward(
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
    ) -> tuple[torch.Tensor, ...]:
        cl = x.is_contiguous(memory_format=torch.channels_last)
        if not cl and not x.is_contiguous():
            x = x.contiguous()
        # The differentiable inputs' requires_grad is what ctx.needs_input_grad will say: with
        # none set (no_grad callers pass recompute=True anyway) the kernels may work in place.
        save = any(t.requires_grad for t in (x, w1, gamma1, beta1, w2, gamma2, beta2))
        z1 = _pw(w1, x)
        st1 = _stats(z1, gamma1, beta1, running_mean1, running_var1, bn1)
        keep = save and not recompute  # the fast path keeps z₁ and z₂ for backward
        a = AFFINE_ACT(_flat(z1, cl), st1[2], st1[3], use_relu, not keep, cl)
        z2 = _pw(w2, _unflat(a, z1, cl))
        del a
        st2 = _stats(z2, gamma2, beta2, running_mean2, running_var2, bn2)
        y = GATE_MUL(_flat(x, cl), _flat(z2, cl), st2[2], st2[3], not keep, cl)
        big = (z1, z2) if keep else ()
        return (_unflat(y, x, cl), *st1, *st2, *big)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x, w1, w2 = inputs[0], inputs[1], inputs[4]
        bn1, bn2, use_relu = inputs[11:14]
        _y, *rest = output
        ctx.mark_non_differentiable(*rest)
        # x itself, not forward's contiguous copy of an odd-strided x: backward's flat views
        # copy it again there (the saved bytes stay x's)
        ctx.save_for_backward(x, w1, w2, *rest)
        ctx.cfg = (bn1.batch_stats, bn2.batch_stats, use_relu,
                   x.is_contiguous(memory_format=torch.channels_last))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, *_unused: Any) -> tuple[torch.Tensor | None, ...]:
        x, w1, w2, mean1, rstd1, scale1, shift1, mean2, rstd2, scale2, shift2, *big = (
            ctx.saved_tensors
        )
        batch1, batch2, use_relu, cl = ctx.cfg
        if not cl and not x.is_contiguous():
            x = x.contiguous()  # the layout forward computed in
        need = ctx.needs_input_grad
        need_x = need[0]
        if big:
            z1, z2 = big
        else:  # memory-efficient: the gate again, from x and forward's statistics
            z1, z2 = _pw(w1, x), None
        a = _unflat(AFFINE_ACT(_flat(z1, cl), scale1, shift1, use_relu, False, cl), z1, cl)
        if z2 is None:
            z2 = _pw(w2, a)
        grad_x, grad_z2, grad_gamma2, grad_beta2 = GATE_BACKWARD(
            _flat(grad, cl), _flat(x, cl), _flat(z2, cl), scale2, shift2, mean2, rstd2, batch2,
            need_x, cl,
        )
        del z2
        grad_a, grad_w2 = _pw_backward(_unflat(grad_z2, x, cl), a, w2, True, need[4])
        assert grad_a is not None  # asked for (need_input=True)
        del grad_z2
        grad_z1, grad_gamma1, grad_beta1 = ACT_BACKWARD(
            _flat(grad_a, cl), _flat(a, cl), _flat(z1, cl), scale1, mean1, rstd1, batch1,
            use_relu, cl,
        )
        del grad_a
        grad_x1, grad_w1 = _pw_backward(_unflat(grad_z1, z1, cl), x, w1, need_x, need[1])
        del a, z1, grad_z1
        if grad_x is not None:
            assert grad_x1 is not None  # both are computed exactly when x needs a gradient
            grad_x = _unflat(grad_x, x, cl).add_(grad_x1)
        return (
            grad_x,
            grad_w1,
            grad_gamma1 if need[2] else None,
            grad_beta1 if need[3] else None,
            grad_w2,
            grad_gamma2 if need[5] else None,
            grad_beta2 if need[6] else None,
            *([None] * 8),
        )
