"""Tests of attnact.units.convert: rewriting a model's activation call sites into new units.

Expected results are built by hand (the same network with the units put in manually) and
compared exactly, so a wrong site, a wrong channel count or a wrong order fails.
"""

from __future__ import annotations

import copy
import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from attnact import ATAC, AReLU, convert_activations
from attnact.units.convert import ConversionReport, ReplacedSite, SkippedSite

# ---------------------------------------------------------------------------------------------
# Known units and tiny models
# ---------------------------------------------------------------------------------------------


class ChannelScale(nn.Module):
    """A known per-channel unit: y = x * w with w = 1 + arange(C) / 10.

    Its output depends on the channel count it was built with, so a site given the wrong
    count gives a wrong (or failing) output.
    """

    def __init__(self, channels: int, inplace: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + torch.arange(channels, dtype=torch.float32) / 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))


def scale(x: torch.Tensor) -> torch.Tensor:
    """What ChannelScale(C) computes, written out for hand-built expectations."""
    return ChannelScale(x.shape[1]).to(x.dtype)(x)


class Plain(nn.Module):
    """Every nn.ReLU module called once; registration order differs from execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.act_late = nn.ReLU()  # registered first, called last
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.act1 = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.block(x)
        x = x.mean(dim=(2, 3))
        return self.act_late(self.fc(x))


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck: one self.relu called three times at widths p, p, 4p."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.layer1 = nn.Sequential(Bottleneck(8, 3, down), Bottleneck(12, 3))
        self.fc = nn.Linear(12, 5)
        self.aux = nn.Linear(12, 2)  # never used in forward: must survive conversion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


BOTTLENECK_SITES = [
    "relu",
    "layer1.0.relu_0", "layer1.0.relu_1", "layer1.0.relu_2",
    "layer1.1.relu_0", "layer1.1.relu_1", "layer1.1.relu_2",
]
BOTTLENECK_CHANNELS = [8, 3, 3, 12, 3, 3, 12]


def expected_resnet(model: TinyResNet, x: torch.Tensor) -> torch.Tensor:
    """TinyResNet's forward written out with ChannelScale at every ReLU call."""
    x = scale(model.bn1(model.conv1(x)))
    for block in model.layer1:
        identity = x if block.downsample is None else block.downsample(x)
        out = scale(block.bn1(block.conv1(x)))
        out = scale(block.bn2(block.conv2(out)))
        x = scale(block.bn3(block.conv3(out)) + identity)
    return model.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x)) + torch.relu(x)


