"""ATAC, SEActivation and xUnit on every layout (issue #12): channels-first maps, channels-last
maps, token sequences (N, L, C) and features (N, C), on every path; and their lazy channel
count (``ATAC()`` in ``act_layer=`` slots).

The token formula is written out here as per-token linear maps over C with BatchNorm over the
N·L values of each channel (no convolution, no permutation into a map)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

import attnact
from attnact import ATAC, SEActivation, create_act_layer
from attnact.units.arelu import elsa_gate
from attnact.units.xunit import xUnit

EPS = 1e-5


def _bn_last(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm in training mode over every position of a channels-last tensor."""
    dims = tuple(range(z.dim() - 1))
    mean = z.mean(dim=dims, keepdim=True)
    var = z.var(dim=dims, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + EPS) * bn.weight + bn.bias


def atac_tokens_formula(x: torch.Tensor, m: ATAC) -> torch.Tensor:
    """Eq. (4)-(5) on channels-last x (..., C): z = x W₁ᵀ per position, BN over all positions."""
    ctx = x
    if m.use_global:  # one context per sample: the mean over its positions
        ctx = x.mean(dim=tuple(range(1, x.dim() - 1)), keepdim=True) if x.dim() > 2 else x
    z = _bn_last(ctx @ m.conv1.weight[:, :, 0, 0].T, m.bn1)
    if m.use_relu:
        z = z.clamp_min(0)
    return torch.sigmoid(_bn_last(z @ m.conv2.weight[:, :, 0, 0].T, m.bn2)) * x


def _randomise(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
        bn.weight.data = torch.rand(bn.num_features, generator=g) + 0.5
        bn.bias.data = torch.randn(bn.num_features, generator=g) * 0.3
    return m


PATHS = {  # ATAC keyword arguments that pin each path
    "reference": {"implementation": "reference"},
    "fast": {"implementation": "function", "memory_efficient": False},
    "memory_efficient": {"implementation": "function", "memory_efficient": True},
}
LAST_SHAPES = {"tokens": (3, 7, 8), "maps_last": (2, 3, 5, 8), "features": (9, 8)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("layout", list(LAST_SHAPES))
def test_atac_channels_last_layouts_match_the_token_formula(path: str, layout: str) -> None:
    torch.manual_seed(0)
    m = _randomise(ATAC(8, channel_dim=-1, **PATHS[path])).double()
    x = torch.randn(*LAST_SHAPES[layout], dtype=torch.float64, requires_grad=True)
    assert m.path_for(x) == path
    y = m(x)
    want = atac_tokens_formula(x, m)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *m.parameters()], g)
    ref = torch.autograd.grad(want, [x, *m.parameters()], g)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("channel_dim", "shape"),
    [(-1, (2, 5, 4)), (-1, (2, 3, 3, 4)), (-1, (6, 4)), (1, (2, 4, 5)), (1, (2, 4, 3, 3)),
     (1, (6, 4))],
    ids=["tokens", "maps_last", "features_last", "seq_first", "maps_first", "features_first"],
)
def test_atac_gradcheck_every_path_and_layout(path: str, channel_dim: int, shape) -> None:
    torch.manual_seed(0)
    m = _randomise(ATAC(4, channel_dim=channel_dim, **PATHS[path])).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], ps,
                                                      strict=True)), (x,))

    if path == "reference":
        assert torch.autograd.gradcheck(f, (x, *params))
    else:  # functional_call swaps tensors under the module; gradcheck through the Function
        assert torch.autograd.gradcheck(lambda x: m(x), (x,))
        for p in params:
            assert torch.autograd.gradcheck(lambda w, p=p: _with(m, p, w, x), (p.detach()
                                            .clone().requires_grad_(),))


def _with(m: nn.Module, p: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    old = p.data.clone()
    # gradcheck perturbs w in place: run the module on w's values, keep the graph through w
    name = next(n for n, q in m.named_parameters() if q is p)
    out = torch.func.functional_call(m, {name: w}, (x.detach(),))
    p.data.copy_(old)
    return out


@pytest.mark.parametrize("path", list(PATHS))
def test_no_token_or_pixel_mixing_in_eval(path: str) -> None:
    torch.manual_seed(0)
    m = _randomise(ATAC(8, channel_dim=-1, **PATHS[path]))
    m.train()(torch.randn(4, 16, 8))  # some running statistics
    m.eval()
    x = torch.randn(2, 16, 8)
    x2 = x.clone()
    x2[:, 1] += 3.0  # change token 1 only
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.equal(y[:, 0], y2[:, 0]) and torch.equal(y[:, 2:], y2[:, 2:])
    assert not torch.equal(y[:, 1], y2[:, 1])
    maps = _randomise(ATAC(8, channel_dim=-1, **PATHS[path])).eval()
    img = torch.randn(2, 5, 5, 8)
    img2 = img.clone()
    img2[:, 2, 3] -= 2.0
    with torch.no_grad():
        a, b = maps(img), maps(img2)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2, 3] = False
    assert torch.equal(a[:, mask], b[:, mask])


