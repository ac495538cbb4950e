"""Fixed activations against their original papers' formulas, written out with math functions."""

import math

import pytest
import torch

from attnact import create_act_layer
from attnact.units.classic import Swish

SELU_LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. 2017, Eq. (2) constants
SELU_ALPHA = 1.6732632423543772848170429916717


def _phi(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _gelu_tanh(v: float) -> float:
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


FORMULAS = {
    "relu": lambda v: max(0.0, v),
    "relu6": lambda v: min(max(0.0, v), 6.0),
    "leaky_relu": lambda v: v if v >= 0 else 0.01 * v,
    "elu": lambda v: v if v > 0 else math.exp(v) - 1.0,
    "celu": lambda v: max(0.0, v) + min(0.0, math.exp(v) - 1.0),
    "selu": lambda v: SELU_LAMBDA * (v if v > 0 else SELU_ALPHA * (math.exp(v) - 1.0)),
    "gelu": lambda v: v * _phi(v),
    "gelu_tanh": _gelu_tanh,
    "swish": lambda v: v / (1.0 + math.exp(-v)),
    "silu": lambda v: v / (1.0 + math.exp(-v)),
    "softplus": _softplus,
    "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
    "tanh": math.tanh,
    "mish": lambda v: v * math.tanh(_softplus(v)),
    "hard_swish": lambda v: v * min(max(v + 3.0, 0.0), 6.0) / 6.0,
    "hard_sigmoid": lambda v: min(max(v + 3.0, 0.0), 6.0) / 6.0,
    # RReLU in eval mode uses the mean slope (l + u) / 2 with l = 1/8, u = 1/3 (Xu et al. 2015)
    "rrelu": lambda v: v if v >= 0 else v * (1 / 8 + 1 / 3) / 2,
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_forward_matches_formula(name):
    torch.manual_seed(0)
    x = torch.randn(200, dtype=torch.float64) * 4
    m = create_act_layer(name).double().eval()
    want = torch.tensor([FORMULAS[name](v) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(m(x), want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", sorted(set(FORMULAS) - {"rrelu"}))
def test_gradcheck_float64(name):
    torch.manual_seed(0)
    x = torch.randn(30, dtype=torch.float64) * 3
    # keep away from kinks (0, ±3, 6) where finite differences are meaningless
    for kink in (0.0, -3.0, 3.0, 6.0):
        x = torch.where((x - kink).abs() < 1e-2, x + 0.05, x)
    m = create_act_layer(name).double()
    assert torch.autograd.gradcheck(m, (x.requires_grad_(),))


def test_rrelu_training_slopes_lie_in_range():
    torch.manual_seed(0)
    m = create_act_layer("rrelu").train()
    x = -torch.rand(10_000) - 0.1
    slopes = m(x) / x
    assert slopes.min() >= 1 / 8 - 1e-6 and slopes.max() <= 1 / 3 + 1e-6
    assert slopes.std() > 0.01  # random, not a fixed slope


def test_swish_beta_learnable():
    m = Swish(beta=1.5, learnable=True)
    x = torch.randn(50, dtype=torch.float32)
    torch.testing.assert_close(m(x), x * torch.sigmoid(1.5 * x))
    m(x).sum().backward()
    assert m.beta.grad is not None and m.beta.grad.abs() > 0
    assert [n for n, _ in m.named_parameters()] == ["beta"]
    assert list(Swish().parameters()) == []


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_inplace_argument_accepted(name):
    m = create_act_layer(name, inplace=True)
    x = torch.randn(4, 3)
    y = m(x.clone())
    assert y.shape == x.shape
