"""ATAC against Eq. (4)-(5) of the ATAC paper, written out with plain tensor algebra."""

import pytest
import torch
from torch import nn

from attnact import ATAC, SEActivation

EPS = 1e-5  # BatchNorm2d's default epsilon


def _bn_train(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Batch normalisation with batch statistics (biased variance), written out."""
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    var = z.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    w = bn.weight.view(1, -1, 1, 1)
    b = bn.bias.view(1, -1, 1, 1)
    return (z - mean) / torch.sqrt(var + EPS) * w + b


def _pwconv(z: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1×1 convolution without bias as a channel contraction."""
    return torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], z)


def atac_formula(x: torch.Tensor, m: ATAC) -> torch.Tensor:
    """Eq. (4)-(5): X' = σ(B(PWConv₂(δ(B(PWConv₁(X)))))) ⊗ X, BN in training mode."""
    z = x.mean(dim=(2, 3), keepdim=True) if m.use_global else x
    z = _bn_train(_pwconv(z, m.conv1), m.bn1)
    if m.use_relu:
        z = z.clamp_min(0)
    gate = torch.sigmoid(_bn_train(_pwconv(z, m.conv2), m.bn2))
    return gate * x


def _randomise_bn(m: nn.Module) -> None:
    """Non-trivial BN affine parameters, so a test can tell whether they are used."""
    g = torch.Generator().manual_seed(1)
    for bn in (m.bn1, m.bn2):
        bn.weight.data = torch.rand(bn.num_features, generator=g) + 0.5
        bn.bias.data = torch.randn(bn.num_features, generator=g) * 0.3


@pytest.mark.parametrize("use_relu", [True, False])
@pytest.mark.parametrize("use_global", [False, True])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_forward_matches_eq4_eq5(r, use_relu, use_global):
    torch.manual_seed(0)
    m = ATAC(16, r=r, use_relu=use_relu, use_global=use_global)
    _randomise_bn(m)
    x = torch.randn(6, 16, 5, 7)
    torch.testing.assert_close(m(x), atac_formula(x, m), rtol=1e-5, atol=1e-6)


def test_gradients_match_formula():
    torch.manual_seed(0)
    m = ATAC(8)
    _randomise_bn(m)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    g = torch.randn(4, 8, 6, 6)
    params = [x, *m.parameters()]
    got = torch.autograd.grad((m(x) * g).sum(), params)
    want = torch.autograd.grad((atac_formula(x, m) * g).sum(), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("use_global", "options", "path"),
    [(False, {"implementation": "reference"}, "reference"),
     (False, {"implementation": "function", "memory_efficient": False}, "fast"),
     (False, {"implementation": "function", "memory_efficient": True}, "memory_efficient"),
     (True, {}, "reference")],  # the global variant has no Function
)
def test_gradcheck_float64(use_global, options, path):
    """Every path, and the test checks it really took that path (a small CPU input takes the
    reference on the default path)."""
    torch.manual_seed(0)
    m = ATAC(6, r=2, use_global=use_global, **options).double()
    _randomise_bn(m)
    m.double()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert m.path_for(x) == path
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


def test_eval_mode_uses_running_statistics():
    torch.manual_seed(0)
    m = ATAC(8)
    for bn in (m.bn1, m.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = torch.randn(2, 8, 3, 3)

    def bn_eval(z, bn):
        s = (bn.running_var + EPS).rsqrt() * bn.weight
        return (z - bn.running_mean.view(1, -1, 1, 1)) * s.view(1, -1, 1, 1) + bn.bias.view(
            1, -1, 1, 1
        )

    z = bn_eval(_pwconv(x, m.conv1), m.bn1).clamp_min(0)
    want = torch.sigmoid(bn_eval(_pwconv(z, m.conv2), m.bn2)) * x
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels,r", [(16, 2), (64, 2), (64, 4), (10, 3)])
def test_parameter_count(channels, r):
    m = ATAC(channels, r=r)
    inter = channels // r
    weights = 2 * channels * inter
    bn_affine = 2 * inter + 2 * channels
    assert sum(p.numel() for p in m.parameters()) == weights + bn_affine
    assert m.conv1.weight.shape == (inter, channels, 1, 1)
    assert m.conv2.weight.shape == (channels, inter, 1, 1)


@pytest.mark.parametrize("r", [1, 2, 4])
def test_weights_are_2_over_9r_of_a_3x3_conv(r):
    """Sec. III-C: ATAC induces about 2/(9r) additional parameters of a 3×3 convolution."""
    c = 64
    m = ATAC(c, r=r)
    conv_weights = nn.Conv2d(c, c, 3, bias=False).weight.numel()
    atac_weights = m.conv1.weight.numel() + m.conv2.weight.numel()
    assert atac_weights / conv_weights == pytest.approx(2 / (9 * r))


def test_state_dict_keys_are_api():
    keys = set(ATAC(8).state_dict())
    expected = {"conv1.weight", "conv2.weight"}
    for bn in ("bn1", "bn2"):
        expected |= {f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                           "num_batches_tracked")}
    assert keys == expected


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = ATAC(8)
    _randomise_bn(a)
    a(torch.randn(4, 8, 3, 3))  # move running statistics away from their initial values
    b = ATAC(8)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_kept(dtype):
    m = ATAC(8).to(dtype)
    for shape in [(3, 8), (3, 8, 5), (3, 8, 4, 6)]:
        y = m(torch.randn(*shape, dtype=dtype))
        assert y.shape == shape
        assert y.dtype == dtype


def test_lower_rank_inputs_equal_the_4d_computation():
    torch.manual_seed(0)
    m = ATAC(8)
    x = torch.randn(5, 8, 7)
    torch.testing.assert_close(m(x), m(x.unsqueeze(-1)).squeeze(-1))


def test_channels_last_input():
    torch.manual_seed(0)
    m = ATAC(8)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), m(x))


def test_se_activation_is_global_atac():
    torch.manual_seed(0)
    m = SEActivation(8)
    assert isinstance(m, ATAC) and m.use_global
    x = torch.randn(4, 8, 5, 5)
    gate = m(x) / x
    # one gate per (sample, channel): constant over the spatial positions
    torch.testing.assert_close(gate, gate[:, :, :1, :1].expand_as(gate), rtol=1e-4, atol=1e-5)


def test_inplace_is_accepted_and_input_untouched():
    m = ATAC(4, inplace=True)
    x = torch.randn(2, 4, 3, 3)
    x0 = x.clone()
    m(x)
    torch.testing.assert_close(x, x0)


@pytest.mark.parametrize("channels", [0, -3, 2.5, True])
def test_bad_channels(channels):
    with pytest.raises(ValueError, match="channels"):
        ATAC(channels)


def test_reduction_too_large():
    with pytest.raises(ValueError, match=r"channels // r"):
        ATAC(4, r=8)
    with pytest.raises(ValueError, match="r "):
        ATAC(4, r=0)


def test_channel_mismatch_is_explained():
    m = ATAC(8)
    with pytest.raises(ValueError, match=r"built for 8 channels.*\(2, 6, 4, 4\)"):
        m(torch.randn(2, 6, 4, 4))


def test_trains():
    """One SGD step on a tiny conv net with ATAC lowers the loss and moves every parameter."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ATAC(8), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    before = [p.detach().clone() for p in net[1].parameters()]
    loss0 = nn.functional.cross_entropy(net(x), y)
    loss0.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net[1].parameters())
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net[1].parameters(), strict=True))
    with torch.no_grad():
        assert nn.functional.cross_entropy(net(x), y) < loss0
