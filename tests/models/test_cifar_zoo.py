"""The five CIFAR networks of the AReLU paper's Fig. 4 (ResNet-18, SE-ResNet-18, VGG-16,
MobileNetV2, ShuffleNetV2).

Parameter counts and activation-site widths are recomputed here from the layer tables of the
papers, independently of the model code, and at width 1 with 10 classes they must equal the
well-known counts of the common CIFAR implementations (kuangliu/pytorch-cifar): ResNet-18
11,173,962, VGG-16 (BN) 14,728,266, MobileNetV2 2,296,922, ShuffleNetV2 1.0× 1,263,854.
SE-ResNet-18 has no such reference number (that code's SENet-18 is a pre-activation network with
1×1-conv SE), so it is ResNet-18 plus 2·C·h + h + C per block, h = C/16: 11,263,042.
"""

import math

import pytest
import torch
from torch import nn

from attnact import AReLU
from attnact.blocks import SqueezeExcite
from attnact.models import count_parameters, create_model, model_spec
from attnact.models.cifar_zoo import channel_shuffle
from attnact.units.learnable import PAU

NAMES = ["resnet18", "se_resnet18", "vgg16", "mobilenet_v2", "shufflenet_v2"]
SMALL = 0.125  # the CPU-sized width of the tests


# --------------------------------------------------------------------------------------------------
# independent formulas: (parameters, channel count of every activation site in forward order)


def conv(cin, cout, k, groups=1, bias=False):
    return cin * cout * k * k // groups + (cout if bias else 0)


def bn(c):
    return 2 * c


def fc(cin, cout):
    return cin * cout + cout


def r(c, w):
    """Channels at width w: rounded half up, at least 1."""
    return max(1, math.floor(c * w + 0.5))


def r_even(c, w):
    """Channels at width w rounded half up to an even number, at least 2 (ShuffleNet splits)."""
    return max(2, 2 * math.floor(c * w / 2 + 0.5))


