"""fuse_for_inference: BatchNorm folded into ATAC's point-wise convs and the hosts' conv-BN pairs.

Every comparison is fused vs unfused in eval mode on models whose BN layers have non-trivial
running statistics and affine parameters (a few training steps, or buffers set at random).
"Relative" difference is max|fused - unfused| / max|unfused|. float64 checks exactness of the
folding (1e-10); float32 checks 1e-5, except where the unfused float32 model itself is further
than that from its float64 twin (deep ResNet-50): there the fused model may differ by a small
multiple of the unfused model's own float32 error.

Expected counts are computed from the architectures (module docstrings), not from the models.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

import attnact
from attnact.blocks import LocalSE
from attnact.fuse import FoldedPair, FusedATAC, fuse_for_inference, inference_speedup

# ---------------------------------------------------------------------------------------------
# helpers


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Random affine parameters and running statistics for every BN (buffers set directly)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)


def _train_steps(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    """A few SGD steps in train mode: running stats and affine parameters move off their init."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    model.eval()


def _calibrate(model: nn.Module, x: torch.Tensor) -> None:
    """Random BN affine parameters, then running stats from two train-mode forwards.

    Calibrated statistics keep a deep network's activations at a sane scale (random ones make a
    50-layer network's output explode or vanish); momentum=None averages the two batches.
    """
    _randomize_bn(model)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
        model(x * 1.1 + 0.1)
    model.eval()


def _check_equal(model: nn.Module, x: torch.Tensor, *, tol32: float = 1e-5) -> dict[str, float]:
    """Fused vs unfused outputs in float32 and float64; returns the measured differences."""
    fused = fuse_for_inference(model)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    model64 = copy.deepcopy(model).double()
    fused64 = fuse_for_inference(model64)
    with torch.no_grad():
        ref64, out64 = model64(x.double()), fused64(x.double())
    rel32, rel64 = _rel(out, ref), _rel(out64, ref64)
    own32 = _rel(ref.double(), ref64)  # the unfused model's own float32 error
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert rel64 < 1e-10, rel64
    assert rel32 < max(tol32, 4 * own32), (rel32, own32)
    return {"rel32": rel32, "rel64": rel64, "own32": own32}


# ---------------------------------------------------------------------------------------------
# units alone


UNITS = [
    pytest.param(lambda: attnact.ATAC(8, r=2), "ATAC", id="atac"),
    pytest.param(lambda: attnact.ATAC(6, r=3, use_relu=False), "ATAC", id="atac-norelu"),
    pytest.param(lambda: attnact.SEActivation(8), "ATAC", id="se_activation"),
    pytest.param(lambda: LocalSE(8), "LocalSE", id="localse"),
]


@pytest.mark.parametrize(("make", "cls_name"), UNITS)
def test_unit_alone_trained(make, cls_name) -> None:
    torch.manual_seed(0)
    unit = make()
    c = unit.channels
    x = torch.randn(4, c, 5, 5)
    _train_steps(unit, x)
    assert not torch.allclose(unit.bn1.running_var, torch.ones_like(unit.bn1.running_var))
    host = nn.Sequential(nn.Conv2d(c, c, 1), unit)  # the unit at a path inside a model
    _check_equal(host, x)
    fused = fuse_for_inference(host)
    assert isinstance(fused[1], FusedATAC) and _n_bn(fused) == 0
    assert fused[1].use_global == unit.use_global and fused[1].source == cls_name
    rep = fused.fusion_report
    assert rep.units == ["1"]
    assert rep.folded == [
        FoldedPair("1.conv1", "1.bn1", "unit", cls_name),
        FoldedPair("1.conv2", "1.bn2", "unit", cls_name),
    ]


@pytest.mark.parametrize(("make", "cls_name"), UNITS)
def test_unit_as_the_model_random_buffers(make, cls_name) -> None:
    torch.manual_seed(1)
    unit = make()
    _randomize_bn(unit, seed=3)
    unit.train()  # fusion must use eval semantics whatever the mode it gets
    x = torch.randn(3, unit.channels, 4, 6)
    fused = fuse_for_inference(unit)
    assert isinstance(fused, FusedATAC) and not fused.training
    assert unit.training and isinstance(unit.bn1, nn.BatchNorm2d)  # the input is untouched
    assert fused.fusion_report.detection == "none" and fused.fusion_report.n_folded == 2
    unit.eval()
    _check_equal(unit, x)
    # ... and equals the reference composition of Eq. (4)-(5), whichever path forward takes.
    unit64, x64 = copy.deepcopy(unit).double(), x.double()
    with torch.no_grad():
        assert _rel(fuse_for_inference(unit64)(x64), unit64.gate(x64) * x64) < 1e-12


