"""ELSA's native operator (issue #14) against the reference composition A(x) + L(x, α, β) (Eq. 5
of the AReLU paper, Sec. 4.6): float64 gradcheck and gradgradcheck for every activation it
knows, float32 within 1e-6 / 1e-5 relative of ``ELSA(..., implementation="reference")`` on
several layouts and at x = ±0, which activations take it, one saved tensor and no Python
autograd Function per call, fake tensors and compile.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnact import ELSA
from attnact.units import classic, native
from attnact.units.arelu_function import ELSAFunction

pytestmark = [
    pytest.mark.skipif(not native.available(),
                       reason=f"native operators unavailable: {native.why_not()}"),
    pytest.mark.usefixtures("native_on"),
]

# (module, the operator's name for it): every parameter-free activation of the AReLU
# experiments that ELSA wraps, and the torch.nn variants with other hyperparameters
KNOWN = [
    (nn.ReLU(), "relu"), (classic.Sigmoid(), "sigmoid"), (classic.Tanh(), "tanh"),
    (nn.ReLU6(), "hardtanh"), (nn.Hardtanh(-0.5, 2.0), "hardtanh"),
    (nn.LeakyReLU(0.2), "leaky_relu"), (nn.ELU(0.7), "elu"), (nn.CELU(1.3), "celu"),
    (nn.SELU(), "selu"), (classic.GELU(), "gelu"), (nn.GELU("tanh"), "gelu"),
    (classic.Softplus(), "softplus"), (nn.Softplus(2.0, 3.0), "softplus"),
    (classic.Swish(), "silu"), (nn.SiLU(), "silu"),
]
IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(KNOWN)]


def native_node(y: torch.Tensor) -> bool:
    """y's autograd node is the operator's C++ Function (not a Python autograd.Function)."""
    return type(y.grad_fn).__name__ == "CppFunction" and "ELSAFn" in y.grad_fn.name()


def pair(act: nn.Module, dtype=torch.float32) -> tuple[ELSA, ELSA]:
    fast = ELSA(act, alpha=0.3, beta=-0.5).to(dtype)
    ref = ELSA(act, alpha=0.3, beta=-0.5, implementation="reference").to(dtype)
    return fast, ref


@pytest.mark.parametrize("act,kind", KNOWN, ids=IDS)
def test_each_activation_takes_the_operator_and_gradchecks(act, kind):
    assert native.elsa_activation(act)[0] == kind
    fast, _ = pair(act, torch.float64)
    x = (torch.randn(3, 4, 5, dtype=torch.float64) * 2).requires_grad_()
    assert native_node(fast(x))

    def f(x, a, b):
        return torch.ops.attnact.elsa(x, a, b, *native.elsa_activation(act))

    a = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, a, b))
    assert torch.autograd.gradgradcheck(f, (x, a, b))


@pytest.mark.parametrize("act,kind", KNOWN, ids=IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_float32_matches_reference(act, kind, layout):
    torch.manual_seed(0)
    x0 = torch.randn(4, 16, 5, 5) * 3
    x0[0, 0, 0, :2] = torch.tensor([0.0, -0.0])  # x = ±0 take the x >= 0 branch
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x0 = x0.transpose(0, -1)  # not dense in any memory format of its shape
    g = torch.randn(x0.shape)
    fast, ref = pair(act)
    outs = []
    for m in (fast, ref):
        x = x0.clone().requires_grad_()
        y = m(x)
        outs.append((y, *torch.autograd.grad(y, (x, m.alpha, m.beta), g)))
    assert native_node(outs[0][0])
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-6, atol=1e-6)
    for k, (u, v) in enumerate(zip(outs[0][1:], outs[1][1:], strict=True)):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5 * v.abs().max().item(),
                                   msg=f"grad {k}")


def test_activations_without_a_native_form_keep_the_function():
    """Learnable units, random ones, other GELU approximations and users' subclasses (which may
    compute something else) are not mapped; ELSA then runs its Function or the reference."""

    class MyReLU(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    for act in (nn.PReLU(), nn.RReLU(), MyReLU(), classic.Swish(beta=2.0),
                classic.Swish(learnable=True)):
        assert native.elsa_activation(act) is None, act
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert "ELSAFunction" in type(ELSA(nn.PReLU())(x).grad_fn).__name__
    y, ref = ELSA(MyReLU())(x), ELSA(MyReLU(), implementation="reference")(x)
    torch.testing.assert_close(y, ref)


def test_no_python_autograd_function_per_call_and_one_saved_tensor(monkeypatch):
    """The node is C++; it saves x alone (as ELSAFunction does), so the activation's gradient
    is recomputed from x."""

    def refuse(*args, **kwargs):
        raise AssertionError("ELSAFunction ran")

    monkeypatch.setattr(ELSAFunction, "apply", refuse)
    m = ELSA("gelu")
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    h = x * 1.0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(h)
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == h.data_ptr()
    y.sum().backward()
    assert x.grad is not None and m.alpha.grad is not None and m.beta.grad is not None


def test_dispatch_and_operator_checks():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert "ELSAFunction" in type(ELSA("relu", implementation="function")(x).grad_fn).__name__
    with torch.no_grad():
        torch.testing.assert_close(ELSA("tanh")(x), ELSA("tanh", implementation="reference")(x))
    native.set_native(False)
    assert "ELSAFunction" in type(ELSA("relu")(x).grad_fn).__name__
    native.set_native(True)
    a, b = torch.tensor([0.9]), torch.tensor([2.0])
    with pytest.raises(RuntimeError, match="unknown activation 'swish'"):
        torch.ops.attnact.elsa(x, a, b, "swish", 0.0, 0.0)
    with pytest.raises(RuntimeError, match="one element"):
        torch.ops.attnact.elsa(x, torch.ones(2), b, "relu", 0.0, 0.0)


def test_fake_and_compile_without_graph_break():
    from torch._subclasses.fake_tensor import FakeTensorMode

    a, b = torch.tensor([0.9]), torch.tensor([2.0])
    x = torch.randn(2, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    real = torch.ops.attnact.elsa(x, a, b, "gelu", 0.0, 0.0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = torch.ops.attnact.elsa(x, a, b, "gelu", 0.0, 0.0)
    assert fake.shape == real.shape and fake.stride() == real.stride()

    def f(t):
        return torch.ops.attnact.elsa(t, a, b, "gelu", 0.0, 0.0) * 2

    explained = torch._dynamo.explain(f)(x)
    assert explained.graph_break_count == 0
