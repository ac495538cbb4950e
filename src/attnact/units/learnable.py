"""Learnable activations compared in the AReLU paper (Table 1): PReLU, APL, PAU, SLAF, Mixture.

Each class follows its *original* paper, not the AReLU authors' re-implementations. With their
default settings the parameter counts are those of the units the AReLU authors compare
(densechen/AReLU, ``activations/``):

========  ==========================================================  ==========
unit      formula                                                     parameters
========  ==========================================================  ==========
PReLU     max(0, x) + a·min(0, x)                                     1
APL       max(0, x) + Σ_s a_s·max(0, −x + b_s)   (S = 1 hinge)        2
PAU       P(x) / (1 + Σ_k |b_k|·|x|^k),  deg P = 5, deg Q = 4        10
SLAF      Σ_{i<k} a_i x^i   (k = 3)                                   3
Mixture   p·x + (1 − p)·max(0, x)   (affine)                          1
========  ==========================================================  ==========

All parameters are shared by the whole layer unless a ``num_parameters=C`` argument asks for one
set per channel (dim 1). The units are element-wise, so they work on inputs of any shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact._checks import check_choice, check_int
from attnact.units.inputs import check_float_input
from attnact.units.registry import register_activation

__all__ = [
    "APL",
    "PAU",
    "SLAF",
    "Mixture",
    "PReLU",
    "pau_init_coefficients",
    "pau_safe",
    "slaf_relu_fit",
]


# --------------------------------------------------------------------------------------------------
# argument checks and broadcasting shared by the units


def _per_channel(param: Tensor, x: Tensor, unit: str) -> Tensor:
    """View a (C,) parameter so it broadcasts along dim 1 of ``x``; a (1,) parameter as a scalar.

    The parameter is cast to the input's dtype so a float32 unit also serves float64/bfloat16
    inputs (the cast is a no-op in the usual case where the dtypes agree).
    """
    param = param.to(dtype=x.dtype)
    if param.numel() == 1:
        return param.reshape(())
    if x.dim() < 2 or x.shape[1] != param.numel():
        got = x.shape[1] if x.dim() >= 2 else f"an input of shape {tuple(x.shape)}"
        raise ValueError(
            f"{unit} has num_parameters={param.numel()} (one per channel along dim 1), "
            f"expected {param.numel()} channels, got {got}"
        )
    return param.reshape(-1, *([1] * (x.dim() - 2)))


def _horner(coefficients: Tensor, x: Tensor) -> Tensor:
    """Σ_j c_j x^j with c ordered from degree 0 up, by Horner's scheme.

    Horner needs one fused multiply-add per degree and no tensor of powers x^j (half the
    passes over memory of the power sum, and the numerically stable textbook evaluation).
    """
    result = coefficients[-1].expand_as(x)
    for c in coefficients.flip(0)[1:]:
        result = torch.addcmul(c, result, x)  # c + result * x
    return result


# --------------------------------------------------------------------------------------------------
# PReLU


@register_activation(
    "prelu",
    formula="max(0,x) + a min(0,x)",
    source="He, Zhang, Ren, Sun, ICCV 2015",
    learnable=True,
)
class PReLU(nn.PReLU):
    """Parametric ReLU: ``f(x) = max(0, x) + a·min(0, x)`` with a learned slope ``a``.

    Source: K. He, X. Zhang, S. Ren, J. Sun, "Delving Deep into Rectifiers: Surpassing
    Human-Level Performance on ImageNet Classification", ICCV 2015.

    Args:
        num_parameters: 1 (default) shares one slope across the layer ("channel-shared", the
            variant both attention papers compare with); C gives one slope per channel along
            dim 1 ("channel-wise").
        init: initial slope; 0.25 as in the paper.
        inplace: accepted for ``act_layer=`` slots and ignored (autograd needs the input).

    The parameter is ``weight`` (the name ``torch.nn.PReLU`` uses, so checkpoints interchange).
    He et al. train ``a`` without weight decay, which would push it towards ReLU's 0; exclude it
    from weight decay to follow the paper.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, inplace: bool = False) -> None:
        check_int("num_parameters", num_parameters, 1, why="1 = channel-shared, C = channel-wise")
        super().__init__(num_parameters=num_parameters, init=float(init))
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "PReLU")
        weight = self.weight
        if self.num_parameters > 1:
            # F.prelu would raise an opaque RuntimeError; name the mismatch instead.
            _per_channel(weight, x, "PReLU")
        return F.prelu(x, weight.to(dtype=x.dtype))

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