def test_the_issue_case_dim1_would_mix_tokens_and_fail_at_other_lengths() -> None:
    # channel_dim=1 on (N, L, C) sizes ATAC by L: the reported failure, now a clear error
    m = ATAC(16)
    m(torch.randn(2, 16, 512))
    with pytest.raises(ValueError, match=r"channel_dim=1.*\(2, 20, 512\).*channel_dim=-1"):
        m(torch.randn(2, 20, 512))
    tokens = ATAC(512, channel_dim=-1)
    for length in (16, 20, 3):
        assert tokens(torch.randn(2, length, 512)).shape == (2, length, 512)


def test_channels_last_maps_equal_channels_first_with_the_same_weights() -> None:
    torch.manual_seed(0)
    for make in (lambda cd: ATAC(6, channel_dim=cd), lambda cd: xUnit(6, 3, channel_dim=cd),
                 lambda cd: SEActivation(6, channel_dim=cd)):
        first, last = _randomise(make(1)), make(-1)
        last.load_state_dict(first.state_dict())
        x = torch.randn(3, 6, 5, 4)
        torch.testing.assert_close(last(x.permute(0, 2, 3, 1)), first(x).permute(0, 2, 3, 1))


def test_se_activation_global_context_on_tokens_is_the_mean_over_tokens() -> None:
    torch.manual_seed(0)
    m = _randomise(SEActivation(8, channel_dim=-1)).double()
    x = torch.randn(3, 11, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), atac_tokens_formula(x, m), rtol=1e-12, atol=1e-12)
    # one gate per (sample, channel): y / x is constant over the tokens
    ratio = m(x) / x
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("channel_dim", "shape"), [(-1, (2, 6, 3)), (-1, (2, 4, 4, 3)),
                                                     (1, (2, 3, 6)), (-1, (5, 3))])
def test_xunit_gradcheck_and_sequence_meaning(channel_dim: int, shape) -> None:
    torch.manual_seed(0)
    m = _randomise(xUnit(3, kernel_size=3, channel_dim=channel_dim)).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    if len(shape) == 3:  # a sequence is a 1×L map: the kernel's middle row filters along L
        first = x.transpose(1, 2) if channel_dim == -1 else x
        h = torch.relu(m.bn_in(first.unsqueeze(2)).squeeze(2))
        z = nn.functional.conv1d(h, m.dwconv.weight[:, :, 1, :], m.dwconv.bias, padding=1,
                                 groups=3)
        z = m.bn_out(z.unsqueeze(2)).squeeze(2)
        want = first * torch.exp(-z**2)
        want = want.transpose(1, 2) if channel_dim == -1 else want
        torch.testing.assert_close(m(x), want)


# --- lazy channel counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "key"),
    [(ATAC, "conv1.weight"), (SEActivation, "conv1.weight"), (xUnit, "dwconv.weight")],
    ids=["atac", "se_activation", "xunit"],
)
def test_lazy_channel_count_and_state_dict_round_trip(make, key: str) -> None:
    lazy = make(inplace=True)
    assert lazy.channels is None
    assert any(isinstance(p, UninitializedParameter) for p in lazy.parameters())
    lazy = lazy.double()  # placement before the first forward is kept
    x = torch.randn(2, 12, 5, 5, dtype=torch.float64)
    y = lazy(x)
    assert y.shape == x.shape and lazy.channels == 12
    assert all(p.dtype == torch.float64 and not isinstance(p, UninitializedParameter)
               for p in lazy.parameters())
    assert not lazy._forward_pre_hooks  # the lazy hook removed itself
    state = lazy.state_dict()
    for fresh in (make(12).double(), make().double()):
        fresh.load_state_dict(state)  # a lazy unit takes its channel count from the state
        assert fresh.channels == 12
        fresh.train(lazy.training)
        torch.testing.assert_close(fresh.state_dict()[key], state[key])
        lazy.eval(), fresh.eval()
        torch.testing.assert_close(fresh(x), lazy(x))
        lazy.train()
    buf = io.BytesIO()
    torch.save(lazy, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert type(again) is type(lazy) and again.channels == 12
    assert copy.deepcopy(make())(torch.randn(2, 3, 4, 4)).shape == (2, 3, 4, 4)


def test_lazy_channels_last_reads_the_last_dim() -> None:
    m = ATAC(channel_dim=-1)
    assert m(torch.randn(2, 9, 24)).shape == (2, 9, 24) and m.channels == 24
    assert m(torch.randn(2, 31, 24)).shape == (2, 31, 24)


class _Block(nn.Module):
    """A timm/torchvision-style block: ``act_layer(inplace=True)`` with no width."""

    def __init__(self, cin: int, cout: int, act_layer) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _Mlp(nn.Module):
    """A timm ``Mlp``-style block on tokens: ``act_layer()`` between two Linear layers."""

    def __init__(self, dim: int, act_layer) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 2 * dim), act_layer(), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@pytest.mark.parametrize(
    "act_layer",
    [attnact.ATAC, attnact.SEActivation, xUnit,
     lambda **kw: create_act_layer("atac", **kw), lambda **kw: create_act_layer("elsa_atac", **kw)],
    ids=["ATAC", "SEActivation", "xUnit", "registry_atac", "registry_elsa_atac"],
)
def test_units_fill_act_layer_slots(act_layer) -> None:
    net = nn.Sequential(_Block(3, 8, act_layer), _Block(8, 16, act_layer))
    x = torch.randn(2, 3, 6, 6)
    net(x)  # the dry run materialises every unit
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
    widths = [m.channels for m in net.modules() if hasattr(m, "channels")
              and isinstance(m.channels, int)]
    assert widths == [8, 16]
    assert all(p.grad is not None for p in net.parameters())


