"""CIFAR ResNet-v2 host (ATAC paper Table II, Fig. 2(a), Sec. IV-A/B/C).

Parameter counts are recomputed here from the layer shapes, independently of the model code.
"""

import math

import pytest
import torch
from torch import nn

from attnact import ATAC
from attnact.blocks import GatherExcite, LocalSE, NiNBlock, SqueezeExcite
from attnact.models import count_parameters, resnet_cifar

ACTS = ["relu", "atac", "arelu", "se_activation", "prelu", "swish"]


def conv(cin, cout, k):
    return cin * cout * k * k


def bn(c):
    return 2 * c


def atac(c, r=2):
    h = int(c // r)
    return conv(c, h, 1) + bn(h) + conv(h, c, 1) + bn(c)


def fc(cin, cout):
    return cin * cout + cout


def resnet_v2(b, *, w=16, in_ch=3, classes=10, block_extra=lambda c, size: 0):
    """(parameters of the ReLU network + block extras, activation-site widths in forward order)."""
    total = conv(in_ch, w, 3)  # the input BN has no affine parameters
    cin, size, sites = w, 32, []
    for i, cout in enumerate((w, 2 * w, 4 * w)):
        for j in range(b):
            stride = 2 if (i > 0 and j == 0) else 1
            size //= stride
            total += bn(cin) + conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3)
            if cin != cout:
                total += conv(cin, cout, 1)  # projection shortcut
            total += block_extra(cout, size)
            sites += [cin, cout]
            cin = cout
    total += bn(cin) + fc(cin, classes)
    sites.append(cin)
    return total, sites


def test_resnet20_relu_is_0_27m():
    assert count_parameters(resnet_cifar()) == 272_282
    assert resnet_v2(3)[0] == 272_282


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_parameter_counts_relu_and_atac(b):
    relu, sites = resnet_v2(b)
    assert count_parameters(resnet_cifar(blocks=b)) == relu
    model = resnet_cifar(blocks=b, act="atac")
    assert count_parameters(model) == relu + sum(atac(c) for c in sites)
    units = [m for m in model.modules() if type(m) is ATAC]
    assert len(units) == 6 * b + 1 == len(model.act_sites)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_atac_widths_in_forward_order():
    """The first unit of a downsampling block sees the block input's width (open-atac msAA1)."""
    model = resnet_cifar(blocks=2, act="atac")
    _, widths = resnet_v2(2)
    assert widths == [16, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64]
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append(mod))
        for m in model.modules()
        if isinstance(m, ATAC)
    ]
    model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert [m.channels for m in seen] == widths
    assert [s.in_channels for s in model.act_sites] == widths
    modules = dict(model.named_modules())
    assert [modules[s.path] for s in model.act_sites] == seen
    assert model.act_sites[4].path == "layer2.0.act1"


def test_paper_fig7_atac_b3_uses_65_percent_of_resnet_b5():
    """Sec. IV-C: ATAC-ResNet (b=3) matches ResNet (b=5) "while only using 65% of the
    parameters"."""
    ratio = count_parameters(resnet_cifar(blocks=3, act="atac")) / count_parameters(
        resnet_cifar(blocks=5)
    )
    assert 0.645 < ratio < 0.665


def test_half_fraction_puts_atac_at_the_last_10_of_19_sites():
    model = resnet_cifar(blocks=3, act="atac", act_fraction=0.5)
    order = []
    for m in model.modules():
        if isinstance(m, (ATAC, nn.ReLU)):
            m.register_forward_hook(lambda mod, inp, out: order.append(type(mod)))
    model(torch.randn(2, 3, 32, 32))
    k = round(0.5 * 19)
    assert k == 10
    assert order == [nn.ReLU] * (19 - k) + [ATAC] * k
    assert [s.selected for s in model.act_sites] == [False] * 9 + [True] * 10
    first = resnet_cifar(blocks=3, act="atac", act_fraction=0.5, order="first_first")
    assert [s.unit for s in first.act_sites] == ["atac"] * 10 + ["relu"] * 9


def test_every_site_is_a_fresh_module():
    model = resnet_cifar(blocks=2, act="atac")
    modules = dict(model.named_modules())
    units = [modules[s.path] for s in model.act_sites]
    assert len({id(u) for u in units}) == len(units)
    relu = resnet_cifar(blocks=2)
    relus = [m for m in relu.modules() if isinstance(m, nn.ReLU)]
    assert len({id(u) for u in relus}) == len(relus) == 13


