"""Tests for the learnable comparison activations: PReLU, APL, PAU, SLAF, Mixture.

Every unit is checked against its formula written out here independently (plain powers and
clamps, no Horner, no torch.nn.PReLU), with parameters randomised away from their init so the
check is not only about the initial values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact.units.learnable import (
    APL,
    PAU,
    SLAF,
    Mixture,
    PReLU,
    pau_init_coefficients,
    slaf_relu_fit,
)
from attnact.units.registry import activation_spec, create_act_layer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------
# the formulas, written independently of the implementation

Params = dict[str, Tensor]


def _channel(p: Tensor, x: Tensor) -> Tensor:
    return p.reshape(()) if p.numel() == 1 else p.reshape(-1, *([1] * (x.dim() - 2)))


def ref_prelu(module: nn.Module, x: Tensor, p: Params) -> Tensor:
    a = _channel(p["weight"], x)
    return torch.clamp(x, min=0) + a * torch.clamp(x, max=0)


def ref_apl(module: nn.Module, x: Tensor, p: Params) -> Tensor:
    out = torch.clamp(x, min=0)
    for s in range(p["a"].shape[0]):
        out = out + _channel(p["a"][s], x) * torch.clamp(-x + _channel(p["b"][s], x), min=0)
    return out


def _pau_parts(x: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """P(x) and Q(x) of the safe PAU (Molina et al., ICLR 2020, Eq. 3; the authors' python
    reference PADEACTIVATION_F_python in ml-research/pau): Q = 1 + Σ_k |b_k| |x|^k."""
    numerator = sum(a[j] * x**j for j in range(a.numel()))
    q = 1 + sum(b[k - 1].abs() * x.abs() ** k for k in range(1, b.numel() + 1))
    return numerator, q


def ref_pau(module: nn.Module, x: Tensor, p: Params) -> Tensor:
    numerator, q = _pau_parts(x, p["numerator"], p["denominator"])
    return numerator / q


def ref_slaf(module: nn.Module, x: Tensor, p: Params) -> Tensor:
    c = p["coefficients"]
    return sum(c[i] * x**i for i in range(c.numel()))


_BASES: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda x: x,
    "relu": lambda x: torch.clamp(x, min=0),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
}


def ref_mixture(module: nn.Module, x: Tensor, p: Params) -> Tensor:
    w = p["weight"]
    if module.combination == "convex":
        w = torch.exp(w) / torch.exp(w).sum()
    elif module.combination == "affine":  # the last base takes 1 - the others' sum
        w = torch.cat([w, (1 - w.sum()).reshape(1)])
    return sum(w[i] * _BASES[name](x) for i, name in enumerate(module.bases))


# (id, constructor, reference, input shape)
CASES: list[tuple[str, Callable[[], nn.Module], Callable[..., Tensor], tuple[int, ...]]] = [
    ("prelu", PReLU, ref_prelu, (2, 3, 4, 5)),
    ("prelu_channelwise", lambda: PReLU(num_parameters=3), ref_prelu, (2, 3, 4, 5)),
    ("apl", APL, ref_apl, (2, 3, 4, 5)),
    ("apl_channelwise_3hinges", lambda: APL(num_parameters=3, hinges=3), ref_apl, (2, 3, 7)),
    ("pau", PAU, ref_pau, (2, 3, 4, 5)),
    ("pau_3_2", lambda: PAU(numerator_degree=3, denominator_degree=2), ref_pau, (4, 6)),
    ("slaf", SLAF, ref_slaf, (2, 3, 4, 5)),
    ("slaf_k5", lambda: SLAF(k=5), ref_slaf, (17,)),
    ("mixture", Mixture, ref_mixture, (2, 3, 4, 5)),
    ("mixture_affine3", lambda: Mixture(bases=("relu", "tanh", "identity")), ref_mixture, (7, 3)),
    ("mixture_linear", lambda: Mixture(combination="linear"), ref_mixture, (2, 3, 4)),
    (
        "mixture_convex4",
        lambda: Mixture(bases=("identity", "relu", "tanh", "sigmoid"), combination="convex"),
        ref_mixture,
        (2, 3, 4, 5),
    ),
]
IDS = [c[0] for c in CASES]


def randomize_(module: nn.Module) -> nn.Module:
    """Move every parameter away from its init (small steps: PAU/SLAF stay well-conditioned)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def params_of(module: nn.Module) -> Params:
    return {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}


