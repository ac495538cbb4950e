"""AReLU and ELSA of Chen et al., "AReLU: Attention-based Rectified Linear Unit" (2020).

ELSA, the element-wise sign-based attention, scales each element by a factor chosen by its sign:

    L(x, α, β) = C(α)·x  for x < 0,   σ(β)·x  for x ≥ 0         Eq. (5)

with C clamping to [0.01, 0.99] and σ the sigmoid; α and β are two learnable scalars per layer.
AReLU adds it to ReLU:

    F(x, α, β) = R(x) + L(x, α, β) = C(α)·x  for x < 0,   (1 + σ(β))·x  for x ≥ 0      Eq. (7)

Gradients (Sec. 3.4): ∂F/∂α = Σ_{x<0} x while 0.01 ≤ α ≤ 0.99 and 0 outside (the clamp detaches
it), ∂F/∂β = Σ_{x≥0} σ(β)(1−σ(β))·x, ∂F/∂x = C(α) for x < 0 and 1 + σ(β) for x > 0 (Eq. (11)
prints α where C(α) is meant). Autograd of the composition below gives exactly these.

At exactly x = 0 (zero padding, inputs fed by a ReLU) F is not differentiable; attnact takes
F = R + L term by term, with torch's ReLU convention R'(0) = 0 and Eq. (5)'s branch for
L (x = 0 belongs to x ≥ 0, so L'(0) = σ(β)): ∂F/∂x(0) = σ(β), for AReLU and ELSA("relu")
alike, on every path. (The authors' AReLU code, relu(x)·(1+σ(β)) − relu(−x)·C(α), gives 0
there; Eq. (11) read literally gives 1 + σ(β). Neither agrees with ELSA("relu") = relu + L.)

ELSA as a plug-in (Sec. 4.6): F(x) = A(x) + L(x, α, β) for any activation A. The authors'
published ELSA code multiplies by the raw α and β; we follow the paper (C(α), σ(β)).

Two implementations compute the same values and gradients:

* the reference — :func:`arelu_reference`, :func:`elsa_reference` — a plain composition of torch
  ops; autograd saves two float tensors and a mask per unit. It stays in the package because the
  tests and the benchmark compare against it, and because it is what an outer ``torch.compile``,
  ``torch.func`` transforms and ``torch.fx`` tracing should see (below);
* the Functions of :mod:`attnact.units.arelu_function`, which save one activation-sized tensor
  and run fused (compiled) kernels: :func:`arelu` and :func:`elsa`, and the modules by default;
* on CPU, where the operators build (:mod:`attnact.units.native`), ``attnact::arelu`` and, for
  ELSA around torch's parameter-free activations (``native.elsa_activation``), ``attnact::elsa``:
  the same saved tensor, with the autograd node in C++, so no Python runs per call.

``implementation="auto"`` (the default of :class:`AReLU`, :class:`ELSA`, :func:`arelu`,
:func:`elsa`) takes the Function except where the reference is the better or the only correct
choice, and inside an outer ``torch.compile`` a third form:

* inside an outer ``torch.compile``: :func:`arelu_compiled_form` / :func:`elsa_compiled_form`,
  plain torch ops that dynamo traces into the model's graph (no graph break, no native operator
  or nested compiled kernel hiding the unit from inductor). AReLU's is its Function traced
  (saving y, which the next layer saves anyway), ELSA's the composition; both take α and β
  broadcast along dim 1, so that their gradients are per-channel sums first, which inductor
  fuses into the neighbouring BatchNorm's backward reductions (a sum straight to one value
  cannot be, and costs extra passes over the map). ``"reference"`` under compile stays the
  plain reference;
* under ``torch.func`` transforms (MAML's ``vmap`` of ``grad`` of ``grad``): the reference is
  plain differentiable ops, which every transform supports;
* ``torch.fx`` symbolic tracing (the argument is a Proxy, not a tensor);
* α or β broadcasting to a larger shape than x (the output would not be x-sized);
* ELSA only: a wrapped activation that cannot be recomputed in backward (BatchNorm in training,
  RReLU or dropout in training) or that changes the channel count (Maxout).

``implementation="function"`` forces the Function (benchmarks), ``"reference"`` the composition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from attnact._checks import check_bool, check_choice
from attnact.units import native
from attnact.units.arelu_function import (
    ALPHA_RANGE,
    ELSA_FORWARD,
    AReLUFunction,
    ELSAFunction,
)
from attnact.units.inputs import check_float_input
from attnact.units.registry import (
    _REGISTRY,
    create_act_layer,
    list_activations,
    register_activation,
)

__all__ = [
    "ALPHA_RANGE",
    "ELSA",
    "IMPLEMENTATIONS",
    "AReLU",
    "arelu",
    "arelu_compiled_form",
    "arelu_reference",
    "elsa",
    "elsa_compiled_form",
    "elsa_gate",
    "elsa_reference",
    "register_elsa_variants",
]

IMPLEMENTATIONS = ("auto", "function", "reference")


def elsa_gate(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """L(x, α, β) of Eq. (5): C(α)·x where x < 0, σ(β)·x where x ≥ 0.

    Examples:
        >>> import torch
        >>> from attnact.units import elsa_gate
        >>> elsa_gate(torch.tensor([-2.0, 3.0]), torch.tensor([0.5]), torch.tensor([0.0]))
        tensor([-1.0000,  1.5000])
    """
    neg = alpha.clamp(*ALPHA_RANGE).to(x.dtype)
    pos = torch.sigmoid(beta).to(x.dtype)
    return x * torch.where(x >= 0, pos, neg)


def arelu_reference(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """F(x, α, β) of Eq. (7) as one multiply by a sign-selected slope (the reference composition).

    Equal to ``relu(x) + elsa_gate(x, alpha, beta)``, also in ∂/∂x at x = 0, where the slope is
    R'(0) + σ(β) = σ(β) (module docstring); folding R into the slope saves passes over memory.
    """
    sig = torch.sigmoid(beta).to(x.dtype)
    neg = alpha.clamp(*ALPHA_RANGE).to(x.dtype)
    slope = torch.where(x > 0, 1.0 + sig, torch.where(x < 0, neg, sig))
    return x * slope


def elsa_reference(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, activation: Callable[..., Any]
) -> torch.Tensor:
    """A(x) + L(x, α, β) (Sec. 4.6) as a plain composition (the reference)."""
    return cast(torch.Tensor, activation(x) + elsa_gate(x, alpha, beta))


def _per_channel(x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """One-element parameters as (1, C, 1, …) views broadcast along x's dim 1, or None where
    that does not apply (fewer than two dims, or parameters of more than one element).

    The values are the parameters' own (an expand copies nothing), so any composition gives
    the same outputs with them. What changes is the backward autograd builds: the gradient of
    an expanded parameter is a sum over every dim but 1 first, then over the C channels. That
    first sum has the shape of BatchNorm's backward reductions (per channel over N·H·W), so
    inductor computes it in the same loop as the neighbouring BatchNorm's, instead of in a
    reduction of its own to one value — which it cannot fuse with per-channel ones, and which
    made it store the recomputed BN output for a second pass.
    """
    if x.dim() < 2 or any(p.numel() != 1 for p in params):
        return None
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    return tuple(p.reshape(()).expand(shape) for p in params)


def arelu_compiled_form(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """F(x, α, β) of Eq. (7) as ``"auto"`` gives it to an outer ``torch.compile``:
    :class:`AReLUFunction` (out of place; dynamo traces its forward and backward, which save y
    only) on α and β broadcast per channel (:func:`_per_channel`). The values and gradients
    of the reference, the x = 0 convention included; the reference itself where the broadcast
    does not apply (fewer than two dims, parameters of several elements)."""
    per_channel = _per_channel(x, alpha, beta)
    if per_channel is None:
        return arelu_reference(x, alpha, beta)
    return cast(torch.Tensor, AReLUFunction.apply(x, *per_channel, False))


def elsa_compiled_form(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, activation: Callable[..., Any]
) -> torch.Tensor:
    """:func:`elsa_reference` with α and β broadcast per channel, as
    :func:`arelu_compiled_form`."""
    per_channel = _per_channel(x, alpha, beta)
    if per_channel is None:
        return elsa_reference(x, alpha, beta, activation)
    return cast(torch.Tensor, activation(x) + elsa_gate(x, *per_channel))


def _outer_context() -> bool:
    """An outer torch.compile or torch.func transform is tracing: the reference belongs there."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def _broadcasts_into(shape: torch.Size, *params: torch.Tensor) -> bool:
    """Whether every parameter broadcasts to ``shape`` without enlarging it (the test
    ``torch.broadcast_shapes(shape, ...) == shape``, without its per-call cost, which counts at
    small maps)."""
    for p in params:
        if p.dim() > len(shape):
            return False
        for size, target in zip(reversed(p.shape), reversed(shape), strict=False):
            if size != 1 and size != target:
                return False
    return True