# --------------------------------------------------------------------------------------------------
# APL


@register_activation(
    "apl",
    formula="max(0,x) + sum_s a_s max(0, -x + b_s)",
    source="Agostinelli, Hoffman, Sadowski, Baldi, ICLR 2015 workshop",
    learnable=True,
)
class APL(nn.Module):
    """Adaptive piecewise linear unit: ``h(x) = max(0, x) + Σ_{s=1}^{S} a_s·max(0, −x + b_s)``.

    Source: F. Agostinelli, M. Hoffman, P. Sadowski, P. Baldi, "Learning Activation Functions to
    Improve Deep Neural Networks", ICLR 2015 (workshop track).

    A ReLU plus S learned hinges: ``a_s`` is the slope a hinge adds to the left of its knot
    ``b_s``. For large positive x the unit is the identity, for large negative x it is linear
    with slope ``−Σ a_s``.

    Args:
        num_parameters: 1 (default) shares the hinges across the layer, which gives the AReLU
            paper's 2 parameters for S = 1; C gives each channel (dim 1) its own hinges. (The APL
            paper learns them per unit; per channel is the convolutional analogue.)
        hinges: S, the number of hinges (default 1).
        init_a: initial slope of every hinge (default 0.2).
        init_b: initial knot of the first hinge (default 0.5); hinge s sits at ``init_b − (s−1)``
            so that several hinges start at distinct knots. (Hinges started at the same knot get
            identical gradients and could never separate.) A sequence of S values sets each knot.
        inplace: accepted for ``act_layer=`` slots and ignored.

    The init (a = 0.2, b = 0.5) is this library's choice: the unit starts close to a ReLU but
    with a non-zero slope for x < 0.5, so the hinge parameters receive gradient from the start.
    Parameters: ``a`` and ``b``, each of shape (S, num_parameters).
    """

    def __init__(
        self,
        num_parameters: int = 1,
        hinges: int = 1,
        init_a: float = 0.2,
        init_b: float | Sequence[float] = 0.5,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_parameters", num_parameters, 1, why="1 = layer-shared, C = per channel")
        check_int("hinges", hinges, 1, why="the number S of hinge functions")
        if isinstance(init_b, (int, float)):
            knots = [float(init_b) - s for s in range(hinges)]
        else:
            knots = [float(v) for v in init_b]
            if len(knots) != hinges:
                raise ValueError(
                    f"init_b must be a number or a sequence of hinges={hinges} knots, "
                    f"got {len(knots)} values"
                )
        self.num_parameters = num_parameters
        self.hinges = hinges
        self.inplace = inplace
        self.a = nn.Parameter(torch.full((hinges, num_parameters), float(init_a)))
        self.b = nn.Parameter(torch.tensor(knots).unsqueeze(1).repeat(1, num_parameters))

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "APL")
        out = F.relu(x)
        # A loop over the (few) hinges rather than one (S, *x.shape) tensor: S is 1 by default
        # and a stacked tensor would cost S times the input's memory.
        for s in range(self.hinges):
            a = _per_channel(self.a[s], x, "APL")
            b = _per_channel(self.b[s], x, "APL")
            out = out + a * F.relu(b - x)
        return out

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}, hinges={self.hinges}"


# --------------------------------------------------------------------------------------------------
# PAU

_PAU_TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "relu": F.relu,
}
_PAU_FIT_RANGE = (-3.0, 3.0)
_PAU_FIT_POINTS = 2001
_PAU_FIT_REWEIGHTINGS = 10
_PAU_FIT_LBFGS_STEPS = 100

#: The PAU authors' initial coefficients for m = 5, n = 4, fitted to Leaky ReLU (slope 0.01):
#: ``get_constants_for_inits("pade_optimized_leakyrelu")`` in ml-research/pau,
#: ``pau/cuda/python_imp/Pade.py`` (the default init of their PAU, and the one the AReLU
#: authors' comparison builds: densechen/AReLU, ``activations/pau/utils.py``). Numerator
#: a_0..a_5, denominator b_1..b_4.
PAU_LEAKY_RELU_5_4: tuple[tuple[float, ...], tuple[float, ...]] = (
    (3.35583603e-02, 5.05000375e-01, 1.65343934e00, 2.01001052e00, 9.31901999e-01,
     1.52424124e-01),
    (3.30847488e-06, 3.98021568e00, 5.12471206e-07, 3.01830109e-01),
)