def test_atac_in_a_token_mlp_slot() -> None:
    mlp = _Mlp(6, lambda: ATAC(channel_dim=-1))
    for length in (5, 9):
        assert mlp(torch.randn(2, length, 6)).shape == (2, length, 6)
    assert mlp.act.channels == 12


def test_channel_dim_is_checked() -> None:
    with pytest.raises(ValueError, match=r"channel_dim must be 1 .* or -1"):
        ATAC(4, channel_dim=2)
    with pytest.raises(ValueError, match="channel_dim must be"):
        xUnit(4, channel_dim=0)
    with pytest.raises(ValueError, match=r"rank 2 to 4.*\(2, 4, 1, 1, 1\)"):
        ATAC(4)(torch.randn(2, 4, 1, 1, 1))


def test_fused_inference_form_keeps_the_channel_axis() -> None:
    from attnact.fuse import fuse_for_inference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), _randomise(ATAC(8, channel_dim=-1)))
    model(torch.randn(4, 7, 5))  # running statistics
    model.eval()
    fused = fuse_for_inference(model)
    x = torch.randn(3, 9, 5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)
    lazy = fuse_for_inference(nn.Sequential(ATAC()).eval())
    assert isinstance(lazy[0], ATAC)
    assert any("lazy unit" in n for n in lazy.fusion_report.notes)


@pytest.mark.parametrize("name", ["elsa_atac", "elsa_xunit", "elsa_se_activation"])
def test_elsa_over_a_lazy_unit_materialises_in_eval_too(name: str) -> None:
    m = create_act_layer(name).eval()
    x = torch.randn(2, 5, 4, 4, requires_grad=True)
    y = m(x)  # the first call runs the composition, which materialises the inner unit
    y.sum().backward()  # the Function would have saved the uninitialized parameters
    assert all(p.grad is not None for p in m.activation.parameters())
    assert m.activation.channels == 5
    torch.testing.assert_close(m(x), y)  # later calls: the Function, same values
    torch.testing.assert_close(y, m.activation(x) + elsa_gate(x, m.alpha, m.beta))


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("path", ["fast", "memory_efficient"])
def test_tokens_cost_what_a_channels_last_map_costs(path: str) -> None:
    # (N, L, C) runs as a channels_last 1×L map: no copy, the bytes of that map, and its output
    # is a contiguous (N, L, C) tensor again
    torch.manual_seed(0)
    tokens = ATAC(16, channel_dim=-1, **PATHS[path])
    maps = ATAC(16, **PATHS[path])
    maps.load_state_dict(tokens.state_dict())
    x = torch.randn(4, 50, 16, requires_grad=True)
    x4 = torch.randn(4, 1, 50, 16).permute(0, 3, 1, 2).requires_grad_()  # channels_last map
    assert x4.is_contiguous(memory_format=torch.channels_last)
    y = tokens(x)
    assert y.is_contiguous()
    assert _saved_bytes(lambda: tokens(x)) == _saved_bytes(lambda: maps(x4))
    with torch.no_grad():
        x4.copy_(x.detach().permute(0, 2, 1).unsqueeze(2))
    torch.testing.assert_close(y, maps(x4).squeeze(2).permute(0, 2, 1))
    # and what autograd saves is no more than 2.5 (fast) or 1 (memory-efficient) inputs' worth
    per_input = x.numel() * x.element_size()
    limit = {"fast": 2.5, "memory_efficient": 1.0}[path]
    assert _saved_bytes(lambda: tokens(x)) <= limit * per_input + 4096