def _function_fits(x: Any, *params: torch.Tensor) -> bool:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or _outer_context():
        return False
    return _broadcasts_into(x.shape, *params)


def arelu(
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    inplace: bool = False,
    implementation: str = "auto",
) -> torch.Tensor:
    """F(x, α, β) of Eq. (7), by :class:`AReLUFunction` or the reference (module docstring).

    ``inplace=True`` writes the result into x where the Function runs; the reference ignores it
    (use the return value either way). Integer and bool inputs raise ``TypeError``.
    """
    check_float_input(x, "AReLU")
    if implementation == "auto" and not inplace and _function_fits(x, alpha, beta) and (
        native.gate_ready(x, alpha, beta)
    ):
        # the native operator (units/native.py)
        return cast(torch.Tensor, torch.ops.attnact.arelu(x, alpha, beta))
    if implementation == "function" or (
        implementation == "auto" and _function_fits(x, alpha, beta)
    ):
        return cast(torch.Tensor, AReLUFunction.apply(x, alpha, beta, inplace))
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "auto" and torch.compiler.is_compiling():
        return arelu_compiled_form(x, alpha, beta)
    return arelu_reference(x, alpha, beta)


def _recompute_unsafe(activation: nn.Module) -> str | None:
    """Why ``activation`` must not be recomputed in backward, or None."""
    for m in activation.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            return f"{type(m).__name__} in training mode updates its running statistics"
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.RReLU)):
            return f"{type(m).__name__} in training mode is random"
    return None