def pau_safe(x: Tensor, numerator: Tensor, denominator: Tensor) -> Tensor:
    """The safe PAU of Molina et al. (ICLR 2020, Eq. 3): P(x) / (1 + Σ_{k=1}^{n} |b_k|·|x|^k).

    Every term of the denominator is non-negative, so Q ≥ 1 and F has no poles. Both polynomials
    are evaluated by Horner's scheme (the denominator in |x|, with |b| as coefficients).
    """
    p = _horner(numerator, x)
    ax = x.abs()
    # Σ_{k=1}^{n} |b_k| |x|^k = |x| · Σ_{k=0}^{n-1} |b_{k+1}| |x|^k: Horner on |b|, one multiply.
    q = 1.0 + ax * _horner(denominator.abs(), ax)
    return p / q


@functools.lru_cache(maxsize=16)
def pau_init_coefficients(
    target: str = "leaky_relu", numerator_degree: int = 5, denominator_degree: int = 4
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Initial coefficients ``(a_0..a_m), (b_1..b_n)`` of a safe PAU approximating ``target``.

    Leaky ReLU at the paper's degrees (m = 5, n = 4) returns the PAU authors' published
    coefficients (:data:`PAU_LEAKY_RELU_5_4`). Anything else is fitted here on [−3, 3] (float64,
    2001 points): a linear least-squares start (P − f·A = f, reweighted by 1/(1 + |A|) for 10
    rounds, Sanathanan–Koerner), then L-BFGS on the mean squared error of the safe form itself,
    whose denominator uses |b_k|·|x|^k.
    """
    check_choice("target", target, tuple(_PAU_TARGETS))
    m = check_int("numerator_degree", numerator_degree, 1)
    n = check_int("denominator_degree", denominator_degree, 1)
    if (target, m, n) == ("leaky_relu", 5, 4):
        return PAU_LEAKY_RELU_5_4
    x = torch.linspace(*_PAU_FIT_RANGE, _PAU_FIT_POINTS, dtype=torch.float64)
    f = _PAU_TARGETS[target](x)
    powers = torch.stack([x**j for j in range(max(m, n) + 1)], dim=1)
    design = torch.cat([powers[:, : m + 1], -f.unsqueeze(1) * powers[:, 1 : n + 1]], dim=1)
    weight = torch.ones_like(x)
    solution = x.new_empty(0)  # bound for the type checker: the loop runs at least once
    for _ in range(_PAU_FIT_REWEIGHTINGS + 1):
        solution = torch.linalg.lstsq(
            design * weight.unsqueeze(1), (f * weight).unsqueeze(1), driver="gelsd"
        ).solution.squeeze(1)
        weight = 1.0 / (1.0 + (powers[:, 1 : n + 1] @ solution[m + 1 :]).abs())
    a = solution[: m + 1].clone().requires_grad_(True)
    b = solution[m + 1 :].abs().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [a, b], lr=1.0, max_iter=_PAU_FIT_LBFGS_STEPS, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-14,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (pau_safe(x, a, b) - f).square().mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return tuple(a.detach().tolist()), tuple(b.detach().abs().tolist())


@register_activation(
    "pau",
    formula="(sum_j a_j x^j) / (1 + sum_k |b_k| |x|^k), j<=5, 1<=k<=4",
    source="Molina, Schramowski, Kersting, ICLR 2020 (safe PAU, Eq. 3)",
    learnable=True,
)
class PAU(nn.Module):
    """Padé Activation Unit, safe version (Molina et al., ICLR 2020, Eq. 3):

        F(x) = P(x) / Q(x),  P(x) = Σ_{j=0}^{m} a_j x^j,  Q(x) = 1 + Σ_{k=1}^{n} |b_k|·|x|^k

    Every term of Q is non-negative, so Q ≥ 1 and F has no poles. m = 5, n = 4 (the paper's
    choice) give 10 parameters, shared by the layer. This is the formula of the PAU authors'
    kernels (ml-research/pau) and of the PAU the AReLU authors compare with.

    Args:
        numerator_degree: m (default 5).
        denominator_degree: n (default 4).
        init: the activation the unit starts as: ``"leaky_relu"`` (slope 0.01, the paper's
            default; at m = 5, n = 4 the authors' published coefficients, within 0.034 of Leaky
            ReLU on [−3, 3]) or ``"relu"``; see :func:`pau_init_coefficients`.
        inplace: accepted for ``act_layer=`` slots and ignored.

    Parameters: ``numerator`` (a_0..a_m) and ``denominator`` (b_1..b_n, the raw values whose
    absolute values Q uses; ∂F/∂b_k = −P·sign(b_k)·|x|^k / Q², 0 at b_k = 0).
    """

    def __init__(
        self,
        numerator_degree: int = 5,
        denominator_degree: int = 4,
        init: str = "leaky_relu",
        inplace: bool = False,
    ) -> None:
        super().__init__()
        check_int("numerator_degree", numerator_degree, 1)
        check_int("denominator_degree", denominator_degree, 1)
        check_choice("init", init, tuple(_PAU_TARGETS))
        a, b = pau_init_coefficients(init, numerator_degree, denominator_degree)
        self.numerator_degree = numerator_degree
        self.denominator_degree = denominator_degree
        self.inplace = inplace
        self.numerator = nn.Parameter(torch.tensor(a, dtype=torch.float32))
        self.denominator = nn.Parameter(torch.tensor(b, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "PAU")
        return pau_safe(x, self.numerator.to(dtype=x.dtype), self.denominator.to(dtype=x.dtype))

    def extra_repr(self) -> str:
        return (
            f"numerator_degree={self.numerator_degree}, "
            f"denominator_degree={self.denominator_degree}"
        )


# --------------------------------------------------------------------------------------------------
# SLAF


@functools.lru_cache(maxsize=16)
def slaf_relu_fit(k: int = 3) -> tuple[Fraction, ...]:
    """Exact least-squares fit of ReLU on [−1, 1] by ``Σ_{i<k} a_i x^i``: returns (a_0..a_{k-1}).

    Solves the normal equations G a = r with G_ij = ∫_{-1}^{1} x^{i+j} dx and
    r_i = ∫_{-1}^{1} x^i max(0, x) dx = 1/(i+2), in exact rational arithmetic (G is a
    Hilbert-like matrix, so floating point loses digits quickly as k grows).
    For k = 3: 3/32 + x/2 + 15/32 x².
    """
    check_int("k", k, 1)
    gram = [
        [Fraction(2, i + j + 1) if (i + j) % 2 == 0 else Fraction(0) for j in range(k)]
        for i in range(k)
    ]
    rows = [[*gram[i], Fraction(1, i + 2)] for i in range(k)]
    # Gauss-Jordan elimination; G is symmetric positive definite, so pivots are non-zero.
    for col in range(k):
        pivot = rows[col][col]
        rows[col] = [v / pivot for v in rows[col]]
        for r in range(k):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col], strict=True)]
    return tuple(row[k] for row in rows)


@register_activation(
    "slaf",
    formula="sum_{i<k} a_i x^i, k=3",
    source="Goyal, Goyal, Lall, arXiv 2019",
    learnable=True,
)
class SLAF(nn.Module):
    """Self-Learnable Activation Function: ``f(x) = Σ_{i=0}^{k−1} a_i x^i``.

    Source: M. Goyal, R. Goyal, B. Lall, "Learning Activation Functions: A new paradigm for
    understanding Neural Networks", arXiv:1906.09529, 2019. SLAF is a learned weighted sum of
    basis functions; this is the polynomial (Taylor) basis, shared by the layer.

    Args:
        k: number of coefficients (default 3, i.e. a quadratic: the AReLU paper's 3 parameters).
            k < 3 is rejected: k = 2 is an affine map and k = 1 a constant, neither of which is
            a non-linearity, so a network built with them collapses to a linear model.
        inplace: accepted for ``act_layer=`` slots and ignored.

    Init (this library's choice): the least-squares fit of ReLU on [−1, 1]
    (:func:`slaf_relu_fit`; for k = 3 it is 3/32 + x/2 + 15/32 x²), so a network starts near its
    ReLU counterpart for normalised inputs. The polynomial is unbounded outside [−1, 1]: put it
    after a normalisation layer. Parameter: ``coefficients`` (a_0..a_{k−1}), evaluated by
    Horner's scheme.
    """

    def __init__(self, k: int = 3, inplace: bool = False) -> None:
        super().__init__()
        check_int("k", k, 3, why="k=2 is affine and k=1 constant: no non-linearity")
        self.k = k
        self.inplace = inplace
        fit = [float(c) for c in slaf_relu_fit(k)]
        self.coefficients = nn.Parameter(torch.tensor(fit, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "SLAF")
        return _horner(self.coefficients.to(dtype=x.dtype), x)

    def extra_repr(self) -> str:
        return f"k={self.k}"


# --------------------------------------------------------------------------------------------------
# Mixture

_MIXTURE_BASES: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda x: x,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
_MIXTURE_COMBINATIONS = ("affine", "convex", "linear")


@register_activation(
    "mixture",
    formula="p x + (1 - p) max(0, x)  (affine combination of identity and ReLU)",
    source="Manessi, Rozza, ICPR 2018",
    learnable=True,
)
class Mixture(nn.Module):
    """A learned combination of base activations: ``f(x) = Σ_i w_i g_i(x)``.

    Source: F. Manessi, A. Rozza, "Learning Combinations of Activation Functions", ICPR 2018
    (called "Comb" in the AReLU paper), who learn combinations of base activations such as the
    identity, ReLU and tanh. A combination whose weights sum to 1 (affine) keeps the scale of its
    bases; free (linear) weights also learn an overall scale, which the next layer's weights can
    already absorb.

    The default is the unit the AReLU comparison uses: the affine combination of identity and
    ReLU with one free weight, ``f(x) = p·x + (1 − p)·max(0, x)``, p starting at 0 (a ReLU) —
    the AReLU authors' Mixture (densechen/AReLU, ``activations/mixture.py``: one parameter
    ``p``, initialised to 0, unconstrained). For p in [0, 1] it is the convex combination.

    Args:
        bases: names of the base activations g_i, at least two distinct ones from
            ``"identity"``, ``"relu"``, ``"tanh"``, ``"sigmoid"``; default (identity, relu).
        combination: ``"affine"`` (default): n − 1 free weights for the first n − 1 bases, the
            last base gets 1 − Σ of them; ``"convex"``: w = softmax(n logits), non-negative
            and summing to 1; ``"linear"``: n free weights.
        init: initial parameter values (n − 1 for ``"affine"``, n logits for ``"convex"``, n
            for ``"linear"``). Default: a ReLU where a ``"relu"`` base allows it (one-hot on
            it; all-zero for ``"affine"`` with relu last), else equal weights 1/n; for
            ``"convex"`` zero logits, i.e. 1/n each (a convex combination is never one-hot).
        inplace: accepted for ``act_layer=`` slots and ignored.

    Parameter: ``weight``, shared by the layer: 1 for the defaults, the authors' count.
    """

    def __init__(
        self,
        bases: Sequence[str] = ("identity", "relu"),
        combination: str = "affine",
        init: Sequence[float] | None = None,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(bases, str):
            raise ValueError(f"bases must be a sequence of names, got the string {bases!r}")
        bases = tuple(bases)
        for name in bases:
            check_choice("bases entries", name, tuple(_MIXTURE_BASES))
        if len(bases) < 2 or len(set(bases)) != len(bases):
            raise ValueError(
                f"bases must name at least two distinct activations from "
                f"{', '.join(map(repr, _MIXTURE_BASES))}; got {bases!r}"
            )
        check_choice("combination", combination, _MIXTURE_COMBINATIONS)
        n = len(bases)
        free = n - 1 if combination == "affine" else n
        if init is None:
            if combination == "convex":
                values = [0.0] * n
            elif "relu" in bases:
                values = [1.0 if name == "relu" else 0.0 for name in bases][:free]
            else:
                values = [1.0 / n] * free
        else:
            values = [float(v) for v in init]
            if len(values) != free:
                what = "one value per base but the last" if combination == "affine" else (
                    "one value per base")
                raise ValueError(
                    f"init must have {what} ({free} for {n} bases, combination="
                    f"{combination!r}), got {len(values)}"
                )
        self.bases = bases
        self.combination = combination
        self.inplace = inplace
        self.weight = nn.Parameter(torch.tensor(values, dtype=torch.float32))

    def mixing_weights(self) -> Tensor:
        """The weights w_i actually applied, one per base."""
        if self.combination == "convex":
            return torch.softmax(self.weight, dim=0)
        if self.combination == "affine":
            return torch.cat([self.weight, 1.0 - self.weight.sum().reshape(1)])
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "Mixture")
        w = self.mixing_weights().to(dtype=x.dtype)
        out = w[0] * _MIXTURE_BASES[self.bases[0]](x)
        for i in range(1, len(self.bases)):
            out = out + w[i] * _MIXTURE_BASES[self.bases[i]](x)
        return out

    def extra_repr(self) -> str:
        return f"bases={self.bases}, combination={self.combination!r}"