class Functional(nn.Module):
    """Every functional spelling of ReLU, including in-place ones whose input is read again."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.inner = Inner()
        self.conv2 = nn.Conv2d(4, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x), inplace=True)  # site 0
        x = self.inner(x)  # sites 1, 2
        x = x.relu()  # site 3
        y = self.conv2(x)
        y.relu_()  # site 4: result unused, y itself is read below
        z = F.relu_(y * 2)  # site 5
        w = y + 1
        F.relu(w, inplace=True)  # site 6: w read again below
        return z + w


def expected_functional(m: Functional, x: torch.Tensor) -> torch.Tensor:
    x = scale(m.conv(x))
    x = scale(m.inner.conv(x)) + scale(x)
    x = scale(x)
    y = scale(m.conv2(x))
    z = scale(y * 2)
    w = scale(y + 1)
    return z + w


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def atac_params(c: int, r: int = 2) -> int:
    return 2 * c * (c // r) + 2 * (c // r) + 2 * c  # conv weights + BN affine (ATAC paper)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# 1. Module path: modules swapped in a copy
# ---------------------------------------------------------------------------------------------


def test_module_path_keeps_class_names_and_other_state() -> None:
    model = Plain()
    x = torch.randn(2, 3, 5, 5)
    out = convert_activations(model, "atac", example_input=x)

    assert type(out) is Plain and out is not model
    report = out.conversion_report
    assert isinstance(report, ConversionReport) and report.method == "module"
    # execution order, not registration order (act_late is registered first)
    assert [s.site for s in report.replaced] == ["act1", "block.2", "act_late"]
    assert [s.channels for s in report.replaced] == [4, 6, 5]
    assert [s.params_added for s in report.replaced] == [atac_params(c) for c in (4, 6, 5)]
    assert report.params_added == sum(atac_params(c) for c in (4, 6, 5))
    assert n_params(out) - n_params(model) == report.params_added
    assert isinstance(out.block[2], ATAC) and isinstance(out.act1, ATAC)

    old, new = model.state_dict(), out.state_dict()
    for key, value in old.items():  # everything else: same keys, same values
        assert torch.equal(new[key], value)
    added = set(new) - set(old)
    unit_keys = set(ATAC(4).state_dict())
    assert added == {f"{s}.{k}" for s in ("act1", "block.2", "act_late") for k in unit_keys}
    # the user's model is untouched
    assert isinstance(model.act1, nn.ReLU) and isinstance(model.block[2], nn.ReLU)
    # probing with example_input ran in eval mode and restored the training flags
    assert all(m.training for m in out.modules())


def test_module_path_matches_hand_built_arelu_model() -> None:
    model = Plain()
    x = torch.randn(2, 3, 5, 5)
    out = convert_activations(model, "arelu", alpha=0.3, beta=-1.0)  # no example_input needed
    expected = copy.deepcopy(model)
    for name in ("act1", "act_late"):
        setattr(expected, name, AReLU(alpha=0.3, beta=-1.0))
    expected.block[2] = AReLU(alpha=0.3, beta=-1.0)
    assert type(out) is Plain
    assert torch.equal(out(x), expected(x))
    assert not torch.equal(out(x), model(x))  # the conversion changed something
    # channels were still read off the producing modules for the report
    assert [s.channels for s in out.conversion_report.replaced] == [4, 6, 5]
    assert out.conversion_report.params_added == 3 * 2


def test_identity_units_give_the_network_without_relus() -> None:
    model = Plain()
    x = torch.randn(2, 3, 5, 5)
    out = convert_activations(model, nn.Identity)
    expected = copy.deepcopy(model)
    expected.act1, expected.act_late = nn.Identity(), nn.Identity()
    expected.block[2] = nn.Identity()
    assert torch.equal(out(x), expected(x))


def test_atac_without_example_input_reads_channels_from_producers() -> None:
    out = convert_activations(Plain(), "atac")
    assert [s.channels for s in out.conversion_report.replaced] == [4, 6, 5]  # BN, BN, Linear
    assert out(torch.randn(2, 3, 5, 5)).shape == (2, 5)


def test_channel_inference_refuses_ambiguous_sites() -> None:
    class CatNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 3, 1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(torch.cat([self.a(x), self.b(x)], dim=1))

    with pytest.raises(ValueError, match=r"act \(ReLU\).*pass example_input"):
        convert_activations(CatNet(), "atac")
    out = convert_activations(CatNet(), "atac", example_input=torch.randn(1, 3, 4, 4))
    assert out.conversion_report.replaced[0].channels == 5
    # a sum is unambiguous only if every operand resolves (broadcast 1s allowed)
    class Residual(nn.Module):
        def __init__(self, second: int) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, second, 1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.a(x) + (self.b(x) if self.b.out_channels == 1 else x))

    with pytest.raises(ValueError, match="pass example_input"):
        convert_activations(Residual(3), "atac")  # x: the model's input, width unknown
    assert convert_activations(Residual(1), "atac").conversion_report.replaced[0].channels == 3
    # channel-free units need no channel count at all
    assert convert_activations(CatNet(), "arelu").conversion_report.replaced[0].channels is None


# ---------------------------------------------------------------------------------------------
# 2. One module called at several widths (torchvision Bottleneck)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_input", [True, False])
def test_bottleneck_shared_relu_gets_one_unit_per_call(with_input: bool) -> None:
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 6, 6)
    out = convert_activations(model, ChannelScale, example_input=x if with_input else None)

    assert isinstance(out, fx.GraphModule)
    report = out.conversion_report
    assert report.method == "fx"
    assert [s.site for s in report.replaced] == BOTTLENECK_SITES
    assert [s.channels for s in report.replaced] == BOTTLENECK_CHANNELS
    assert [s.index for s in report.replaced] == list(range(7))
    assert report.replaced[2].original == "layer1.0.relu (ReLU), call 2 of 3"
    assert torch.allclose(out(x), expected_resnet(model, x))
    # each call site has its own module object
    units = [out.get_submodule(s) for s in BOTTLENECK_SITES]
    assert len({id(u) for u in units}) == 7
    # the shared ReLUs, now uncalled, are gone; everything else keeps its key and value
    assert not hasattr(out.layer1[0], "relu")
    old, new = model.state_dict(), out.state_dict()
    assert all(torch.equal(new[k], v) for k, v in old.items())  # incl. the unused `aux`
    assert set(new) - set(old) == {f"{s}.weight" for s in BOTTLENECK_SITES}


def test_bottleneck_atac_param_count_and_keys() -> None:
    model = TinyResNet()
    out = convert_activations(model, "atac", example_input=torch.randn(2, 3, 6, 6))
    expected = [atac_params(c) for c in BOTTLENECK_CHANNELS]
    assert [s.params_added for s in out.conversion_report.replaced] == expected
    assert n_params(out) - n_params(model) == sum(expected) == out.conversion_report.params_added
    assert "layer1.0.relu_2.conv1.weight" in out.state_dict()
    assert out.get_submodule("layer1.0.relu_2").conv1.weight.shape == (6, 12, 1, 1)
    assert type(out).__name__ == "TinyResNet"


def test_bottleneck_partial_keeps_shared_relu_for_remaining_calls() -> None:
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 6, 6)
    out = convert_activations(model, ChannelScale, fraction=1 / 7)  # the last call only
    assert [s.site for s in out.conversion_report.replaced] == ["layer1.1.relu_2"]
    assert isinstance(out.layer1[1].relu, nn.ReLU)  # still called twice
    expected = copy.deepcopy(model)
    # hand-built: scale only the last activation of the last block
    last = expected.layer1[1]
    last.forward = lambda t: scale(  # type: ignore[method-assign]
        last.bn3(last.conv3(last.relu(last.bn2(last.conv2(last.relu(last.bn1(last.conv1(t))))))))
        + t
    )
    assert torch.allclose(out(x), expected(x))


# ---------------------------------------------------------------------------------------------
# 3. Functional calls
# ---------------------------------------------------------------------------------------------


def test_functional_calls_are_replaced_with_inplace_semantics() -> None:
    model = Functional()
    x = torch.randn(2, 3, 4, 4)
    out = convert_activations(model, ChannelScale, example_input=x)
    report = out.conversion_report
    assert isinstance(out, fx.GraphModule)
    assert [s.site for s in report.replaced] == [
        "relu_fn", "inner.relu_fn", "inner.relu_fn_1", "relu_fn_1", "relu_fn_2", "relu_fn_3",
        "relu_fn_4",
    ]
    assert [s.original for s in report.replaced] == [
        "F.relu", "F.relu in inner", "torch.relu in inner", "Tensor.relu", "Tensor.relu_",
        "F.relu_", "F.relu",
    ]
    assert [s.channels for s in report.replaced] == [4, 4, 4, 4, 6, 6, 6]
    assert torch.allclose(out(x), expected_functional(model, x))
    # no functional ReLU is left in the graph
    targets = {n.target for n in out.graph.nodes}
    assert not targets & {F.relu, torch.relu, torch.relu_, "relu", "relu_"}


def test_functional_sites_with_example_free_inference() -> None:
    out = convert_activations(Functional(), ChannelScale)
    assert [s.channels for s in out.conversion_report.replaced] == [4, 4, 4, 4, 6, 6, 6]


def test_inplace_relu_module_whose_input_is_read_again_uses_fx() -> None:
    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            z = self.act(y)
            return y + z  # eager: y was modified in place, so this is 2 * relu(conv(x))

    model = Reuse()
    x = torch.randn(2, 2, 3, 3)
    assert torch.allclose(model(x), 2 * F.relu(model.conv(x)))
    out = convert_activations(model, ChannelScale)
    assert isinstance(out, fx.GraphModule)
    assert torch.allclose(out(x), 2 * scale(model.conv(x)))


def test_other_activation_classes_and_plain_functions() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.gelu = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.silu(F.gelu(self.gelu(self.conv(x)))) + F.relu(x).sum()

    x = torch.randn(1, 2, 3, 3)
    out = convert_activations(Mixed(), nn.Identity, match=(nn.GELU, nn.SiLU))
    assert [s.original for s in out.conversion_report.replaced] == [
        "gelu (GELU)", "F.gelu", "F.silu",
    ]
    m = out  # relu untouched, the rest is identity
    assert torch.allclose(m(x), m.conv(x) + F.relu(x).sum())
    only_fn = convert_activations(Mixed(), nn.Identity, match=(F.gelu,))
    assert [s.original for s in only_fn.conversion_report.replaced] == ["F.gelu"]


# ---------------------------------------------------------------------------------------------
# 4. fraction and order (ATAC paper, Fig. 6: replace from the last layer towards the first)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "order", "expected"),
    [
        (1.0, "last_first", [0, 1, 2, 3, 4, 5, 6]),
        (0.0, "last_first", []),
        (2 / 7, "last_first", [5, 6]),
        (2 / 7, "first_first", [0, 1]),
        (0.5, "last_first", [3, 4, 5, 6]),  # 3.5 sites: halves round up
        (0.5, "first_first", [0, 1, 2, 3]),
        (0.05, "last_first", []),  # 0.35 sites
        (1 / 14, "last_first", [6]),  # 0.5 sites rounds up (Python's round() would give 0)
        (2.5 / 7, "first_first", [0, 1, 2]),  # 2.5 sites -> 3
    ],
)
def test_fraction_and_order_select_sites(fraction: float, order: str, expected: list[int]) -> None:
    out = convert_activations(TinyResNet(), "arelu", fraction=fraction, order=order)
    report = out.conversion_report
    assert [s.index for s in report.replaced] == expected
    assert report.n_sites == 7
    not_selected = [s.index for s in report.skipped if s.reason.startswith("not selected")]
    assert sorted(not_selected + expected) == list(range(7))


def test_last_first_fractions_are_nested() -> None:
    model = TinyResNet()
    reports = [
        convert_activations(model, "arelu", fraction=f).conversion_report
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    chosen = [{s.index for s in r.replaced} for r in reports]
    assert all(a <= b for a, b in itertools.pairwise(chosen))
    assert 6 in chosen[1]  # the last layer goes first


def test_fraction_zero_returns_an_unchanged_copy() -> None:
    model = Plain()
    x = torch.randn(1, 3, 4, 4)
    out = convert_activations(model, "atac", fraction=0.0)
    assert type(out) is Plain and out is not model
    assert out.conversion_report.replaced == [] and out.conversion_report.params_added == 0
    assert torch.equal(out.eval()(x), model.eval()(x))


# ---------------------------------------------------------------------------------------------
# 5./6. Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, "0.5", True])
def test_bad_fraction(fraction: object) -> None:
    with pytest.raises(ValueError, match="fraction"):
        convert_activations(Plain(), "arelu", fraction=fraction)  # type: ignore[arg-type]


def test_bad_order_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"order must be one of 'last_first', 'first_first'"):
        convert_activations(Plain(), "arelu", order="last")


def test_unknown_unit_gives_registry_error() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'atacc'.*did you mean.*atac"):
        convert_activations(Plain(), "atacc")


def test_channel_changing_unit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"maxout.*changes the channel count"):
        convert_activations(Plain(), "maxout")


def test_module_instance_as_target_is_refused() -> None:
    with pytest.raises(ValueError, match="not a module instance"):
        convert_activations(Plain(), AReLU())  # type: ignore[arg-type]


def test_bad_match_and_leaf_modules() -> None:
    with pytest.raises(ValueError, match="unknown activation 'reluu'"):
        convert_activations(Plain(), "arelu", match=("reluu",))
    with pytest.raises(ValueError, match="match must"):
        convert_activations(Plain(), "arelu", match=(3,))
    with pytest.raises(ValueError, match="match must"):
        convert_activations(Plain(), "arelu", match=())
    with pytest.raises(ValueError, match="leaf_modules"):
        convert_activations(Plain(), "arelu", leaf_modules=(int,))


def test_example_input_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"example_input of shape \(2, 5, 4, 4\) does not fit"):
        convert_activations(Plain(), "atac", example_input=torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="example_input must be"):
        convert_activations(Plain(), "atac", example_input=[torch.randn(1, 3, 4, 4)])


class Shrink(nn.Module):
    """A bad replacement: keeps only the first channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def test_converted_model_is_checked_on_example_input() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"change the shape of their input: 1: \(1, 4, 2, 2\)"):
        convert_activations(model, Shrink, example_input=x)
    assert isinstance(convert_activations(model, Shrink)[1], Shrink)  # unchecked without input
    model3d = nn.Sequential(nn.Conv3d(1, 2, 1), nn.ReLU())
    with pytest.raises(ValueError, match=r"converted model fails on example_input.*rank 2 to 4"):
        convert_activations(model3d, "atac", example_input=torch.randn(1, 1, 2, 2, 2))