# --------------------------------------------------------------------------------------------------
# registry and parameter counts


@pytest.mark.parametrize(
    ("name", "cls", "count"),
    [
        ("prelu", PReLU, 1),
        ("apl", APL, 2),
        ("pau", PAU, 10),
        ("slaf", SLAF, 3),
        ("mixture", Mixture, 1),  # the AReLU authors' Mixture: one parameter p
    ],
)
def test_registered_with_arelu_table1_parameter_count(name: str, cls: type, count: int) -> None:
    spec = activation_spec(name)
    assert spec.factory is cls
    assert spec.learnable and spec.elementwise
    assert not spec.needs_channels and not spec.changes_channels
    assert spec.formula and "20" in spec.source  # a year in the citation
    module = create_act_layer(name, channels=16)  # channels is not passed to these units
    assert type(module) is cls
    assert sum(p.numel() for p in module.parameters()) == count


@pytest.mark.parametrize(
    ("module", "count"),
    [
        (PReLU(num_parameters=16), 16),
        (APL(num_parameters=16), 32),
        (APL(hinges=3), 6),
        (APL(num_parameters=16, hinges=2), 64),
        (PAU(numerator_degree=3, denominator_degree=2), 6),
        (SLAF(k=5), 5),
        (Mixture(bases=("identity", "relu", "tanh")), 2),
        (Mixture(bases=("identity", "relu", "tanh"), combination="convex"), 3),
    ],
    ids=["prelu16", "apl16", "apl_s3", "apl16_s2", "pau32", "slaf5", "mixture3", "convex3"],
)
def test_parameter_counts_of_variants(module: nn.Module, count: int) -> None:
    assert sum(p.numel() for p in module.parameters()) == count


def test_create_act_layer_forwards_keyword_arguments() -> None:
    module = create_act_layer("prelu", num_parameters=16, init=0.1)
    assert module.weight.shape == (16,)
    assert torch.all(module.weight == 0.1)


# --------------------------------------------------------------------------------------------------
# forward and backward against the formulas


@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_forward_matches_formula(name: str, make, ref, shape) -> None:
    module = randomize_(make()).double()
    x = 2 * torch.randn(shape, dtype=torch.float64)
    expected = ref(module, x, params_of(module))
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_input_and_parameter_gradients_match_formula(name: str, make, ref, shape) -> None:
    module = randomize_(make()).double()
    x = 2 * torch.randn(shape, dtype=torch.float64)
    upstream = torch.randn(shape, dtype=torch.float64)

    x1 = x.clone().requires_grad_()
    module(x1).backward(upstream)

    params = params_of(module)
    x2 = x.clone().requires_grad_()
    grads = torch.autograd.grad(ref(module, x2, params), [x2, *params.values()], upstream)

    torch.testing.assert_close(x1.grad, grads[0], rtol=1e-10, atol=1e-10)
    for (pname, p), g in zip(module.named_parameters(), grads[1:], strict=True):
        assert p.grad is not None, pname
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-10, msg=pname)


def _away_from(x: Tensor, kinks: list[float], margin: float = 0.05) -> Tensor:
    """Push inputs out of a ``margin`` neighbourhood of each kink, where finite differences lie."""
    for _ in range(3):
        for k in kinks:
            x = torch.where((x - k).abs() < margin, x + 2 * margin, x)
    return x


