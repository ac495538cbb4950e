"""AReLU's native operator (issue #14) against the reference composition (Eq. 7 of the AReLU
paper): float64 gradcheck and gradgradcheck, float32 within 1e-5 relative, the branch at signed
zeros and underflow, layouts, the C++ autograd node, and the dispatch of :func:`attnact.arelu`.
"""

from __future__ import annotations

import pytest
import torch
from torch._prims_common import (
    is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense,
)

from attnact import AReLU
from attnact.units import native
from attnact.units.arelu import arelu, arelu_reference

pytestmark = [
    pytest.mark.skipif(not native.available(),
                       reason=f"native operators unavailable: {native.why_not()}"),
    pytest.mark.usefixtures("native_on"),
]


def native_node(y: torch.Tensor) -> bool:
    """y's autograd node is the operator's C++ Function (not a Python autograd.Function)."""
    return type(y.grad_fn).__name__ == "CppFunction" and "AReLUFn" in y.grad_fn.name()


def params(a: float, b: float, dtype=torch.float32):
    return (torch.tensor([a], dtype=dtype, requires_grad=True),
            torch.tensor([b], dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("a,b", [(0.9, 2.0), (1.5, -1.0), (0.005, 0.3)])
def test_gradcheck_and_gradgradcheck(a, b):
    """Including α outside [0.01, 0.99] (no gradient); second order through
    create_graph=True."""
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    al, be = params(a, b, torch.float64)
    op = torch.ops.attnact.arelu
    assert torch.autograd.gradcheck(op, (x, al, be))
    assert torch.autograd.gradgradcheck(op, (x, al, be))


def test_alpha_on_the_clamps_end_points_gets_the_gradient():
    """torch.clamp passes the gradient at both end points (a finite difference there would see
    half of it, so this compares with the reference, not numerically)."""
    x0 = torch.randn(50, dtype=torch.float64)
    for a in (0.01, 0.99):
        al, be = params(a, 0.0, torch.float64)
        got = torch.autograd.grad(torch.ops.attnact.arelu(x0, al, be).sum(), al)[0]
        want = torch.autograd.grad(arelu_reference(x0, al, be).sum(), al)[0]
        assert want.item() != 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(128, 16, 9, 9), (1000,), (7, 3), (2, 16, 4, 4)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_float32_matches_reference(shape, layout):
    x0 = torch.randn(*shape) * 3
    if layout == "channels_last" and x0.dim() == 4:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x0 = x0.transpose(0, -1)  # strided, not dense in any memory format of its shape
    g = torch.randn(x0.shape)
    for a, b in ((0.9, 2.0), (0.3, -2.0)):
        al, be = params(a, b)
        x, xr = x0.clone().requires_grad_(), x0.clone().requires_grad_()
        y = torch.ops.attnact.arelu(x, al, be)
        got = torch.autograd.grad(y, (x, al, be), g)
        al2, be2 = params(a, b)
        yr = arelu_reference(xr, al2, be2)
        want = torch.autograd.grad(yr, (xr, al2, be2), g)
        torch.testing.assert_close(y, yr, rtol=1e-6, atol=0)
        for k, (u, v) in enumerate(zip(got, want, strict=True)):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5 * v.abs().max().item(),
                                       msg=f"grad {k}")
        if is_non_overlapping_and_dense(x0):
            assert y.stride() == x0.stride()


def test_branch_at_signed_zero_subnormal_and_inf():
    """x = -0 and +0 take the x ≥ 0 branch, a negative subnormal (whose product underflows)
    the x < 0 branch, ±inf theirs: gradients as the reference's."""
    x0 = torch.tensor([-0.0, 0.0, -1e-45, 1e-45, -1e-40, float("inf"), float("-inf"), -2.0])
    x, xr = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    al, be = params(0.02, 1.0)
    g = torch.ones_like(x0)
    (gx,) = torch.autograd.grad(torch.ops.attnact.arelu(x, al, be), x, g)
    (gr,) = torch.autograd.grad(arelu_reference(xr, al, be), xr, g)
    torch.testing.assert_close(gx, gr, rtol=0, atol=0)


def test_no_python_autograd_function_per_call_and_one_saved_tensor():
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    m = AReLU()
    y = m(x * 1.0)
    assert native_node(y)  # the C++ autograd kernel
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x * 1.0)
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == y.data_ptr()  # y, like ReLU's output


def test_dispatch():
    """auto takes the operator on CPU; inplace, "function", several-element parameters, other
    dtypes and the switch off take the Function or the reference, as before."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    al, be = params(0.9, 2.0)
    assert native_node(arelu(x, al, be))
    assert "AReLUFunction" in type(arelu(x, al, be, implementation="function").grad_fn).__name__
    assert "AReLUFunction" in type(arelu(x * 1.0, al, be, inplace=True).grad_fn).__name__
    wide = (torch.full((3, 1, 1), 0.9, requires_grad=True),
            torch.full((3, 1, 1), 2.0, requires_grad=True))
    assert "AReLUFunction" in type(arelu(x, *wide).grad_fn).__name__
    native.set_native(False)
    assert "AReLUFunction" in type(arelu(x, al, be).grad_fn).__name__
    native.set_native(True)
    with torch.no_grad():
        torch.testing.assert_close(arelu(x, al, be), arelu_reference(x, al, be))


def test_operator_checks():
    al, be = params(0.9, 2.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.attnact.arelu(torch.ones(3, dtype=torch.int64), al, be)
    with pytest.raises(RuntimeError, match="one element"):
        torch.ops.attnact.arelu(torch.ones(3), torch.ones(2), be)


def test_fake_and_compile_without_graph_break():
    """Traceable: fake tensors give the kernels' shapes and strides, and a compiled function
    calling the operator has no graph break and matches eager."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    al, be = params(0.9, 2.0)
    x = torch.randn(2, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    real = torch.ops.attnact.arelu(x, al, be)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = torch.ops.attnact.arelu(x, al, be)
    assert fake.shape == real.shape and fake.stride() == real.stride()

    def f(t):
        return torch.ops.attnact.arelu(t, al, be) * 2

    explained = torch._dynamo.explain(f)(x)
    assert explained.graph_break_count == 0
