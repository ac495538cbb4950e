"""AReLU and ELSA inside an outer ``torch.compile`` (issue #14): the compiled form.

``implementation="auto"`` gives dynamo :func:`attnact.units.arelu.arelu_compiled_form` (AReLU's
Function on α, β broadcast per channel) and :func:`~attnact.units.arelu.elsa_compiled_form`
(the ELSA composition on the same broadcast). Every comparison here is with the reference
composition (:func:`arelu_reference`, :func:`elsa_reference`) or with Eq. (7)'s slopes
themselves, never with another path of the code under test.

Dynamo and AOT autograd run with the ``aot_eager`` backend here (the graph and the backward that
inductor would get, without generating C++); the one test marked ``slow`` runs inductor and
counts the loops over the feature map in the code it generates.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from attnact import ELSA, AReLU
from attnact.units.arelu import (
    arelu_compiled_form,
    arelu_reference,
    elsa_compiled_form,
    elsa_reference,
)


def _x(shape=(4, 6, 5, 5), dtype=torch.float64, seed=0, zeros=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    if zeros:
        x.view(-1)[::7] = 0.0  # x = 0 is where the convention matters (ReLU-fed inputs)
    return x


def _params(dtype=torch.float64, alpha=0.3, beta=0.7):
    return (torch.tensor([alpha], dtype=dtype, requires_grad=True),
            torch.tensor([beta], dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("alpha", [0.3, 1.4, -0.2])  # inside the clamp, above it, below it
def test_compiled_form_gradcheck_float64(alpha):
    x = _x(zeros=False).requires_grad_()
    a, b = _params(alpha=alpha)
    torch.autograd.gradcheck(arelu_compiled_form, (x, a, b))
    torch.autograd.gradcheck(
        lambda x, a, b: elsa_compiled_form(x, a, b, torch.nn.functional.gelu), (x, a, b))


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7), (2, 3, 4, 5), (7,)])
def test_compiled_form_matches_reference_float32(shape):
    """Outputs bit-equal, gradients within 1e-5 relative (the parameter sums add per channel
    first, so their rounding differs), also at x = 0 where ∂F/∂x = σ(β)."""
    x0 = _x(shape, torch.float32)
    g = _x(shape, torch.float32, seed=1, zeros=False)
    for got_fn, want_fn in (
        (arelu_compiled_form, arelu_reference),
        (lambda x, a, b: elsa_compiled_form(x, a, b, torch.tanh),
         lambda x, a, b: elsa_reference(x, a, b, torch.tanh)),
    ):
        results = []
        for fn in (got_fn, want_fn):
            x = x0.clone().requires_grad_()
            a, b = _params(torch.float32)
            y = fn(x, a, b)
            results.append((y.detach(), *torch.autograd.grad(y, (x, a, b), g)))
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())
    # the convention, from Eq. (5)/(7) directly
    x = x0.clone().requires_grad_()
    a, b = _params(torch.float32)
    (gx,) = torch.autograd.grad(arelu_compiled_form(x, a, b), x, torch.ones_like(x))
    zero = x0 == 0
    assert zero.any()
    torch.testing.assert_close(gx[zero], torch.sigmoid(b.detach()).expand_as(gx[zero]))


def _host(act: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), act,
                         nn.Conv2d(6, 3, 1, bias=False))


@pytest.mark.parametrize("make", [lambda: AReLU(0.4, 1.2), lambda: ELSA("relu", 0.4, 1.2),
                                  lambda: ELSA("gelu", 0.4, 1.2)])
def test_no_graph_break_and_exact_under_compile(make):
    """One graph (fullgraph=True and dynamo's own count); values and every gradient of the
    compiled network equal the same network with the unit's reference composition."""
    torch.manual_seed(0)
    net = _host(make())
    x = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last)
    explained = torch._dynamo.explain(net)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    ref = _host(make())
    ref.load_state_dict(net.state_dict())
    ref[2].implementation = "reference"
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = []
    for model in (compiled, ref):
        y = model(x)
        grads = torch.autograd.grad(y.square().sum(), list(model.parameters()))
        out.append((y, *grads))
    torch._dynamo.reset()
    for got, want in zip(*out, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def _map_loops(code: str, n: int, c: int, hw: int) -> int:
    """Loops over a whole feature map in inductor's C++: over the N·H·W positions (channels
    inner, channels_last) or over all N·C·H·W elements."""
    return len(re.findall(rf"x\d+<static_cast<int64_t>\(({n * hw}|{n * c * hw})L\)", code))


@pytest.mark.slow
def test_inductor_fuses_arelu_into_batchnorm_backward_like_relu():
    """conv → BN → unit → conv, channels_last, compiled with inductor: the backward makes as
    many loops over the map with AReLU as with ReLU (its α, β sums fused into BatchNorm's
    per-channel reductions), where the reference composition makes two more."""
    from torch._inductor.utils import run_and_get_code

    n, c, h = 8, 16, 8

    def loops(act: nn.Module) -> tuple[int, int]:
        torch._dynamo.reset()
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act,
                            nn.Conv2d(c, c, 3, padding=1, bias=False))
        net = net.to(memory_format=torch.channels_last)
        x = torch.randn(n, c, h, h).to(memory_format=torch.channels_last)
        compiled = torch.compile(net)
        _, codes = run_and_get_code(lambda: compiled(x).square().mean().backward())
        fwd, bwd = codes
        return _map_loops(fwd, n, c, h * h), _map_loops(bwd, n, c, h * h)

    relu = loops(nn.ReLU())
    assert loops(AReLU()) == relu
    _, ref_bwd = loops(AReLU(implementation="reference"))
    assert ref_bwd > relu[1]
    torch._dynamo.reset()