def resnet18_ref(w=1.0, classes=10, in_ch=3, se=False):
    stem = r(64, w)
    total, sites, cin = conv(in_ch, stem, 3) + bn(stem), [stem], stem
    for i, c in enumerate((64, 128, 256, 512)):
        cout = r(c, w)
        for j in range(2):  # [2, 2, 2, 2] basic blocks
            stride = 2 if i > 0 and j == 0 else 1
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if stride != 1 or cin != cout:
                total += conv(cin, cout, 1) + bn(cout)  # projection shortcut
            if se:
                h = min(cout, max(cout // 16, 4))
                total += 2 * cout * h + h + cout  # FC C→h and h→C with biases
            sites += [cout, cout]  # after BN1, after the addition
            cin = cout
    return total + fc(cin, classes), sites


def vgg16_ref(w=1.0, classes=10, in_ch=3):
    total, sites, cin = 0, [], in_ch
    for c in [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]:  # 13 convs
        cout = r(c, w)
        total += conv(cin, cout, 3, bias=True) + bn(cout)
        sites.append(cout)
        cin = cout
    return total + fc(cin, classes), sites


def mobilenet_v2_ref(w=1.0, classes=10, in_ch=3):
    stem = r(32, w)
    total, sites, cin = conv(in_ch, stem, 3) + bn(stem), [stem], stem
    table = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, c, n, s in table:
        cout = r(c, w)
        for j in range(n):
            stride = s if j == 0 else 1
            hidden = t * cin
            total += conv(cin, hidden, 1) + bn(hidden)  # expand (kept at t = 1)
            total += conv(hidden, hidden, 3, groups=hidden) + bn(hidden)  # depthwise
            total += conv(hidden, cout, 1) + bn(cout)  # linear projection
            if stride == 1 and cin != cout:
                total += conv(cin, cout, 1) + bn(cout)  # conv shortcut
            sites += [hidden, hidden]
            cin = cout
    last = r(1280, w)
    total += conv(cin, last, 1) + bn(last)
    return total + fc(last, classes), [*sites, last]


def shufflenet_v2_ref(w=1.0, classes=10, in_ch=3):
    stem = r(24, w)
    total, sites, cin = conv(in_ch, stem, 3) + bn(stem), [stem], stem
    for c, n in [(116, 3), (232, 7), (464, 3)]:
        cout = r_even(c, w)
        half = cout // 2
        # downsampling unit: left dw3x3/2 → 1x1 → act; right 1x1 → act → dw3x3/2 → 1x1 → act
        total += conv(cin, cin, 3, groups=cin) + bn(cin) + conv(cin, half, 1) + bn(half)
        total += conv(cin, half, 1) + bn(half) + conv(half, half, 3, groups=half) + bn(half)
        total += conv(half, half, 1) + bn(half)
        sites += [half, half, half]
        for _ in range(n):  # basic unit on half the channels: 1x1 → act → dw3x3 → 1x1 → act
            total += 2 * (conv(half, half, 1) + bn(half))
            total += conv(half, half, 3, groups=half) + bn(half)
            sites += [half, half]
        cin = cout
    last = r(1024, w)
    total += conv(cin, last, 1) + bn(last)
    return total + fc(last, classes), [*sites, last]


REFERENCE = {
    "resnet18": resnet18_ref,
    "se_resnet18": lambda **kw: resnet18_ref(se=True, **kw),
    "vgg16": vgg16_ref,
    "mobilenet_v2": mobilenet_v2_ref,
    "shufflenet_v2": shufflenet_v2_ref,
}

KNOWN_COUNTS = {  # width 1, ReLU, 10 classes
    "resnet18": 11_173_962,
    "se_resnet18": 11_173_962 + 2 * (580 + 2_184 + 8_464 + 33_312),  # SE(64/128/256/512), r=16
    "vgg16": 14_728_266,
    "mobilenet_v2": 2_296_922,
    "shufflenet_v2": 1_263_854,
}

SITES = {"resnet18": 17, "se_resnet18": 17, "vgg16": 13, "mobilenet_v2": 36, "shufflenet_v2": 37}
STEM = {"resnet18": 64, "se_resnet18": 64, "vgg16": 64, "mobilenet_v2": 32, "shufflenet_v2": 24}


class ChannelPReLU(nn.PReLU):
    """Per-channel PReLU; the ``channels`` parameter makes the ActPlan pass each site's width."""

    def __init__(self, channels):
        super().__init__(num_parameters=channels, init=0.25)


def site_modules(model):
    modules = dict(model.named_modules())
    return [modules[s.path] for s in model.act_sites]


# --------------------------------------------------------------------------------------------------
# parameter counts


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_at_width_1_are_the_reference_numbers(name):
    assert KNOWN_COUNTS["se_resnet18"] == 11_263_042
    params, sites = REFERENCE[name]()
    assert params == KNOWN_COUNTS[name]
    model = create_model(name, num_classes=10)
    assert count_parameters(model) == params
    assert [s.in_channels for s in model.act_sites] == sites
    assert all(s.out_channels == s.in_channels for s in model.act_sites)
    small = create_model(name, num_classes=10, width=SMALL)
    assert count_parameters(small) * 20 < params  # much smaller (≈ 1/50 or less)


def test_resnet18_100_classes():
    assert resnet18_ref(classes=100)[0] == 11_220_132
    assert count_parameters(create_model("resnet18")) == 11_220_132  # default: 100 classes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", [0.125, 0.25, 0.3])
def test_small_widths_follow_the_rounding_rule(name, width):
    model = create_model(name, num_classes=100, in_channels=1, width=width)
    params, sites = REFERENCE[name](w=width, classes=100, in_ch=1)
    assert count_parameters(model) == params
    assert [s.in_channels for s in model.act_sites] == sites


def test_shufflenet_stage_widths_are_even():
    # 116 · 0.125 = 14.5 → 14, 232 · 0.125 = 29 → 30 (even), 464 · 0.125 = 58
    model = create_model("shufflenet_v2", width=SMALL)
    widths = [m.left[1].conv.out_channels * 2 for m in (model.stage1[0], model.stage2[0],
                                                        model.stage3[0])]
    assert widths == [14, 30, 58]


# --------------------------------------------------------------------------------------------------
# activation sites


@pytest.mark.parametrize("name", NAMES)
def test_activation_sites_replace_every_relu(name):
    model = create_model(name, width=SMALL)
    assert len(model.act_sites) == SITES[name]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == SITES[name]  # every ReLU of the network is a site (SE's is functional)
    assert site_modules(model) == relus  # ... in module order, which is forward order here
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    arelu = create_model(name, act="arelu", width=SMALL)
    assert not any(isinstance(m, nn.ReLU) for m in arelu.modules())
    assert sum(isinstance(m, AReLU) for m in arelu.modules()) == SITES[name]
    assert len({id(m) for m in site_modules(arelu)}) == SITES[name]  # a fresh module per site


@pytest.mark.parametrize("name", NAMES)
def test_sites_in_forward_order_with_their_input_widths(name):
    model = create_model(name, act=ChannelPReLU, width=SMALL)
    seen = []
    for m in site_modules(model):
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape[1])))
    model(torch.randn(2, 3, 32, 32))
    assert [m for m, _ in seen] == site_modules(model)
    assert [c for _, c in seen] == [s.in_channels for s in model.act_sites]
    assert [m.weight.numel() for m in site_modules(model)] == [c for _, c in seen]


