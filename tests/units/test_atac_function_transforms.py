"""ATACFunction in the ``forward`` + ``setup_context`` style (issue #16): what that style
enables, ``torch.func`` transforms, checked against the reference composition's autograd.

(The Function's gradients, saved bytes and running statistics on every path are pinned to the
reference in tests/units/test_atac_paths.py, which runs it as the ``function`` backend.)
"""

from __future__ import annotations

import pytest
import torch

from attnact import ATAC
from attnact.units.atac import _bn_call
from attnact.units.atac_function import ATACFunction


def _unit(train: bool) -> ATAC:
    torch.manual_seed(0)
    m = ATAC(6, implementation="reference").double()
    g = torch.Generator().manual_seed(1)
    for bn in (m.bn1, m.bn2):
        c = bn.num_features
        bn.weight.data = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
        bn.bias.data = torch.randn(c, generator=g, dtype=torch.float64) * 0.3
        bn.running_mean.copy_(torch.rand(c, generator=g, dtype=torch.float64) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
    return m.train(train)


def _function(m: ATAC, x: torch.Tensor, w1: torch.Tensor, recompute: bool,
              calls=None) -> torch.Tensor:
    """ATAC by the Function with conv1's weight given explicitly (the transformed argument);
    ``calls``: the BatchNorm configurations, decided outside a transform (deciding counts
    num_batches_tracked up in place, which a transform refuses on a captured buffer)."""
    (bn1, rm1, rv1), (bn2, rm2, rv2) = calls or (_bn_call(m.bn1), _bn_call(m.bn2))
    return ATACFunction.apply(x, w1, m.bn1.weight, m.bn1.bias, m.conv2.weight, m.bn2.weight,
                              m.bn2.bias, rm1, rv1, rm2, rv2, bn1, bn2, m.use_relu, recompute)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_torch_func_grad_matches_the_reference(train, recompute):
    """``torch.func.grad`` (and ``vjp``) through ``ATACFunction.apply``: the old
    ``forward(ctx, ...)`` style raised under functorch; now the gradients w.r.t. x and W₁ equal
    the reference composition's ordinary autograd (float64, 1e-10)."""
    m = _unit(train)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    w = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    w1 = m.conv1.weight.detach().clone()

    calls = (_bn_call(m.bn1), _bn_call(m.bn2))

    def loss(x, w1):
        return (_function(m, x, w1, recompute, calls) * w).sum()

    got = torch.func.grad(loss, argnums=(0, 1))(x, w1)
    ref = _unit(train)
    xr = x.clone().requires_grad_()
    (ref(xr) * w).sum().backward()
    torch.testing.assert_close(got[0], xr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], ref.conv1.weight.grad, rtol=1e-10, atol=1e-12)
    if train:  # one forward each: the running statistics moved alike
        torch.testing.assert_close(m.bn1.running_mean, ref.bn1.running_mean)
        torch.testing.assert_close(m.bn2.running_var, ref.bn2.running_var)


def test_apply_returns_the_output_alone_and_saves_what_the_path_needs():
    """``apply`` keeps its public signature (one tensor); the fast path saves x, z₁, z₂ and the
    per-channel vectors, the memory-efficient path x and the vectors only (counted with
    saved_tensors_hooks, parameters aside)."""
    m = _unit(True).float()
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    sizes = {}
    for recompute in (False, True):
        saved: list[int] = []

        def pack(t, saved=saved):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = _function(m, x, m.conv1.weight, recompute)
        assert isinstance(y, torch.Tensor) and y.shape == x.shape
        big = sorted(n for n in saved if n >= x.numel() // 2)
        sizes[recompute] = big
        y.sum().backward()
    n = x.numel()
    assert sizes[False] == [n // 2, n, n]  # z1 (C/r channels), x, z2
    assert sizes[True] == [n]  # x