def test_atac_lower_rank_inputs() -> None:
    torch.manual_seed(2)
    unit = attnact.ATAC(6, r=2)
    _randomize_bn(unit)
    unit.eval()
    fused = fuse_for_inference(unit)
    for shape in [(5, 6), (5, 6, 7)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert _rel(fused(x), unit(x)) < 1e-5
    with pytest.raises(ValueError, match="6 channels"):
        fused(torch.randn(2, 5, 3, 3))


def test_fused_unit_gradients_match() -> None:
    """The fused unit's autograd path (out of place) gives the reference gradients."""
    torch.manual_seed(3)
    for make in (lambda: attnact.ATAC(6), lambda: attnact.SEActivation(6)):
        unit = make().double()
        _randomize_bn(unit)
        unit.eval()
        fused = fuse_for_inference(unit)
        x = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
        (g_ref,) = torch.autograd.grad(unit(x).sin().sum(), x)
        (g_fused,) = torch.autograd.grad(fused(x).sin().sum(), x)
        assert _rel(g_fused, g_ref) < 1e-12
        fused(x).sum().backward()  # parameters of the fused convs get gradients too
        assert fused.conv1.bias.grad is not None and fused.conv2.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# whole models


def _gather_convs(size: int) -> int:
    return math.ceil(math.log2(size)) if size > 1 else 0


# (model name, kwargs, input shape, ATAC-like units, host pairs by fx, by Sequential, BN left,
#  detection); counts from the architectures (see the models' docstrings).
B = 1
MODELS = [
    pytest.param("resnet_cifar", {"act": "atac", "blocks": B}, (2, 3, 32, 32),
                 6 * B + 1, 3 * B, 0, 2 + 3 * B, "fx", id="resnet_cifar-atac"),
    # LocalSE on every block's residual branch, on top of the 6b+1 ATAC units.
    pytest.param("resnet_cifar", {"act": "atac", "blocks": B, "variant": "localse"},
                 (2, 3, 32, 32), 6 * B + 1 + 3 * B, 3 * B, 0, 2 + 3 * B, "fx",
                 id="resnet_cifar-localse"),
    # GatherExcite cannot be traced (shape checks): its strided gather convs (5 + 4 + 3 for
    # maps of 32, 16, 8) are found as nn.Sequential neighbours.
    pytest.param("resnet_cifar", {"act": "relu", "blocks": B, "variant": "ge"}, (2, 3, 32, 32),
                 0, 3 * B, B * sum(_gather_convs(s) for s in (32, 16, 8)), 2 + 3 * B,
                 "fx+sequential", id="resnet_cifar-ge"),
    # stem 1 + 3 per bottleneck (16) + 4 downsample shortcuts; ATAC at act1/act2 of the
    # last two stages (6 + 3 bottlenecks).
    pytest.param("resnet50_v1b", {"act": "atac"}, (2, 3, 64, 64),
                 2 * (6 + 3), 1 + 3 * 16 + 4, 0, 0, "fx", id="resnet50_v1b-atac"),
    # stem 1 + 2 per basic block (8) + 3 shortcuts (layers 2-4).
    pytest.param("resnet18", {"act": "atac", "width": 0.125}, (2, 3, 32, 32),
                 17, 1 + 2 * 8 + 3, 0, 0, "fx", id="resnet18"),
    pytest.param("vgg16", {"act": "atac", "width": 0.125}, (2, 3, 32, 32),
                 13, 13, 0, 0, "fx", id="vgg16"),
    # stem 1 + 3 per inverted residual (17) + 4 conv shortcuts (stride 1, width changes:
    # 32->16, 16->24, 64->96, 160->320) + last 1.
    pytest.param("mobilenet_v2", {"act": "atac", "width": 0.125}, (2, 3, 32, 32),
                 36, 1 + 3 * 17 + 4 + 1, 0, 0, "fx", id="mobilenet_v2"),
    # stem 1 + 5 per down unit (3) + 3 per basic unit (13) + last 1.
    pytest.param("shufflenet_v2", {"act": "atac", "width": 0.125}, (2, 3, 32, 32),
                 37, 1 + 5 * 3 + 3 * 13 + 1, 0, 0, "fx", id="shufflenet_v2"),
    # MNIST-Conv's forward checks the map size, so fx fails on the model itself.
    pytest.param("mnist_conv", {"act": "atac"}, (2, 1, 28, 28), 3, 0, 0, 0, "sequential",
                 id="mnist_conv-atac"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "n_units", "n_fx", "n_seq", "n_left", "detection"), MODELS
)
def test_model_fused_equals_unfused(
    name, kwargs, shape, n_units, n_fx, n_seq, n_left, detection
) -> None:
    torch.manual_seed(0)
    model = attnact.create_model(name, **kwargs)
    x = torch.randn(shape)
    _calibrate(model, x)
    assert _n_bn(model) == 2 * n_units + n_fx + n_seq + n_left  # the architecture as counted
    before = copy.deepcopy(model.state_dict())

    fused = fuse_for_inference(model)
    rep = fused.fusion_report
    assert rep.counts == {
        "units": n_units, "unit_pairs": 2 * n_units, "fx_pairs": n_fx,
        "sequential_pairs": n_seq, "bn_before": _n_bn(model), "bn_after": n_left,
    }
    assert _n_bn(fused) == n_left == len(rep.left)
    assert rep.detection == detection
    assert sum(isinstance(m, FusedATAC) for m in fused.modules()) == n_units
    assert not any(m.training for m in fused.modules())
    assert type(fused) is type(model)
    # The original is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.state_dict().keys() == before.keys()
    assert _n_bn(model) == rep.bn_before
    # The units replaced are the activation sites that got ATAC.
    if n_units and name != "resnet_cifar":
        assert set(rep.units) == {s.path for s in model.act_sites if s.unit == "atac"}

    _check_equal(model, x)


def test_resnet_cifar_report_names_pairs_and_reasons() -> None:
    model = attnact.create_model("resnet_cifar", act="atac", blocks=1, variant="localse")
    _randomize_bn(model)
    rep = fuse_for_inference(model).fusion_report
    host = [p for p in rep.folded if p.found_by != "unit"]
    assert host == [FoldedPair(f"layer{i}.0.conv1", f"layer{i}.0.bn2", "fx") for i in (1, 2, 3)]
    assert "layer2.0.attention" in rep.units and "layer2.0.act1" in rep.units
    assert FoldedPair("layer3.0.attention.conv2", "layer3.0.attention.bn2", "unit",
                      "LocalSE") in rep.folded
    left = {u.bn: u.reason for u in rep.left}
    assert set(left) == {"input_bn", "bn", "layer1.0.bn1", "layer2.0.bn1", "layer3.0.bn1"}
    assert "model input" in left["input_bn"]
    assert "also used by" in left["layer1.0.bn1"]  # stem output feeds the identity shortcut
    assert "not a convolution" in left["layer2.0.bn1"]  # pre-activation: BN after an addition
    text = rep.to_markdown()
    assert "layer1.0.conv1" in text and "Folded 23 BatchNorm layers" in text


def test_ge_report_names_opaque_modules() -> None:
    model = attnact.create_model("resnet_cifar", act="relu", blocks=1, variant="ge")
    rep = fuse_for_inference(model).fusion_report
    assert rep.opaque == [f"layer{i}.0.attention" for i in (1, 2, 3)]
    assert FoldedPair("layer1.0.attention.gather.0", "layer1.0.attention.gather.1",
                      "sequential") in rep.folded
    assert any("GatherExcite" in n for n in rep.notes)


def test_model_without_foldable_pairs() -> None:
    torch.manual_seed(0)
    model = attnact.create_model("mnist_conv")  # ReLU: no BatchNorm at all
    x = torch.randn(2, 1, 28, 28)
    fused = fuse_for_inference(model)
    rep = fused.fusion_report
    assert rep.folded == [] and rep.units == [] and rep.left == []
    assert rep.bn_before == rep.bn_after == 0 and rep.detection == "sequential"
    with torch.no_grad():
        assert torch.equal(fused(x), model(x))
    assert fused.state_dict().keys() == model.state_dict().keys()


def test_pre_activation_bn_is_not_folded() -> None:
    """BN -> act -> conv and BN -> padded conv: nothing to fold; the output is unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4, affine=False), nn.Conv2d(4, 4, 3, padding=1),
    )
    _randomize_bn(model)
    model.eval()
    fused = fuse_for_inference(model)
    assert fused.fusion_report.detection == "fx"
    # conv 2 -> BN 3 is a pair (affine=False is fine); BN 0 follows the input.
    assert [(p.conv, p.bn) for p in fused.fusion_report.folded] == [("2", "3")]
    assert [u.bn for u in fused.fusion_report.left] == ["0"]
    _check_equal(model, torch.randn(2, 3, 6, 6))


class _TwoUsers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.shared = nn.Conv2d(3, 3, 1)
        self.bn_a = nn.BatchNorm2d(3)
        self.bn_b = nn.BatchNorm2d(3)
        self.hooked = nn.Conv2d(3, 3, 1)
        self.bn_h = nn.BatchNorm2d(3)
        self.hooked.register_forward_hook(lambda m, i, o: o * 2)
        self.conv_w = nn.Conv2d(3, 3, 1)
        self.bn_w = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + y  # the conv output has a second user
        z = self.bn_a(self.shared(z)) + self.bn_b(self.shared(z))  # one conv called twice
        z = self.bn_h(self.hooked(z))
        z = self.bn_w(self.conv_w(z)) + self.conv_w.weight.sum()  # weights read directly
        return F.relu(z)


def test_unsafe_pairs_are_left_alone() -> None:
    torch.manual_seed(0)
    model = _TwoUsers()
    _randomize_bn(model)
    model.eval()
    fused = fuse_for_inference(model)
    rep = fused.fusion_report
    assert rep.folded == [] and rep.detection == "fx"
    left = {u.bn: u.reason for u in rep.left}
    assert "also used by" in left["bn"]
    assert "called 2 times" in left["bn_a"] and "called 2 times" in left["bn_b"]
    assert "hooks" in left["bn_h"]
    assert "read directly" in left["bn_w"]
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(fused(x), model(x))


class _Untraceable(nn.Module):
    """A forward fx cannot trace, around a Sequential that lists one module twice."""

    def __init__(self) -> None:
        super().__init__()
        relu = nn.ReLU()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 1), relu, nn.Conv2d(4, 4, 1), relu,
                                  nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 3:
            raise ValueError("too small")
        return self.body(x)


def test_sequential_fallback_uses_true_neighbours() -> None:
    torch.manual_seed(0)
    model = _Untraceable()
    _randomize_bn(model)
    model.eval()
    fused = fuse_for_inference(model)
    rep = fused.fusion_report
    assert rep.detection == "sequential"
    # body.2 -> body.4 are not neighbours (the ReLU object listed twice runs in between).
    assert [(p.conv, p.bn, p.found_by) for p in rep.folded] == [("body.5", "body.6", "sequential")]
    assert [u.bn for u in rep.left] == ["body.4"]
    _check_equal(model, torch.randn(2, 3, 6, 6))


def test_inplace_and_idempotent() -> None:
    torch.manual_seed(0)
    model = attnact.create_model("resnet18", act="atac", width=0.125)
    x = torch.randn(2, 3, 32, 32)
    _calibrate(model, x)
    with torch.no_grad():
        ref = model(x)
    model.train()
    same = fuse_for_inference(model, inplace=True)
    assert same is model and not model.training and _n_bn(model) == 0
    again = fuse_for_inference(model)
    assert again.fusion_report.n_folded == 0 and again.fusion_report.units == []
    with torch.no_grad():
        assert _rel(same(x), ref) < 1e-5
        assert torch.equal(again(x), same(x))


def test_graph_module_from_convert_activations() -> None:
    """A GraphModule (convert_activations with functional ReLUs) keeps its report on deepcopy."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    gm = attnact.convert_activations(Net(), "atac", example_input=torch.randn(1, 3, 4, 4))
    assert isinstance(gm, fx.GraphModule)
    _randomize_bn(gm)
    gm.eval()
    fused = fuse_for_inference(gm)
    assert fused.fusion_report.counts["units"] == 1 and fused.fusion_report.counts["fx_pairs"] == 1
    assert copy.deepcopy(fused).fusion_report.n_folded == 3
    _check_equal(gm, torch.randn(2, 3, 5, 5))


def test_bn_without_running_stats_raises() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"track_running_stats=False.*`1`"):
        fuse_for_inference(model)
    with pytest.raises(ValueError, match="running statistics"):
        fuse_for_inference(model, inplace=True)
    assert isinstance(model[1], nn.BatchNorm2d) and model.training  # nothing was changed


