"""Tests for Maxout (Goodfellow et al., ICML 2013): max over groups of consecutive channels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact.units.maxout import Maxout
from attnact.units.registry import activation_spec, create_act_layer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def ref_maxout(x: Tensor, k: int) -> Tensor:
    """Output channel j = max(x[:, j*k], ..., x[:, j*k + k - 1]), one channel at a time."""
    outs = []
    for j in range(x.shape[1] // k):
        best = x[:, j * k]
        for i in range(1, k):
            best = torch.maximum(best, x[:, j * k + i])
        outs.append(best)
    return torch.stack(outs, dim=1)


SHAPES = [(4, 6), (2, 6, 5), (2, 6, 4, 3), (1, 6, 2, 3, 2)]


def test_registered_as_channel_changing_non_learnable() -> None:
    spec = activation_spec("maxout")
    assert spec.factory is Maxout
    assert spec.changes_channels
    assert not spec.learnable and not spec.needs_channels and not spec.elementwise
    assert "2013" in spec.source and spec.formula
    module = create_act_layer("maxout", channels=8, pool_size=4)
    assert isinstance(module, Maxout) and module.pool_size == 4
    assert sum(p.numel() for p in module.parameters()) == 0


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_formula(shape: tuple[int, ...], k: int) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    y = Maxout(pool_size=k)(x)
    assert y.shape == (shape[0], shape[1] // k, *shape[2:])
    assert torch.equal(y, ref_maxout(x, k))


def test_groups_are_consecutive_channels() -> None:
    # Channels 0,1 -> output 0 and 2,3 -> output 1 (not 0,2 and 1,3).
    x = torch.tensor([[1.0, 5.0, 2.0, 3.0]])
    assert torch.equal(Maxout()(x), torch.tensor([[5.0, 3.0]]))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_matches_formula(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    upstream = torch.randn(shape[0], shape[1] // 3, *shape[2:], dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    Maxout(pool_size=3)(x1).backward(upstream)
    x2 = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ref_maxout(x2, 3), x2, upstream)
    assert torch.equal(x1.grad, grad)
    # Exactly one input per group receives the gradient (no ties in random data).
    assert torch.equal((x1.grad != 0).sum(), torch.tensor(upstream.numel()))


def test_gradcheck_float64() -> None:
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Maxout(pool_size=3), (x,))


def test_tied_maxima_share_the_gradient() -> None:
    x = torch.tensor([[2.0, 2.0, 1.0, 0.0]], requires_grad=True)
    Maxout()(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[0.5, 0.5, 1.0, 0.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_kept(dtype: torch.dtype) -> None:
    x = torch.randn(2, 8, 3, 3, dtype=dtype, requires_grad=True)
    y = Maxout(pool_size=4)(x)
    assert y.dtype == dtype and y.shape == (2, 2, 3, 3)
    y.sum().backward()
    assert x.grad.dtype == dtype


def test_out_channels() -> None:
    assert Maxout().out_channels(16) == 8
    assert Maxout(pool_size=4).out_channels(16) == 4
    with pytest.raises(
        ValueError, match="pool_size=3 needs a channel count divisible by 3, got 16"
    ):
        Maxout(pool_size=3).out_channels(16)
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        Maxout().out_channels(0)


def test_indivisible_input_names_both_numbers() -> None:
    with pytest.raises(ValueError, match="divisible by 2, got 7 channels"):
        Maxout()(torch.randn(2, 7, 3, 3))


def test_input_without_channel_dim_rejected() -> None:
    with pytest.raises(ValueError, match=r"needs an input of shape \(N, C, ...\)"):
        Maxout()(torch.randn(6))


@pytest.mark.parametrize("bad", [1, 0, -2, True, 2.0])
def test_rejects_pool_size_below_2(bad) -> None:
    with pytest.raises(ValueError, match=r"pool_size must be an integer >= 2 \(pool_size=1"):
        Maxout(pool_size=bad)


def test_inplace_accepted_and_input_untouched() -> None:
    x = torch.randn(2, 4, 3)
    x_copy = x.clone()
    Maxout(inplace=True)(x)
    assert torch.equal(x, x_copy)


def test_state_dict_round_trip() -> None:
    module = Maxout(pool_size=3)
    assert module.state_dict() == {}
    fresh = Maxout(pool_size=3)
    fresh.load_state_dict(module.state_dict())
    x = torch.randn(2, 6, 4)
    assert torch.equal(fresh(x), module(x))


def test_trains_in_a_maxout_network() -> None:
    # A maxout MLP: the layer before the unit is widened by pool_size (2 * 8 -> 8 units).
    # |x| is max(x, -x): exactly representable by one maxout unit with two pieces.
    maxout = Maxout(pool_size=2)
    net = nn.Sequential(nn.Linear(1, maxout.pool_size * 8), maxout, nn.Linear(8, 1))
    x = torch.linspace(-2, 2, 64).unsqueeze(1)
    target = x.abs()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.mse_loss(net(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert losses[-1] < 0.01
