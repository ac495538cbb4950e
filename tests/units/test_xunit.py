"""Tests for xUnit (Kligvasser, Shaham, Michaeli, CVPR 2018): y = x * exp(-z^2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact.units.registry import activation_spec, create_act_layer
from attnact.units.xunit import xUnit


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _bn(h: Tensor, p: dict[str, Tensor], prefix: str, training: bool, eps: float = 1e-5) -> Tensor:
    """Batch norm written out: batch statistics (biased variance) in training, running ones else."""
    if training:
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = ((h - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    else:
        mean = p[f"{prefix}.running_mean"].view(1, -1, 1, 1)
        var = p[f"{prefix}.running_var"].view(1, -1, 1, 1)
    weight = p[f"{prefix}.weight"].view(1, -1, 1, 1)
    bias = p[f"{prefix}.bias"].view(1, -1, 1, 1)
    return (h - mean) / torch.sqrt(var + eps) * weight + bias


def _depthwise(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Depthwise k x k correlation with zero padding k // 2, one channel at a time."""
    k = weight.shape[-1]
    padded = F.pad(h, (k // 2,) * 4)
    out = torch.zeros_like(h)
    height, width = h.shape[2:]
    for c in range(h.shape[1]):
        for i in range(k):
            for j in range(k):
                out[:, c] += weight[c, 0, i, j] * padded[:, c, i : i + height, j : j + width]
        out[:, c] += bias[c]
    return out


def ref_xunit(x: Tensor, p: dict[str, Tensor], batch_norm: bool, training: bool) -> Tensor:
    h = _bn(x, p, "bn_in", training) if batch_norm else x
    h = torch.clamp(h, min=0)
    z = _depthwise(h, p["dwconv.weight"], p["dwconv.bias"])
    if batch_norm:
        z = _bn(z, p, "bn_out", training)
    return x * torch.exp(-(z**2))


def randomize_(module: xUnit) -> xUnit:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.2 * torch.randn_like(buf))
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return module


def state_of(module: nn.Module) -> dict[str, Tensor]:
    state = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    state.update({n: b.detach().clone() for n, b in module.named_buffers()})
    return state


CONFIGS = [(True, True), (True, False), (False, True)]  # (batch_norm, training)
CONFIG_IDS = ["bn_train", "bn_eval", "no_bn"]


# --------------------------------------------------------------------------------------------------


def test_registered_as_spatial_learnable_unit_needing_channels() -> None:
    spec = activation_spec("xunit")
    assert spec.factory is xUnit
    assert spec.needs_channels and spec.learnable
    assert not spec.elementwise and not spec.changes_channels
    assert "2018" in spec.source and spec.formula
    module = create_act_layer("xunit", channels=16, kernel_size=5)
    assert isinstance(module, xUnit) and module.dwconv.kernel_size == (5, 5)
    lazy = create_act_layer("xunit")  # without a count: lazy, C from the first input
    assert lazy.channels is None and lazy.has_uninitialized_params()
    assert lazy(torch.randn(2, 6, 5, 5)).shape == (2, 6, 5, 5) and lazy.channels == 6


def test_parameter_counts_and_submodule_names() -> None:
    module = xUnit(16)
    # bn_in 2*16 + depthwise 16*9*9 weights + 16 biases + bn_out 2*16
    assert sum(p.numel() for p in module.parameters()) == 32 + 16 * 81 + 16 + 32 == 1376
    assert sum(p.numel() for p in xUnit(16, batch_norm=False).parameters()) == 16 * 81 + 16
    assert sum(p.numel() for p in xUnit(16, kernel_size=3).parameters()) == 32 + 16 * 9 + 16 + 32
    assert {n for n, _ in module.named_parameters()} == {
        "bn_in.weight",
        "bn_in.bias",
        "dwconv.weight",
        "dwconv.bias",
        "bn_out.weight",
        "bn_out.bias",
    }
    assert module.dwconv.groups == 16 and module.dwconv.padding == (4, 4)
    assert isinstance(xUnit(4, batch_norm=False).bn_in, nn.Identity)


@pytest.mark.parametrize(("batch_norm", "training"), CONFIGS, ids=CONFIG_IDS)
def test_forward_matches_formula(batch_norm: bool, training: bool) -> None:
    module = randomize_(xUnit(3, kernel_size=3, batch_norm=batch_norm)).double()
    module.train(training)
    state = state_of(module)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(
        module(x), ref_xunit(x, state, batch_norm, training), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize(("batch_norm", "training"), CONFIGS, ids=CONFIG_IDS)
def test_input_and_parameter_gradients_match_formula(batch_norm: bool, training: bool) -> None:
    module = randomize_(xUnit(3, kernel_size=3, batch_norm=batch_norm)).double()
    module.train(training)
    state = state_of(module)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    upstream = torch.randn_like(x)

    x1 = x.clone().requires_grad_()
    module(x1).backward(upstream)

    names = [n for n, _ in module.named_parameters()]
    x2 = x.clone().requires_grad_()
    out = ref_xunit(x2, state, batch_norm, training)
    grads = torch.autograd.grad(out, [x2, *(state[n] for n in names)], upstream)

    torch.testing.assert_close(x1.grad, grads[0], rtol=1e-9, atol=1e-9)
    for (name, p), g in zip(module.named_parameters(), grads[1:], strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize(("batch_norm", "training"), CONFIGS, ids=CONFIG_IDS)
def test_gradcheck_float64(batch_norm: bool, training: bool) -> None:
    module = randomize_(xUnit(2, kernel_size=3, batch_norm=batch_norm)).double()
    module.train(training)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in module.named_parameters())
    buffers = {n: b for n, b in module.named_buffers()}
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def f(inp: Tensor, *ps: Tensor) -> Tensor:
        state = {**buffers, **dict(zip(names, ps, strict=True))}
        return torch.func.functional_call(module, state, (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_gate_lies_in_unit_interval() -> None:
    module = randomize_(xUnit(4, kernel_size=3))
    x = torch.randn(2, 4, 8, 8)
    y = module(x)
    assert torch.all(y.abs() <= x.abs() + 1e-7)
    assert torch.all(torch.sign(y) * torch.sign(x) >= 0)


def test_gate_is_spatial() -> None:
    # Changing one pixel changes the output of its neighbours within the kernel, same channel only.
    module = xUnit(2, kernel_size=3, batch_norm=False).double()
    with torch.no_grad():
        # small weights keep z near 0, where the gate exp(-z^2) is far from underflow
        module.dwconv.weight.fill_(0.05)
        module.dwconv.bias.zero_()
    x = torch.rand(1, 2, 7, 7, dtype=torch.float64) + 0.5
    x2 = x.clone()
    x2[0, 0, 3, 3] += 1.0
    changed = (module(x2) - module(x)).abs() > 1e-12
    assert changed[0, 0, 2:5, 2:5].all()
    assert not changed[0, 0, :2].any() and not changed[0, 0, 5:].any()
    assert not changed[0, 1].any()


@pytest.mark.parametrize("batch_norm", [True, False])
def test_input_untouched(batch_norm: bool) -> None:
    # Without batch norm the ReLU sees x itself: it must not run in place on it.
    module = xUnit(3, kernel_size=3, batch_norm=batch_norm, inplace=True)
    x = torch.randn(2, 3, 5, 5)
    x_copy = x.clone()
    module(x)
    assert torch.equal(x, x_copy)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_kept(dtype: torch.dtype) -> None:
    module = xUnit(4).to(dtype)
    x = torch.randn(2, 4, 11, 7, dtype=dtype, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype
    assert module.dwconv.weight.grad.dtype == dtype


def test_state_dict_round_trip() -> None:
    module = randomize_(xUnit(4, kernel_size=5))
    module(torch.randn(3, 4, 6, 6))  # one training-mode pass also moves the running statistics
    module.eval()
    fresh = xUnit(4, kernel_size=5).eval()
    x = torch.randn(2, 4, 6, 6)
    assert not torch.equal(fresh(x), module(x))
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh(x), module(x))


def test_training_reduces_loss() -> None:
    module = xUnit(3, kernel_size=3)
    x = torch.randn(4, 3, 8, 8)
    target = 0.5 * x
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.mse_loss(module(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_input_errors() -> None:
    module = xUnit(16)
    with pytest.raises(ValueError, match=r"expected 16 input channels, got shape \(2, 8, 5, 5\)"):
        module(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"takes inputs of rank 2 to 4.*\(2, 16, 5, 5, 5\)"):
        module(torch.randn(2, 16, 5, 5, 5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 0}, "channels must be a positive integer"),
        ({"channels": True}, "channels must be a positive integer"),
        ({"channels": 4, "kernel_size": 4}, "kernel_size must be a positive odd integer"),
        ({"channels": 4, "kernel_size": 0}, "kernel_size must be a positive odd integer"),
    ],
)
def test_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        xUnit(**kwargs)