def test_inference_speedup_returns_positive_ratio() -> None:
    model = attnact.create_model("resnet_cifar", act="atac", blocks=1, width=4)
    model.train()
    ratio = inference_speedup(model, torch.randn(1, 3, 8, 8), repeats=1, warmup=0)
    assert isinstance(ratio, float) and ratio > 0 and math.isfinite(ratio)
    assert model.training  # modes restored
    with pytest.raises(ValueError, match="repeats"):
        inference_speedup(model, torch.randn(1, 3, 8, 8), repeats=0)


class _ScaledATAC(attnact.ATAC):
    """A subclass that computes something else: must not be fused as an ATAC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_atac_subclass_with_own_forward_is_left_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _ScaledATAC(4))
    _randomize_bn(model)
    model.eval()
    fused = fuse_for_inference(model)
    rep = fused.fusion_report
    assert rep.units == [] and isinstance(fused[1], _ScaledATAC)
    assert any("overrides ATAC's forward" in n for n in rep.notes)
    _check_equal(model, torch.randn(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------
# the fused unit on the native operator (issue #14)


def _native_calls(fn) -> int:
    """How many times ``attnact::atac_forward`` ran inside ``fn`` (the profiler's op events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "attnact::atac_forward")


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("use_relu", [True, False])
def test_fused_atac_inference_runs_the_native_kernel_exactly(layout, use_relu) -> None:
    """Without autograd the fused unit takes the native one-pass kernel (where it builds),
    within 1e-5 relative per element of the reference composition of Eq. (4)-(5) in float64
    (the unfused unit's gate, BN in eval), keeping the input's layout."""
    from attnact.units import native

    if not native.available():
        pytest.skip(f"native operators unavailable: {native.why_not()}")
    torch.manual_seed(4)
    unit = attnact.ATAC(16, r=2, use_relu=use_relu, implementation="reference")
    _randomize_bn(unit, seed=5)
    unit.eval()
    fused = fuse_for_inference(unit)
    x = torch.randn(3, 16, 9, 7)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(3, 16, 9, 14)[..., ::2]
    unit64, x64 = copy.deepcopy(unit).double(), x.double()
    with torch.no_grad():
        want = unit64.gate(x64) * x64
        got: list[torch.Tensor] = []
        assert _native_calls(lambda: got.append(fused(x))) == 1
    torch.testing.assert_close(got[0].double(), want, rtol=1e-5, atol=1e-7)
    if layout == "channels_last":
        assert got[0].is_contiguous(memory_format=torch.channels_last)
    # with autograd recording, the composition (whose gradients test_fused_unit_gradients_match
    # checks) and the same values
    assert _native_calls(lambda: fused(x.requires_grad_())) == 0


def test_fused_atac_falls_back_without_the_native_operators() -> None:
    """set_native(False): the composition, same values (the path every machine without a C++
    compiler takes)."""
    from attnact.units import native

    torch.manual_seed(6)
    unit = attnact.ATAC(8).eval()
    _randomize_bn(unit, seed=7)
    fused = fuse_for_inference(unit)
    x = torch.randn(2, 8, 5, 5)
    native.set_native(False)
    try:
        with torch.no_grad():
            assert _native_calls(lambda: fused(x)) == 0
            got = fused(x)
    finally:
        native.set_native(None)
    with torch.no_grad():
        want = copy.deepcopy(unit).double().gate(x.double()) * x.double()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
