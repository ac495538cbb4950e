"""ResNet-50-v1b host (ATAC paper Table II, Fig. 2(b), Table IV)."""

import pytest
import torch
from torch import nn

from attnact import ATAC
from attnact.models import count_macs, count_parameters, resnet50_v1b

LAYERS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)


def conv(cin, cout, k):
    return cin * cout * k * k


def bn(c):
    return 2 * c


def atac(c, r=2):
    h = c // r
    return conv(c, h, 1) + bn(h) + conv(h, c, 1) + bn(c)


def resnet50_params(classes=1000, site=lambda planes: 0, act_stages=2):
    total = conv(3, 64, 7) + bn(64)
    cin = 64
    for i, (n, p) in enumerate(zip(LAYERS, PLANES, strict=True)):
        for j in range(n):
            total += conv(cin, p, 1) + bn(p) + conv(p, p, 3) + bn(p) + conv(p, 4 * p, 1) + bn(4 * p)
            if j == 0:
                total += conv(cin, 4 * p, 1) + bn(4 * p)  # projection shortcut
            if i >= len(LAYERS) - act_stages:
                total += 2 * site(p)
            cin = 4 * p
    return total + cin * classes + classes


@pytest.fixture(scope="module")
def relu50():
    return resnet50_v1b()


@pytest.fixture(scope="module")
def atac50():
    return resnet50_v1b(act="atac")


def test_relu_parameters_25_56m(relu50):
    assert count_parameters(relu50) == 25_557_032 == resnet50_params()


def test_atac_parameters_28_0m(atac50):
    n = count_parameters(atac50)
    assert n == resnet50_params(site=atac)
    assert 27.8e6 <= n <= 28.1e6  # Table IV: 28.0M


def test_macs_match_table_iv(relu50, atac50):
    relu = count_macs(relu50, (3, 224, 224))
    at = count_macs(atac50, (3, 224, 224))
    assert 4.0e9 <= relu <= 4.2e9  # ≈ 4.1 GMACs (Table IV reports 3.86 "GFlops")
    assert 4.3e9 <= at <= 4.5e9  # Table IV: 4.4
    # By hand: an ATAC unit of width C costs 2·C·(C/2) = C² MACs per position. Stage 3 (C=256):
    # act₁ of its first block runs at 28×28 (the stride is on the 3×3 conv), the other 11 units
    # at 14×14; stage 4 (C=512): one unit at 14×14, five at 7×7.
    extra = 256**2 * (28 * 28 + 11 * 14 * 14) + 512**2 * (14 * 14 + 5 * 7 * 7)
    assert at - relu == extra


def test_sites_are_the_last_two_stages(atac50):
    sites = atac50.act_sites
    assert len(sites) == 2 * (6 + 3) == sum(type(m) is ATAC for m in atac50.modules())
    assert [s.in_channels for s in sites] == [256] * 12 + [512] * 6
    assert sites[0].path == "layer3.0.act1" and sites[-1].path == "layer4.2.act2"
    # fixed ReLUs: stem, after every addition, and act1/act2 of stages 1-2
    assert isinstance(atac50.relu, nn.ReLU)
    for layer in (atac50.layer1, atac50.layer2):
        assert all(isinstance(b.act1, nn.ReLU) and isinstance(b.act2, nn.ReLU) for b in layer)
    assert all(isinstance(b.relu, nn.ReLU) for b in atac50.layer4)


def test_v1b_stride_on_the_3x3_conv(relu50):
    block = relu50.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2) and isinstance(block.downsample[1], nn.BatchNorm2d)
    assert relu50.conv1.kernel_size == (7, 7) and relu50.conv1.stride == (2, 2)
    assert relu50.maxpool.kernel_size == 3 and relu50.maxpool.stride == 2


@pytest.mark.parametrize(("act_stages", "sites"), [(0, 0), (1, 6), (2, 18), (3, 26), (4, 32)])
def test_act_stages(act_stages, sites):
    model = resnet50_v1b(act="atac", act_stages=act_stages, num_classes=10)
    assert len(model.act_sites) == sites
    assert count_parameters(model) == resnet50_params(10, site=atac, act_stages=act_stages)


@pytest.mark.parametrize("act", ["relu", "atac", "arelu", "se_activation", "prelu", "swish"])
def test_forward_backward_every_act(act):
    torch.manual_seed(0)
    model = resnet50_v1b(act=act, num_classes=10)
    # 32×32 is the smallest input that leaves 1×1 at stage 4; batch 2 keeps BN trainable
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_fraction_within_the_act_stages():
    model = resnet50_v1b(act="atac", act_fraction=0.5, num_classes=10)
    assert [s.unit for s in model.act_sites] == ["relu"] * 9 + ["atac"] * 9
    assert model.act_sites[9].path == "layer3.4.act2"


def test_zero_init_last_bn():
    model = resnet50_v1b(zero_init_last_bn=True, num_classes=10)
    bn3 = [b.bn3.weight for layer in (model.layer1, model.layer4) for b in layer]
    assert all(torch.count_nonzero(w) == 0 for w in bn3)
    assert torch.count_nonzero(resnet50_v1b(num_classes=10).layer1[0].bn3.weight) == 256


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"act_stages": 5}, r"act_stages must be an integer in \[0, 4\], got 5"),
        ({"act_stages": -1}, "act_stages"),
        ({"act_fraction": 1.5}, r"act_fraction must be a number in \[0, 1\]"),
        ({"act": "maxout"}, "resnet50_v1b cannot host channel-changing"),
        ({"r": -1}, "r must be a positive number"),
        ({"zero_init_last_bn": 1}, "zero_init_last_bn must be True or False"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        resnet50_v1b(**kwargs)