def test_se_keeps_its_relu_and_sigmoid():
    model = create_model("se_resnet18", act="arelu", width=SMALL)
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == 8
    assert [m.channels for m in se] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert all(m.hidden == 4 for m in se)  # max(C // 16, 4)
    full = create_model("se_resnet18")
    assert [m.hidden for m in full.modules() if isinstance(m, SqueezeExcite)] == [
        4, 4, 8, 8, 16, 16, 32, 32
    ]
    assert not any(isinstance(m, SqueezeExcite) for m in create_model("resnet18").modules())


def test_act_fraction_and_order_reach_the_plan():
    model = create_model("mobilenet_v2", act="arelu", act_fraction=0.5, width=SMALL)
    assert [s.unit for s in model.act_sites] == ["relu"] * 18 + ["arelu"] * 18
    model = create_model(
        "vgg16", act="pau", act_fraction=0.5, order="first_first", width=SMALL
    )
    assert [s.unit for s in model.act_sites] == ["pau"] * 7 + ["relu"] * 6  # 6.5 rounds up
    model = create_model(
        "resnet18", act="relu", base_act="arelu", act_fraction=0.0, width=SMALL,
        act_kwargs={"alpha": 0.5},
    )
    assert all(isinstance(m, AReLU) for m in site_modules(model))
    model = create_model("shufflenet_v2", act="arelu", act_kwargs={"alpha": 0.5}, width=SMALL)
    assert all(m.alpha.item() == 0.5 for m in site_modules(model))


# --------------------------------------------------------------------------------------------------
# forward / backward


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("in_ch", "side"), [(3, 32), (1, 28), (3, 28), (1, 32)])
def test_forward_shapes(name, in_ch, side):
    model = create_model(name, num_classes=7, in_channels=in_ch, width=SMALL)
    assert model(torch.randn(2, in_ch, side, side)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("act", ["arelu", "pau", ChannelPReLU], ids=["arelu", "pau", "prelu_c"])
def test_backward_reaches_the_activation_parameters(name, act):
    torch.manual_seed(0)
    model = create_model(name, act=act, width=SMALL)
    units = site_modules(model)
    unit_type = {"arelu": AReLU, "pau": PAU}.get(act, ChannelPReLU)
    assert all(type(m) is unit_type for m in units)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    out.logsumexp(1).sum().backward()
    for m in units:
        params = list(m.parameters())
        assert params
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert all(p.grad is not None for p in model.parameters())
    assert sum(float(p.grad.abs().sum()) for m in units for p in m.parameters()) > 0


def test_atac_gets_each_sites_channels():
    model = create_model("shufflenet_v2", act="atac", width=SMALL)
    assert [m.channels for m in site_modules(model)] == shufflenet_v2_ref(w=SMALL)[1]
    model(torch.randn(2, 3, 32, 32)).sum().backward()


# --------------------------------------------------------------------------------------------------
# stem, registry, arguments


@pytest.mark.parametrize("name", NAMES)
def test_stem_is_conv_bn_act(name):
    model = create_model(name, act="arelu", in_channels=1, width=SMALL)
    assert isinstance(model.stem, nn.Sequential)
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d, AReLU]
    c = r(STEM[name], SMALL)
    assert model.stem[0].in_channels == 1 and model.stem[0].out_channels == c
    assert model.act_sites[0].path == "stem.act"
    captured = []
    model.stem.register_forward_hook(lambda m, i, o: captured.append(o.shape))
    model(torch.randn(2, 1, 28, 28))
    assert captured == [(2, c, 28, 28)]  # stride 1, no max pool


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name):
    spec = model_spec(name)
    assert spec.num_classes == 100 and spec.input_size == (3, 32, 32)
    assert "AReLU paper Fig. 4" in spec.description
    for arg in ("act", "num_classes", "in_channels", "width", "base_act", "act_fraction",
                "order", "act_kwargs"):
        assert arg in spec.arguments


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf"), "1", True])
def test_bad_width_is_named(name, width):
    with pytest.raises(ValueError, match="width"):
        create_model(name, width=width)


