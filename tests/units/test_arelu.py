"""AReLU and ELSA against Eqs. (3)-(11) of the AReLU paper, written out independently."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnact import ELSA, AReLU, create_act_layer
from attnact.units.arelu import elsa_gate


def clamp(v: float) -> float:
    return min(max(v, 0.01), 0.99)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def arelu_formula(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Eq. (7), element by element in Python floats."""
    flat = [clamp(alpha) * v if v < 0 else (1 + sig(beta)) * v for v in x.flatten().tolist()]
    return torch.tensor(flat, dtype=torch.float64).view(x.shape)


@given(
    alpha=st.floats(-2, 2, allow_nan=False),
    beta=st.floats(-6, 6, allow_nan=False),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_forward_matches_eq7(alpha, beta, seed):
    torch.manual_seed(seed)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    x[0, 0, :2] = 0.0  # x = 0 takes the x >= 0 branch (its value is 0 either way)
    m = AReLU(alpha, beta).double()
    # the parameters hold the initial values rounded to float32; the formula uses what they hold
    a, b = m.alpha.item(), m.beta.item()
    torch.testing.assert_close(m(x), arelu_formula(x, a, b), rtol=1e-12, atol=1e-12)


def test_equals_relu_plus_elsa():
    """Eq. (7) = R(x) + L(x): the one-multiply form equals the paper's sum."""
    torch.manual_seed(0)
    m = AReLU(0.3, -0.7)
    x = torch.randn(100)
    torch.testing.assert_close(m(x), torch.relu(x) + elsa_gate(x, m.alpha, m.beta))


@pytest.mark.parametrize("alpha", [0.25, 0.9, -0.5, 1.7])
def test_gradients_eq9_to_eq11(alpha):
    beta = 1.3
    torch.manual_seed(1)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    m = AReLU(alpha, beta).double()
    (m(x) * g).sum().backward()
    xd, neg = x.detach(), x.detach() < 0
    s = sig(beta)
    inside = 0.01 <= alpha <= 0.99
    # Eq. (9): sum over x < 0 of x, detached while alpha lies outside [0.01, 0.99]
    want_alpha = (g * xd)[neg].sum() if inside else torch.tensor(0.0, dtype=torch.float64)
    # Eq. (10): sum over x >= 0 of sigma(beta)(1 - sigma(beta)) x
    want_beta = (g * xd)[~neg].sum() * s * (1 - s)
    # Eq. (11), with C(alpha) for x < 0
    want_x = g * torch.where(neg, clamp(alpha), 1 + s)
    torch.testing.assert_close(m.alpha.grad, want_alpha.reshape(1))
    torch.testing.assert_close(m.beta.grad, want_beta.reshape(1))
    torch.testing.assert_close(x.grad, want_x)


def test_gradcheck_float64():
    """Numerical gradients of x, α and β through the module's own forward path."""
    torch.manual_seed(0)
    m = AReLU().double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.1), x).requires_grad_()  # off the kink
    alpha = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)  # inside the clamp range
    beta = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)

    def f(t, a, b):
        return torch.func.functional_call(m, {"alpha": a, "beta": b}, (t,))

    assert torch.autograd.gradcheck(f, (x, alpha, beta))


def test_parameters_named_alpha_beta_raw():
    m = AReLU(1.5, -3.0)
    names = dict(m.named_parameters())
    assert set(names) == {"alpha", "beta"}
    assert names["alpha"].item() == 1.5  # raw, not clamped
    assert names["beta"].item() == -3.0
    assert sum(p.numel() for p in m.parameters()) == 2


def test_default_initialisation_from_the_paper():
    m = AReLU()
    assert m.alpha.item() == pytest.approx(0.9)
    assert m.beta.item() == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(7,), (5, 10), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_any_shape_and_dtype(shape, dtype):
    m = AReLU()
    x = torch.randn(*shape, dtype=dtype)
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype


def test_state_dict_round_trip():
    a, b = AReLU(0.2, 0.1), AReLU()
    b.load_state_dict(a.state_dict())
    x = torch.randn(10)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["0.9", None, float("nan"), float("inf"), True])
def test_bad_init(bad):
    with pytest.raises(ValueError, match="alpha"):
        AReLU(alpha=bad)
    with pytest.raises(ValueError, match="beta"):
        AReLU(beta=bad)


def test_amplifies_positive_and_suppresses_negative_gradients():
    """Sec. 3.4: 1 + σ(β) > 1 on activated inputs, C(α) < 1 otherwise."""
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    AReLU()(x).sum().backward()
    assert x.grad[0] < 1 < x.grad[1]


# --- ELSA -----------------------------------------------------------------------------------


def test_elsa_relu_equals_arelu():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    a, e = AReLU(0.3, 1.1), ELSA("relu", alpha=0.3, beta=1.1)
    ya, ye = a(x), e(x)
    torch.testing.assert_close(ya, ye)
    ga = torch.autograd.grad(ya.sum(), [x, a.alpha, a.beta])
    ge = torch.autograd.grad(ye.sum(), [x, e.alpha, e.beta])
    for u, v in zip(ga, ge, strict=True):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("name", ["swish", "tanh", "elu", "sigmoid", "gelu"])
def test_elsa_adds_gate_to_activation(name):
    """Sec. 4.6: F(x) = A(x) + L(x, α, β), with L of Eq. (5) using C(α) and σ(β)."""
    torch.manual_seed(0)
    # alpha outside [0.01, 0.99]: the paper clamps it, the authors' published code did not
    alpha, beta = 1.4, -0.4
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    m = ELSA(name, alpha=alpha, beta=beta).double()
    base = create_act_layer(name).double()
    gate = torch.tensor(
        [clamp(alpha) * v if v < 0 else sig(beta) * v for v in x.flatten().tolist()],
        dtype=torch.float64,
    ).view(x.shape)
    torch.testing.assert_close(m(x), base(x) + gate)


def test_elsa_gradcheck():
    torch.manual_seed(0)
    m = ELSA("swish", alpha=0.5, beta=0.2).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.1), x).requires_grad_()
    assert torch.autograd.gradcheck(m, (x,))


def test_elsa_wraps_learnable_and_channel_units():
    torch.manual_seed(0)
    m = ELSA("atac", channels=8)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(m(x), m.activation(x) + elsa_gate(x, m.alpha, m.beta))
    n_atac = sum(p.numel() for p in m.activation.parameters())
    assert sum(p.numel() for p in m.parameters()) == n_atac + 2


def test_elsa_accepts_module_instance():
    base = torch.nn.Tanh()
    m = ELSA(base)
    assert m.activation is base
    with pytest.raises(ValueError, match="keyword"):
        ELSA(base, negative_slope=0.1)


def test_elsa_registry_variant_builds_fresh_units():
    a, b = create_act_layer("elsa_swish"), create_act_layer("elsa_swish")
    assert isinstance(a, ELSA) and a.alpha is not b.alpha