def test_error_mid_way_leaves_the_model_untouched() -> None:
    model = TinyResNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    relu = model.layer1[0].relu
    with pytest.raises(ValueError, match=r"layer1.0.relu \(ReLU\), call 1 of 3 .*channels // r"):
        convert_activations(model, "atac", r=4)  # the 3-channel sites cannot take r=4
    assert model.layer1[0].relu is relu and isinstance(model.relu, nn.ReLU)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# ---------------------------------------------------------------------------------------------
# Untraceable models
# ---------------------------------------------------------------------------------------------


class DataGate(nn.Module):
    """Data-dependent control flow: fx cannot trace through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > -1e9 else -x


class Untraceable(nn.Module):
    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.act_b = nn.ReLU()  # registered before act_a, but called after it
        self.conv = nn.Conv2d(3, 4, 1)
        self.gate = DataGate()
        self.act_a = nn.ReLU()
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.act_a(self.conv(x)))
        if self.shared:
            x = self.act_a(x)
        return self.act_b(x)


def test_untraceable_model_falls_back_to_hooks_in_execution_order() -> None:
    model = Untraceable(shared=False)
    x = torch.randn(1, 3, 2, 2)
    out = convert_activations(model, ChannelScale, example_input=x, fraction=0.5)
    report = out.conversion_report
    assert type(out) is Untraceable and report.method == "module"
    assert [s.site for s in report.replaced] == ["act_b"]  # called last, replaced first
    assert any("fx could not trace" in n for n in report.notes)
    assert torch.allclose(out(x), scale(model.act_a(model.conv(x))))


def test_untraceable_without_input_uses_registration_order_with_warning() -> None:
    with pytest.warns(UserWarning, match="registration order"):
        out = convert_activations(Untraceable(shared=False), "arelu", fraction=0.5)
    assert [s.site for s in out.conversion_report.replaced] == ["act_a"]
    with pytest.raises(ValueError, match="pass example_input"), pytest.warns(UserWarning):
        convert_activations(Untraceable(shared=False), "atac")


def test_untraceable_shared_module_explains_and_leaf_modules_fix_it() -> None:
    model = Untraceable(shared=True)
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"act_a .*called more than once.*leaf_modules"):
        convert_activations(model, ChannelScale, example_input=x)
    out = convert_activations(model, ChannelScale, example_input=x, leaf_modules=(DataGate,))
    assert [s.site for s in out.conversion_report.replaced] == ["act_a_0", "act_a_1", "act_b"]
    y = scale(model.conv(x))
    assert torch.allclose(out(x), scale(scale(y)))


def test_existing_units_and_leaf_modules_are_not_traced_into() -> None:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(x)

    class Host(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.atac = ATAC(4)  # shape checks inside: untraceable, and its torch.relu is its own
            self.wrapped = Wrapped()
            self.act = nn.ReLU()
            self.unused = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.wrapped(self.atac(self.conv(x))))

    out = convert_activations(Host(), "arelu", leaf_modules=(Wrapped,))
    report = out.conversion_report
    assert [s.site for s in report.replaced] == ["act"]
    assert isinstance(out.atac, ATAC) and isinstance(out.wrapped.relu, nn.ReLU)
    skipped = {s.site: s.reason for s in report.skipped}
    assert skipped == {
        "wrapped.relu": "inside Wrapped 'wrapped', which is treated as a leaf",
        "unused": "never called in forward",
    }


# ---------------------------------------------------------------------------------------------
# Training, state_dict, parameters, dtype, report
# ---------------------------------------------------------------------------------------------


def test_converted_model_trains_and_every_new_unit_gets_gradients() -> None:
    model = TinyResNet()
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 5, (4,))
    out = convert_activations(model, "atac", example_input=x[:2])
    opt = torch.optim.SGD(out.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in out.named_parameters()}
    F.cross_entropy(out(x), y).backward()
    for s in out.conversion_report.replaced:
        for name, p in out.get_submodule(s.site).named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{s.site}.{name}"
    opt.step()
    changed = {k for k, v in out.named_parameters() if not torch.equal(v, before[k])}
    assert {f"{s.site}.conv1.weight" for s in out.conversion_report.replaced} <= changed


@pytest.mark.parametrize("model_cls", [Plain, TinyResNet, Functional])
def test_state_dict_round_trip(model_cls: type[nn.Module]) -> None:
    original = model_cls()
    x = torch.randn(2, 3, 6, 6)
    first = convert_activations(original, "atac", example_input=x)
    first(x)  # a training-mode forward moves the BatchNorm statistics away from their init
    with torch.no_grad():
        for p in first.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.manual_seed(123)
    second = convert_activations(copy.deepcopy(original), "atac", example_input=x)
    assert not torch.equal(first.eval()(x), second.eval()(x))
    second.load_state_dict(first.state_dict())  # strict: same keys
    assert torch.equal(first(x), second(x))


def test_prelu_params_removed_and_counted() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.PReLU(4), nn.Conv2d(4, 2, 1), nn.PReLU())
    out = convert_activations(model, "arelu", match=(nn.PReLU,))
    report = out.conversion_report
    assert [s.site for s in report.replaced] == ["1", "3"]
    assert report.params_removed == 5 and report.params_added == 4
    assert n_params(out) - n_params(model) == report.params_added - report.params_removed
    assert isinstance(out[1], AReLU)


def test_new_units_follow_model_dtype() -> None:
    model = Plain().double()
    out = convert_activations(model, "atac", example_input=torch.randn(1, 3, 4, 4).double())
    assert all(p.dtype == torch.float64 for p in out.parameters())


def test_report_table_and_types() -> None:
    out = convert_activations(TinyResNet(), "atac", fraction=0.5)
    report = out.conversion_report
    text = report.to_markdown()
    assert str(report) == text
    assert text.startswith("Converted 4 of 7 activation sites to 'atac'")
    assert "| 6 | `layer1.1.relu_2` | layer1.1.relu (ReLU), call 3 of 3 | ATAC | 12 |" in text
    assert "| skipped | reason |" in text
    assert all(isinstance(s, ReplacedSite) for s in report.replaced)
    assert all(isinstance(s, SkippedSite) for s in report.skipped)


def test_converted_model_is_copyable() -> None:
    out = convert_activations(TinyResNet(), "arelu")
    x = torch.randn(1, 3, 4, 4)
    clone = copy.deepcopy(out)
    assert torch.equal(clone(x), out(x))
    assert clone.conversion_report == out.conversion_report
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), out(x))
    assert loaded.conversion_report == out.conversion_report