@pytest.mark.parametrize("name", NAMES)
def test_other_bad_arguments(name):
    with pytest.raises(ValueError, match="in_channels"):
        create_model(name, in_channels=0)
    with pytest.raises(ValueError, match="num_classes"):
        create_model(name, num_classes=0)
    with pytest.raises(ValueError, match="channel-changing"):
        create_model(name, act="maxout", width=SMALL)
    with pytest.raises(ValueError, match=r"no argument 'widht'.*did you mean 'width'"):
        create_model(name, widht=0.5)


def test_channel_shuffle_interleaves_two_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


class _Fill(nn.Module):
    def __init__(self, value, channels):
        super().__init__()
        self.value, self.channels = value, channels

    def forward(self, x):
        return x.new_full((x.shape[0], self.channels, *x.shape[2:]), self.value)


def test_shufflenet_units_split_concatenate_and_shuffle():
    model = create_model("shufflenet_v2", width=SMALL)
    unit = model.stage1[1]  # basic unit, 14 channels
    unit.branch = nn.Identity()  # then the unit is a pure split → concatenate → shuffle
    x = torch.randn(2, 14, 4, 4)
    order = [i // 2 + 7 * (i % 2) for i in range(14)]  # x1₀, x2₀, x1₁, x2₁, …
    torch.testing.assert_close(unit(x), x[:, order])
    down = model.stage2[0]  # 14 → 30 channels, two branches of 15
    down.left, down.right = _Fill(1.0, 15), _Fill(2.0, 15)
    out = down(torch.randn(2, 14, 8, 8))
    assert out.shape == (2, 30, 8, 8)
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0] * 15


def test_se_gates_the_residual_branch_before_the_addition_and_act():
    model = create_model("se_resnet18", width=SMALL).eval()
    block = model.layer1[1]  # identity shortcut, 8 channels
    with torch.no_grad():
        block.se.fc2.weight.zero_()
        block.se.fc2.bias.fill_(-1e4)  # gate σ ≈ 0: the residual branch is switched off
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))  # act₂(0 + x)


def test_mobilenet_shortcuts():
    """Stride 1: identity (same width) or 1×1 conv + BN (width changes); stride 2: none."""
    model = create_model("mobilenet_v2", width=SMALL).eval()
    blocks = model.blocks
    assert len(blocks) == 17
    assert [b.depthwise.conv.stride[0] for b in blocks] == [
        1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1
    ]
    with torch.no_grad():
        for b in blocks:
            b.project.bn.weight.zero_()
            b.project.bn.bias.zero_()  # the residual branch outputs 0
    same = blocks[2]  # 24·w → 24·w, stride 1
    x = torch.randn(2, same.expand.conv.in_channels, 8, 8)
    torch.testing.assert_close(same(x), x)
    down = blocks[3]  # stride 2: no shortcut at all
    x = torch.randn(2, down.expand.conv.in_channels, 8, 8)
    assert down(x).abs().max() == 0
    wider = blocks[0]  # 32·w → 16·w, stride 1: conv shortcut
    assert wider.shortcut is not None and blocks[2].shortcut is None