@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_gradcheck_float64(name: str, make, ref, shape) -> None:
    module = randomize_(make()).double()
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in module.named_parameters())
    x = 1.5 * torch.randn(shape, dtype=torch.float64)
    kinks = [0.0]
    if isinstance(module, APL):
        kinks += module.b.detach().flatten().tolist()
    x = _away_from(x, kinks)
    if isinstance(module, PAU):
        # |A(x)| has a kink wherever A changes sign: keep only inputs where A is clearly non-zero.
        _, inner = _pau_parts(x, module.numerator.detach(), module.denominator.detach())
        x = x[inner.abs() > 1e-2]
        assert x.numel() > 10
    x.requires_grad_()

    def f(inp: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(module, dict(zip(names, ps, strict=True)), (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# shape, dtype, state dict, inplace, training


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_shape_and_dtype_kept(name: str, make, ref, shape, dtype: torch.dtype) -> None:
    module = make().to(dtype)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("cls", [PReLU, APL, PAU, SLAF, Mixture])
def test_layer_shared_units_accept_any_shape(cls: type, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    assert cls()(x).shape == x.shape


def test_float32_unit_serves_float64_input() -> None:
    # The layer-shared parameters are cast to the input dtype (e.g. for mixed precision).
    for cls in (PReLU, APL, PAU, SLAF, Mixture):
        x = torch.randn(3, 4, dtype=torch.float64)
        assert cls()(x).dtype == torch.float64


@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_state_dict_round_trip(name: str, make, ref, shape) -> None:
    module = randomize_(make())
    fresh = make()
    x = torch.randn(shape)
    assert not torch.equal(fresh(x), module(x))
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh(x), module(x))


@pytest.mark.parametrize("cls", [PReLU, APL, PAU, SLAF, Mixture])
def test_inplace_is_accepted_and_input_untouched(cls: type) -> None:
    x = torch.randn(2, 3, 4)
    x_copy = x.clone()
    y = cls(inplace=True)(x)
    assert torch.equal(x, x_copy)
    assert torch.equal(y, cls()(x))


@pytest.mark.parametrize(("name", "make", "ref", "shape"), CASES, ids=IDS)
def test_training_fits_a_leaky_target(name: str, make, ref, shape) -> None:
    # Only the unit's own parameters are trained: a learnable activation must be able to move.
    module = make()
    x = torch.empty(shape).uniform_(-2, 2)
    target = torch.where(x > 0, x, 0.6 * x)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = F.mse_loss(module(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in module.parameters())
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------------------------------
# PReLU


def test_prelu_init_and_channelwise_slopes() -> None:
    assert PReLU().weight.item() == 0.25
    module = PReLU(num_parameters=3)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = -torch.ones(2, 3, 4)
    y = module(x)
    torch.testing.assert_close(y[:, 1], torch.full((2, 4), -0.2))
    torch.testing.assert_close(y[:, 2], torch.full((2, 4), -0.3))


def test_prelu_matches_torch_prelu_state_dict() -> None:
    ours = randomize_(PReLU(num_parameters=4))
    theirs = nn.PReLU(num_parameters=4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 3)
    assert torch.equal(ours(x), theirs(x))


def test_prelu_channel_mismatch_names_expected_and_got() -> None:
    with pytest.raises(ValueError, match="expected 16 channels, got 8"):
        PReLU(num_parameters=16)(torch.randn(2, 8, 3, 3))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_prelu_rejects_bad_num_parameters(bad) -> None:
    with pytest.raises(ValueError, match="num_parameters must be an integer >= 1"):
        PReLU(num_parameters=bad)


# --------------------------------------------------------------------------------------------------
# APL


def test_apl_init_and_knots() -> None:
    module = APL(hinges=3)
    assert torch.all(module.a == 0.2)
    torch.testing.assert_close(module.b[:, 0], torch.tensor([0.5, -0.5, -1.5]))
    explicit = APL(hinges=2, init_b=[1.0, -1.0])
    torch.testing.assert_close(explicit.b[:, 0], torch.tensor([1.0, -1.0]))
    # Far right the unit is the identity; far left its slope is -sum(a).
    x = torch.tensor([10.0, -10.0, -11.0])
    y = module(x)
    assert y[0].item() == pytest.approx(10.0)
    assert (y[2] - y[1]).item() == pytest.approx(0.6, rel=1e-5)


def test_apl_errors() -> None:
    with pytest.raises(ValueError, match="hinges must be an integer >= 1"):
        APL(hinges=0)
    with pytest.raises(ValueError, match="num_parameters must be an integer >= 1"):
        APL(num_parameters=0)
    with pytest.raises(ValueError, match="init_b must be a number or a sequence of hinges=2"):
        APL(hinges=2, init_b=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="expected 4 channels, got 3"):
        APL(num_parameters=4)(torch.randn(2, 3))


# --------------------------------------------------------------------------------------------------
# PAU

PAU_MAX_ERROR = 0.04  # the authors' coefficients: 0.0336 at x = 0 (a_0), on [-3, 3]

# ml-research/pau, pau/cuda/python_imp/Pade.py, get_constants_for_inits("pade_optimized_leakyrelu")
AUTHORS_NUMERATOR = (3.35583603e-02, 5.05000375e-01, 1.65343934e00, 2.01001052e00, 9.31901999e-01,
                     1.52424124e-01)
AUTHORS_DENOMINATOR = (3.30847488e-06, 3.98021568e00, 5.12471206e-07, 3.01830109e-01)


def test_pau_default_init_is_the_authors_leaky_relu_fit() -> None:
    module = PAU()
    torch.testing.assert_close(module.numerator, torch.tensor(AUTHORS_NUMERATOR))
    torch.testing.assert_close(module.denominator, torch.tensor(AUTHORS_DENOMINATOR))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pau_init_approximates_leaky_relu(dtype: torch.dtype) -> None:
    module = PAU().to(dtype)
    x = torch.linspace(-3, 3, 60001, dtype=dtype)
    with torch.no_grad():
        error = (module(x) - F.leaky_relu(x, 0.01)).abs()
    assert error.max().item() < PAU_MAX_ERROR
    assert error[x.abs() > 1].max().item() < 0.02  # away from the kink it is much closer


def test_pau_safe_denominator_differs_from_abs_of_sum_for_negative_x() -> None:
    # The formula the issue found wrong, 1 + |Σ b_k x^k|, agrees for x > 0 only.
    module = randomize_(PAU()).double()
    a, b = module.numerator.detach(), module.denominator.detach()
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    inner = sum(b[k - 1] * x**k for k in range(1, 5))
    wrong = sum(a[j] * x**j for j in range(6)) / (1 + inner.abs())
    with torch.no_grad():
        y = module(x)
    assert (y - wrong)[x < -0.5].abs().max() > 1e-3


def test_pau_relu_init_and_fit_properties() -> None:
    x = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    with torch.no_grad():
        assert (PAU(init="relu").double()(x) - F.relu(x)).abs().max() < PAU_MAX_ERROR
        # other degrees are fitted here, to the safe form
        err = (PAU(3, 2).double()(x) - F.leaky_relu(x, 0.01)).abs().max()
    assert err < 0.15
    a, b = pau_init_coefficients("relu", 5, 4)
    assert len(a) == 6 and len(b) == 4 and all(v >= 0 for v in b)
    assert pau_init_coefficients("relu", 5, 4) is pau_init_coefficients("relu", 5, 4)


def test_pau_gradients_match_analytic_derivatives() -> None:
    module = randomize_(PAU()).double()
    with torch.no_grad():  # mixed signs, so that sign(b_k) matters
        module.denominator.copy_(torch.tensor([-0.4, 1.5, -0.3, 0.2], dtype=torch.float64))
    a, b = module.numerator.detach(), module.denominator.detach()
    x = torch.randn(500, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(500, dtype=torch.float64)
    module(x).backward(upstream)

    xd = x.detach()
    numerator, q = _pau_parts(xd, a, b)
    # dF/da_j = x^j / Q ;  dF/db_k = -sign(b_k) |x|^k P / Q^2
    grad_a = torch.stack([(upstream * xd**j / q).sum() for j in range(6)])
    grad_b = torch.stack(
        [(-upstream * torch.sign(b[k - 1]) * xd.abs() ** k * numerator / q**2).sum()
         for k in range(1, 5)]
    )
    # dF/dx = P'(x) / Q - sign(x) Σ k |b_k| |x|^(k-1) P / Q^2
    dp = sum(j * a[j] * xd ** (j - 1) for j in range(1, 6))
    dq = torch.sign(xd) * sum(k * b[k - 1].abs() * xd.abs() ** (k - 1) for k in range(1, 5))
    grad_x = upstream * (dp / q - dq * numerator / q**2)

    torch.testing.assert_close(module.numerator.grad, grad_a, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(module.denominator.grad, grad_b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-10, atol=1e-10)


def test_pau_denominator_is_safe() -> None:
    # Whatever the coefficients, Q >= 1: no poles, bounded by |P|.
    module = PAU()
    with torch.no_grad():
        module.denominator.copy_(torch.tensor([-3.0, 1.0, -2.0, 0.5]))
    x = torch.linspace(-5, 5, 10001)
    y = module(x)
    assert torch.isfinite(y).all()
    numerator, _ = _pau_parts(x, module.numerator.detach(), module.denominator.detach())
    assert torch.all(y.abs() <= numerator.abs() + 1e-4)


def test_pau_errors() -> None:
    with pytest.raises(ValueError, match="numerator_degree must be an integer >= 1"):
        PAU(numerator_degree=0)
    with pytest.raises(ValueError, match="denominator_degree must be an integer >= 1"):
        PAU(denominator_degree=0)
    with pytest.raises(ValueError, match="init must be one of 'leaky_relu', 'relu'"):
        PAU(init="tanh")


# --------------------------------------------------------------------------------------------------
# SLAF


def test_slaf_init_is_least_squares_relu_fit() -> None:
    assert slaf_relu_fit(3) == (Fraction(3, 32), Fraction(1, 2), Fraction(15, 32))
    torch.testing.assert_close(SLAF().coefficients, torch.tensor([3 / 32, 1 / 2, 15 / 32]))


@pytest.mark.parametrize("k", [3, 4, 6])
def test_slaf_fit_residual_is_orthogonal_to_the_basis(k: int) -> None:
    # The least-squares optimum on [-1, 1]: ∫ (ReLU(x) - p(x)) x^i dx = 0 for every i < k.
    # Midpoint rule on a fine grid, in float64.
    n = 200_000
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    coefficients = [float(c) for c in slaf_relu_fit(k)]
    residual = F.relu(x) - sum(c * x**i for i, c in enumerate(coefficients))
    for i in range(k):
        assert abs((residual * x**i).mean().item() * 2) < 1e-8


@pytest.mark.parametrize("bad", [2, 1, 0, True])
def test_slaf_rejects_k_below_3(bad) -> None:
    with pytest.raises(ValueError, match=r"k must be an integer >= 3.*affine"):
        SLAF(k=bad)


# --------------------------------------------------------------------------------------------------
# Mixture


def authors_mixture(x: Tensor, p: Tensor) -> Tensor:
    """densechen/AReLU, activations/mixture.py: p·x + (1 − p)·relu(x), p a (1,) parameter."""
    return p * x + (1 - p) * torch.clamp(x, min=0)


def test_mixture_is_the_authors_one_parameter_unit() -> None:
    module = Mixture()
    assert [n for n, _ in module.named_parameters()] == ["weight"]
    torch.testing.assert_close(module.weight, torch.tensor([0.0]))  # the authors' init: a ReLU
    x = torch.randn(4, 5, 6)
    assert torch.equal(module(x), F.relu(x))
    with torch.no_grad():
        module.weight.fill_(0.3)
    p = torch.tensor([0.3], requires_grad=True)
    xx = x.clone().requires_grad_()
    y = module(xx)
    y.backward(torch.ones_like(y))
    want = authors_mixture(x, p)
    want.backward(torch.ones_like(want))
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(module.weight.grad, p.grad)


def test_mixture_convex_weights_are_a_distribution() -> None:
    module = randomize_(Mixture(bases=("relu", "tanh", "sigmoid"), combination="convex"))
    w = module.mixing_weights()
    assert torch.all(w > 0)
    assert w.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(
        Mixture(combination="convex").mixing_weights(), torch.tensor([0.5, 0.5])
    )


def test_mixture_affine_weights_sum_to_one() -> None:
    module = randomize_(Mixture(bases=("identity", "relu", "tanh")))
    assert module.weight.shape == (2,)
    assert module.mixing_weights().sum().item() == pytest.approx(1.0)


def test_mixture_without_relu_starts_uniform() -> None:
    module = Mixture(bases=("identity", "tanh"), combination="linear")
    torch.testing.assert_close(module.weight, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(Mixture(bases=("identity", "tanh")).mixing_weights(),
                               torch.tensor([0.5, 0.5]))
    custom = Mixture(bases=("identity", "tanh"), init=[0.2])
    torch.testing.assert_close(custom.mixing_weights(), torch.tensor([0.2, 0.8]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bases": ("identity", "swish")}, "bases entries must be one of 'identity', 'relu'"),
        ({"bases": ("relu",)}, "bases must name at least two distinct activations"),
        ({"bases": ("relu", "relu")}, "bases must name at least two distinct activations"),
        ({"bases": "relu"}, "bases must be a sequence of names"),
        ({"combination": "sum"}, "combination must be one of 'affine', 'convex', 'linear'"),
        ({"init": [1.0, 0.0]}, r"init must have one value per base but the last \(1 for 2"),
        ({"init": [1.0], "combination": "linear"}, r"init must have one value per base \(2"),
    ],
)
def test_mixture_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Mixture(**kwargs)


def test_units_are_independent_copies() -> None:
    # Deep copies (how converters clone units) do not share parameters.
    module = PAU()
    clone = copy.deepcopy(module)
    with torch.no_grad():
        clone.numerator.zero_()
    assert module.numerator.abs().sum() > 0