@pytest.mark.parametrize("act", ACTS)
def test_forward_backward_every_act(act):
    torch.manual_seed(0)
    model = resnet_cifar(blocks=1, act=act)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("variant", ["nin", "localse", "se", "ge"])
def test_forward_backward_variants(variant):
    torch.manual_seed(0)
    model = resnet_cifar(blocks=1, variant=variant, num_classes=100)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_nin_variant_matches_atac_parameters():
    """Fig. 4 / Sec. IV-B(2): NiN is compared at the same parameter budget as ATAC."""
    for b in (1, 3):
        relu, sites = resnet_v2(b)
        nin_block = lambda c: conv(c, c // 2, 1) + bn(c // 2) + conv(c // 2, c, 1) + bn(c)  # noqa: E731
        nin = resnet_cifar(blocks=b, variant="nin")
        at = resnet_cifar(blocks=b, act="atac")
        assert count_parameters(nin) == relu + sum(nin_block(c) for c in sites)
        assert abs(count_parameters(nin) - count_parameters(at)) <= 0.02 * count_parameters(at)
        blocks = [m for m in nin.modules() if isinstance(m, NiNBlock)]
        assert [m.channels for m in blocks] == sites  # one after every activation site


def test_nin_block_sits_after_each_activation():
    """Fig. 4: "applied after each convolution layer and the associated ReLU"."""
    model = resnet_cifar(blocks=1, variant="nin")
    modules = dict(model.named_modules())
    sites = {id(modules[s.path]) for s in model.act_sites}
    order = []
    for m in model.modules():
        if id(m) in sites:
            tag = "act"
        elif isinstance(m, NiNBlock):
            tag = "nin"
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            tag = "conv3x3"
        else:
            continue
        m.register_forward_hook(lambda mod, inp, out, tag=tag: order.append(tag))
    model(torch.randn(2, 3, 32, 32))
    per_block = ["act", "nin", "conv3x3", "act", "nin", "conv3x3"]
    assert order == ["conv3x3", *per_block * 3, "act", "nin"]


def test_localse_variant_parameters():
    relu, _ = resnet_v2(3, block_extra=lambda c, s: 2 * conv(c, c, 1) + 2 * bn(c))
    model = resnet_cifar(variant="localse")
    assert count_parameters(model) == relu
    lse = [m for m in model.modules() if isinstance(m, LocalSE)]
    assert len(lse) == 9 and all(m.inter_channels == m.channels for m in lse)  # r = 1
    # Sec. IV-B(2): "to obtain the same number of parameters" as ATAC
    at = count_parameters(resnet_cifar(act="atac"))
    assert abs(count_parameters(model) - at) <= 0.02 * at
    assert not any(type(m) is ATAC for m in model.modules())  # no ATAC activations


def test_localse_refines_the_residual_branch_before_the_addition():
    torch.manual_seed(0)
    model = resnet_cifar(blocks=1, variant="localse").eval()
    block = model.layer2[0]
    captured = {}
    block.conv2.register_forward_hook(lambda m, i, o: captured.__setitem__("res", o))
    block.downsample.register_forward_hook(lambda m, i, o: captured.__setitem__("short", o))
    block.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    model(torch.randn(2, 3, 32, 32))
    res = captured["res"]
    expected = captured["short"] + block.attention.gate(res) * res
    torch.testing.assert_close(captured["out"], expected)


def _se_hidden(c):
    return max(c // 16, 4)


def test_se_variant_parameters():
    extra = lambda c, s: fc(c, _se_hidden(c)) + fc(_se_hidden(c), c)  # noqa: E731
    for b in (1, 3):
        relu, _ = resnet_v2(b, block_extra=extra)
        model = resnet_cifar(blocks=b, variant="se")
        assert count_parameters(model) == relu
        assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == 3 * b


def test_ge_variant_parameters():
    def extra(c, size):
        steps = math.ceil(math.log2(size))  # 32 → 5, 16 → 4, 8 → 3 stride-2 depthwise convs
        mlp = conv(c, _se_hidden(c), 1) + _se_hidden(c) + conv(_se_hidden(c), c, 1) + c
        return steps * (9 * c + bn(c)) + mlp

    relu, _ = resnet_v2(3, block_extra=extra)
    model = resnet_cifar(variant="ge")
    assert count_parameters(model) == relu
    ge = [m for m in model.modules() if isinstance(m, GatherExcite)]
    assert [m.feat_size for m in ge] == [32] * 3 + [16] * 3 + [8] * 3

    full = lambda c, size: c * size * size + bn(c) + conv(c, 4, 1) + 4 + conv(4, c, 1) + c  # noqa: E731
    relu_full, _ = resnet_v2(1, block_extra=full)
    model = resnet_cifar(blocks=1, variant="ge", variant_kwargs={"gather": "full"})
    assert count_parameters(model) == relu_full
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_variants_with_atac_activations():
    model = resnet_cifar(blocks=1, variant="se", act="atac")
    assert sum(type(m) is ATAC for m in model.modules()) == 7
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_shortcut_takes_the_block_input():
    """open-atac ResBlockV2ATAC: residual = downsample(x) of the un-normalised input."""
    model = resnet_cifar(blocks=1)
    block = model.layer3[0]
    seen = {}
    block.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    block.downsample.register_forward_pre_hook(lambda m, args: seen.__setitem__("d", args[0]))
    model(torch.randn(2, 3, 32, 32))
    assert seen["d"] is seen["x"]
    assert block.downsample.kernel_size == (1, 1) and block.downsample.stride == (2, 2)
    assert block.downsample.bias is None
    assert model.layer1[0].downsample is None


def test_architecture_details():
    model = resnet_cifar(width=8, in_channels=1, num_classes=7)
    assert not model.input_bn.affine
    assert model.stem.out_channels == 8 and model.stem.in_channels == 1
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [8, 16, 32]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    # other input sizes work too (global average pooling)
    assert resnet_cifar(blocks=1)(torch.randn(2, 3, 24, 24)).shape == (2, 10)


def test_he_init_fan_out():
    torch.manual_seed(0)
    w = resnet_cifar(blocks=1).layer3[0].conv2.weight
    expected = math.sqrt(2.0 / (64 * 9))  # kaiming normal, fan_out = C_out·k²
    assert abs(w.std().item() / expected - 1) < 0.05


def test_act_kwargs_and_r_reach_the_units():
    model = resnet_cifar(blocks=1, act="atac", r=4)
    assert all(m.r == 4 for m in model.modules() if isinstance(m, ATAC))
    model = resnet_cifar(blocks=1, act="atac", r=4, act_kwargs={"r": 1})
    assert all(m.r == 1 for m in model.modules() if isinstance(m, ATAC))
    model = resnet_cifar(blocks=1, act="se_activation")
    assert all(m.use_global for m in model.modules() if isinstance(m, ATAC))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"blocks": 0}, r"blocks must be an integer >= 1, got 0"),
        ({"blocks": 2.0}, "blocks"),
        ({"variant": "cbam"}, "variant must be one of 'plain', 'nin', 'localse', 'se', 'ge'"),
        ({"act_fraction": 1.5}, r"act_fraction must be a number in \[0, 1\], got 1.5"),
        ({"order": "random"}, "order must be one of 'last_first', 'first_first'"),
        ({"width": 0}, "width"),
        ({"r": 0}, "r must be a positive number"),
        ({"act": "atac2"}, "unknown activation"),
        ({"act": "maxout"}, "resnet_cifar cannot host channel-changing activations"),
        ({"variant_kwargs": {"min_hidden": 1}}, "variant_kwargs are for the variants"),
        (
            {"variant": "se", "variant_kwargs": {"reduce": 2}},
            "SqueezeExcite.*reduction, min_hidden; got 'reduce'",
        ),
        ({"variant": "ge", "variant_kwargs": {"gather": "avg"}}, "gather must be one of"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        resnet_cifar(**kwargs)


def test_built_fraction_agrees_with_convert_activations():
    """Building with act_fraction and converting a ReLU host select the same sites (Fig. 6)."""
    import attnact

    converted = attnact.convert_activations(
        resnet_cifar(blocks=2), "atac", fraction=0.5, example_input=torch.randn(2, 3, 32, 32)
    )
    built = resnet_cifar(blocks=2, act="atac", act_fraction=0.5)
    assert sorted(s.site for s in converted.conversion_report.replaced) == sorted(
        s.path for s in built.act_sites if s.selected
    )
    assert count_parameters(converted) == count_parameters(built)