def _needs_grad(x: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and (
        x.requires_grad or any(t.requires_grad for t in tensors)
    )


def elsa(
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    activation: nn.Module,
    inplace: bool = False,
    implementation: str = "auto",
) -> torch.Tensor:
    """A(x) + L(x, α, β) for an element-wise activation module A, by ``attnact::elsa``,
    :class:`ELSAFunction` or the reference (module docstring).

    ``inplace=True`` writes into x only when no gradient is needed: with autograd recording, the
    Function saves x, so the result must go elsewhere. (``ELSA("relu")`` does not switch to
    AReLU's closed form, which saves y and works in place: at x = 0 torch's ReLU has slope 0, so
    the convention at x = 0 (module docstring) makes the two agree there too; use :class:`AReLU`
    for the closed form.) Integer and bool inputs raise ``TypeError``.
    """
    check_float_input(x, "ELSA")
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "reference":
        return elsa_reference(x, alpha, beta, activation)
    if implementation == "auto" and torch.compiler.is_compiling():
        return elsa_compiled_form(x, alpha, beta, activation)
    if implementation == "auto" and (
        not _function_fits(x, alpha, beta) or _recompute_unsafe(activation) is not None
    ):
        return elsa_reference(x, alpha, beta, activation)
    if implementation == "auto" and not inplace and native.gate_ready(x, alpha, beta):
        native_form = native.elsa_activation(activation)
        if native_form is not None:  # the native operator: ATen's activation, the gate in C++
            return cast(torch.Tensor, torch.ops.attnact.elsa(x, alpha, beta, *native_form))
    named = [*activation.named_parameters(), *activation.named_buffers()]
    tensors = [t for _, t in named]
    if inplace and not _needs_grad(x, [alpha, beta, *tensors]):
        with torch.no_grad():
            a = activation(x)
            if a.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
                return cast(torch.Tensor, ELSA_FORWARD(a, x, alpha, beta, True))
    return cast(torch.Tensor, ELSAFunction.apply(
        x, alpha, beta, activation, [n for n, _ in named], *tensors))


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
        inplace: write the output into the input's storage, like ``nn.ReLU(inplace=True)``
            (where the Function runs; see :func:`arelu`).
        implementation: ``"auto"`` (the autograd Function that saves only the output, or the
            reference where that fits better), ``"function"`` or ``"reference"``; see the
            module docstring.

    Parameters ``alpha`` and ``beta`` (shape (1,), as in the authors' checkpoints) hold the raw,
    unconstrained values. Works on inputs of any shape.

    Examples:
        With the paper's initial α = 0.9, β = 2 (Eq. (7)): C(0.9)·(−1) = −0.9 and
        (1 + σ(2))·2 = 3.7616; an α above 0.99 is clamped.

        >>> import torch, attnact
        >>> y = attnact.AReLU(alpha=0.9, beta=2.0)(torch.tensor([-1.0, 0.0, 2.0]))
        >>> [round(v, 4) for v in y.tolist()]
        [-0.9, 0.0, 3.7616]
        >>> round(attnact.AReLU(alpha=1.5)(torch.tensor([-1.0])).item(), 4)
        -0.99
    """

    # class-level defaults keep modules pickled before these attributes existed loadable
    inplace: bool = False
    implementation: str = "auto"

    def __init__(
        self,
        alpha: float = 0.9,
        beta: float = 2.0,
        inplace: bool = False,
        implementation: str = "auto",
    ) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([_check_scalar("alpha", alpha)]))
        self.beta = nn.Parameter(torch.tensor([_check_scalar("beta", beta)]))
        self.inplace = check_bool("inplace", inplace)
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return arelu(x, self.alpha, self.beta, self.inplace, self.implementation)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}, beta={self.beta.item():.4g}" + _options(self)


class ELSA(nn.Module):
    """ELSA as a plug-in for any activation (Sec. 4.6): F(x) = A(x) + L(x, α, β).

    Args:
        activation: a registered name, an activation class, or a module instance to wrap.
        alpha, beta: initial raw values of ELSA's two parameters (paper: 0.9 and 2.0).
        channels: channel count, passed on to activations that need it (e.g. ``"atac"``).
        inplace: write the output into the input's storage where that is possible (see
            :func:`elsa`); otherwise ignored.
        implementation: ``"auto"``, ``"function"`` or ``"reference"`` (module docstring).
        **act_kwargs: forwarded to the activation's constructor.

    ``ELSA("relu")`` computes exactly AReLU, values and gradients, also at x = 0 (module
    docstring). For an activation that changes the channel count
    (Maxout), each output equals one selected input element, so L is applied to that selected
    element: F(x) = A(x) + L(A(x)); that case always runs the reference composition.
    A module instance given as ``activation`` must not work in place: ELSA reads x after it.

    Examples:
        ELSA(tanh) at x = −1: tanh(−1) + C(0.9)·(−1) = −1.6616; at x = 1: tanh(1) + σ(2) = 1.6424.
        ELSA("relu") is AReLU.

        >>> import torch, attnact
        >>> y = attnact.ELSA("tanh")(torch.tensor([-1.0, 1.0]))
        >>> [round(v, 4) for v in y.tolist()]
        [-1.6616, 1.6424]
        >>> x = torch.randn(100)
        >>> torch.allclose(attnact.ELSA("relu")(x), attnact.AReLU()(x))
        True
    """

    inplace: bool = False
    implementation: str = "auto"

    def __init__(
        self,
        activation: str | type[nn.Module] | nn.Module = "relu",
        alpha: float = 0.9,
        beta: float = 2.0,
        channels: int | None = None,
        inplace: bool = False,
        implementation: str = "auto",
        **act_kwargs: Any,
    ) -> None:
        super().__init__()
        if not (isinstance(activation, (str, nn.Module)) or callable(activation)):
            raise ValueError(
                "activation must be a registered name, an nn.Module class, a factory or a "
                f"module instance, got {activation!r}"
            )
        if isinstance(activation, nn.Module):
            if act_kwargs:
                raise ValueError("activation keyword arguments need a name or class, not a module")
            if _works_in_place(activation):
                raise ValueError(
                    f"activation {type(activation).__name__} works in place, but ELSA needs its "
                    f"input after the activation: pass it with inplace=False"
                )
            self.activation = activation
        else:
            self.activation = create_act_layer(activation, channels=channels, **act_kwargs)
        self.alpha = nn.Parameter(torch.tensor([_check_scalar("alpha", alpha)]))
        self.beta = nn.Parameter(torch.tensor([_check_scalar("beta", beta)]))
        out_channels = getattr(self.activation, "out_channels", None)
        self._gate_after = callable(out_channels)  # channel-changing units such as Maxout
        self.inplace = check_bool("inplace", inplace)
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)
        if self._gate_after:
            # Hosts widen the layer before a channel-changing unit by its pool size (ActPlan);
            # ELSA changes the channels exactly as the unit it wraps, so it says the same.
            self.out_channels = out_channels
            self.pool_size = getattr(self.activation, "pool_size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gate_after:
            check_float_input(x, "ELSA")
            y = self.activation(x)
            return cast(torch.Tensor, y + elsa_gate(y, self.alpha, self.beta))
        if hasattr(self.activation, "_initialize_hook"):
            # a lazy unit (ATAC() without a width) not yet run: the Function would be handed its
            # uninitialized parameters, so this first call runs the composition, which calls the
            # unit and lets it materialise
            check_float_input(x, "ELSA")
            return elsa_reference(x, self.alpha, self.beta, self.activation)
        return elsa(x, self.alpha, self.beta, self.activation, self.inplace, self.implementation)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}, beta={self.beta.item():.4g}" + _options(self)


def _works_in_place(m: nn.Module) -> bool:
    """torch.nn's activations and attnact's AReLU/ELSA honour ``inplace=True``; attnact's other
    units accept the flag and ignore it."""
    if getattr(m, "inplace", False) is not True:
        return False
    return isinstance(m, (AReLU, ELSA)) or type(m).__module__.startswith("torch.nn.")


def _options(m: AReLU | ELSA) -> str:
    inplace = ", inplace=True" if m.inplace else ""
    impl = f", implementation={m.implementation!r}" if m.implementation != "auto" else ""
    return inplace + impl


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
