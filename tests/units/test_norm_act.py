"""BatchNorm then ATAC as one node (units/norm_act.py, ``attnact::bn_atac_*``, issue #14).

Against ``act(bn(x))`` with torch.nn modules and ATAC's reference composition: float64
gradcheck of the fused operator for c, the BatchNorm's γ and β and ATAC's parameters on both
paths and layouts; float32 forward and gradients within 1e-5 relative; running statistics after
several steps; the saved bytes (the point: BN's output x is not stored) on a pair and on
resnet_cifar against the ReLU network; torch.compile without graph breaks, torch.export; the fx
rewrite for users' models.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnact
from attnact import ATAC
from attnact.perf.bench import saved_bytes
from attnact.units import native
from attnact.units.atac_function import BNConfig
from attnact.units.norm_act import fuse_norm_act, norm_then_act, set_fusion, why_not_fused

pytestmark = [
    pytest.mark.skipif(not native.available(),
                       reason=f"native operators unavailable: {native.why_not()}"),
    pytest.mark.usefixtures("native_on"),
]

F32 = dict(rtol=1e-5, floor=1e-5)


def randomise_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    c = bn.num_features
    bn.weight.data = torch.rand(c, generator=g) + 0.5
    bn.bias.data = torch.randn(c, generator=g) * 0.3
    if bn.running_mean is not None:
        bn.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)


def pair(channels: int, r: float = 2, *, memory_efficient: bool = False, use_relu: bool = True,
         momentum: float | None = 0.1, track: bool = True,
         dtype: torch.dtype = torch.float32) -> tuple[nn.BatchNorm2d, ATAC, nn.BatchNorm2d, ATAC]:
    """(bn, atac) for the fused call and an equal (bn, atac) pair on the reference path."""
    g = torch.Generator().manual_seed(3)
    bn = nn.BatchNorm2d(channels, momentum=momentum, track_running_stats=track)
    act = ATAC(channels, r=r, use_relu=use_relu, memory_efficient=memory_efficient)
    for b in (bn, act.bn1, act.bn2):
        randomise_bn(b, g)
    bn_ref, act_ref = copy.deepcopy(bn), copy.deepcopy(act)
    act_ref.memory_efficient, act_ref.implementation = None, "reference"
    return bn.to(dtype), act.to(dtype), bn_ref.to(dtype), act_ref.to(dtype)


def layout(t: torch.Tensor, name: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if name == "channels_last" else t


def assert_close(got: torch.Tensor, want: torch.Tensor, *, rtol: float, floor: float, name=""):
    atol = floor * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def cfg(batch: bool, eps: float = 1e-5) -> BNConfig:
    return BNConfig(batch, 0.1, eps)


GRADCHECK_SHAPES = [(2, 16, 3, 6, 2), (2, 5, 2, 3, 2)]  # AVX-512 transposes; tile remainders


@pytest.mark.parametrize("shape", GRADCHECK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("keep_z1", [True, False], ids=["fast", "memory_efficient"])
@pytest.mark.parametrize("batch", [(True, True, True), (True, False, True), (False, True, True)],
                         ids=["train", "atac-bn1-eval", "bn0-eval"])
def test_gradcheck_float64(shape, fmt, keep_z1, batch):
    """The fused operator's gradients for c, γ₀, β₀ and ATAC's parameters (statistics of the
    batch or running ones in each BatchNorm)."""
    n, c, h, w, r = shape
    c1 = c // r
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64)

    def rnd(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=g, **d) * scale + shift).requires_grad_()

    x = layout(torch.randn(n, c, h, w, generator=g, **d) * 1.5 + 0.7, fmt).requires_grad_()
    params = (rnd(c, scale=0.2, shift=1.0), rnd(c, scale=0.3), rnd(c1, c, 1, 1, scale=0.5),
              rnd(c1, scale=0.2, shift=1.0), rnd(c1, scale=0.3), rnd(c, c1, 1, 1, scale=0.5),
              rnd(c, scale=0.2, shift=1.0), rnd(c, scale=0.3))
    running = [(torch.rand(k, generator=g, **d) - 0.5, torch.rand(k, generator=g, **d) + 0.5)
               for k in (c, c1, c)]
    b0, b1, b2 = batch

    def f(x, g0, be0, w1, g1, be1, w2, g2, be2):
        # copies: the running statistics are updated in every call
        stats = [(m.clone(), v.clone()) for m, v in running]
        return native.bn_atac(x, g0, be0, stats[0], cfg(b0), w1, g1, be1, w2, g2, be2,
                              stats[1], stats[2], cfg(b1), cfg(b2), True, keep_z1)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


SHAPES = [(3, 16, 5, 7, 2), (2, 32, 4, 8, 2), (2, 7, 4, 5, 3),
          (3, 32, 5, 7, 2), (2, 48, 3, 5, 3)]  # training on pixel rows (C and C/r % 16 == 0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("me", [False, True], ids=["fast", "memory_efficient"])
@pytest.mark.parametrize("use_relu", [True, False], ids=["relu", "no_relu"])
def test_float32_matches_nn_modules(shape, fmt, me, use_relu):
    """Forward, the input's and every parameter's gradient within 1e-5 relative of
    ``act(bn(x))`` on torch.nn modules (ATAC's reference), for an input whose mean is large
    against its spread (a residual stream)."""
    n, c, h, w, r = shape
    bn, act, bn_ref, act_ref = pair(c, r, memory_efficient=me, use_relu=use_relu)
    torch.manual_seed(1)
    x0 = layout(torch.randn(n, c, h, w) * 0.5 + 4.0, fmt)
    gy = torch.randn(n, c, h, w)
    outs = []
    for b, a in ((bn, act), (bn_ref, act_ref)):
        x = x0.clone(memory_format=torch.preserve_format).requires_grad_()
        y = norm_then_act(b, a, x) if a is act else a(b(x))
        params = [*b.parameters(), *a.parameters()]
        outs.append((y.detach(), *torch.autograd.grad(y, [x, *params], gy)))
    assert why_not_fused(bn, act, x0.requires_grad_()) is None
    names = ["y", "x", "bn.weight", "bn.bias", *(k for k, _ in act.named_parameters())]
    got_all = dict(zip(names, outs[0], strict=True))
    want_all = dict(zip(names, outs[1], strict=True))
    for name in names:
        got, want = got_all[name], want_all[name]
        if name == "bn1.bias" and not use_relu:
            # BN2 removes any shift of its input, so ∂/∂β₁ is 0: both sides are rounding
            # noise, bounded by the scale of the neighbouring gradient
            scale = want_all["bn1.weight"].abs().max()
            assert got.abs().max() <= 1e-5 * scale and want.abs().max() <= 1e-5 * scale
            continue
        assert_close(got, want, **F32, name=name)


@pytest.mark.parametrize("shape", [(3, 16, 5, 7, 2), (2, 48, 3, 5, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_eval_gate_on_pixel_rows_matches_nn_modules(shape):
    """BN0 with batch statistics before a memory-efficient ATAC in eval (z1 is not kept):
    channels_last float with C % 16 == 0 takes the pixel-row forward (pixel_rows.h) with BN0
    folded into its loads. Forward and gradients within 1e-5 of ``act(bn(x))``."""
    n, c, h, w, r = shape
    bn, act, bn_ref, act_ref = pair(c, r, memory_efficient=True)
    act.eval(), act_ref.eval()
    torch.manual_seed(1)
    x0 = layout(torch.randn(n, c, h, w) * 0.5 + 4.0, "channels_last")
    gy = torch.randn(n, c, h, w)
    assert why_not_fused(bn, act, x0.requires_grad_()) is None
    outs = []
    for b, a in ((bn, act), (bn_ref, act_ref)):
        x = x0.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = norm_then_act(b, a, x) if a is act else a(b(x))
        outs.append((y.detach(), *torch.autograd.grad(y, [x, *b.parameters()], gy)))
    for name, got, want in zip(["y", "x", "bn.weight", "bn.bias"], *outs, strict=True):
        assert_close(got, want, **F32, name=name)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("me", [False, True], ids=["fast", "memory_efficient"])
def test_running_statistics_after_steps(momentum, me):
    """Several training steps: every running statistic and num_batches_tracked as the unfused
    modules leave them (updated once per forward)."""
    bn, act, bn_ref, act_ref = pair(16, memory_efficient=me, momentum=momentum)
    act.bn1.momentum = act_ref.bn1.momentum = momentum
    torch.manual_seed(2)
    for _ in range(4):
        x = (torch.randn(4, 16, 6, 6) * 2 + 1).requires_grad_()
        norm_then_act(bn, act, x).sum().backward()
        act_ref(bn_ref(x.detach().requires_grad_())).sum().backward()
    got = {**bn.state_dict(), **{"act." + k: v for k, v in act.state_dict().items()}}
    want = {**bn_ref.state_dict(), **{"act." + k: v for k, v in act_ref.state_dict().items()}}
    assert got.keys() == want.keys()
    for k, v in want.items():
        if k.endswith("num_batches_tracked"):
            assert got[k].item() == v.item() == 4, k
        else:
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_no_running_statistics():
    """track_running_stats=False: batch statistics, nothing to update, gradients as nn's."""
    bn, act, bn_ref, act_ref = pair(16, track=False)
    x = torch.randn(3, 16, 4, 4).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y, yr = norm_then_act(bn, act, x), act_ref(bn_ref(xr))
    y.square().sum().backward()
    yr.square().sum().backward()
    assert_close(y.detach(), yr.detach(), **F32, name="y")
    assert_close(x.grad, xr.grad, **F32, name="x")
    assert_close(bn.weight.grad, bn_ref.weight.grad, **F32, name="weight")


def test_falls_back_to_act_of_norm():
    """Eval mode, no gradient, other units, hooks, lazy ATAC: exactly act(norm(x))."""
    bn, act, _, _ = pair(8)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert why_not_fused(bn, nn.ReLU(), x) is not None
    torch.testing.assert_close(norm_then_act(bn.eval(), nn.ReLU(), x), torch.relu(bn(x)))
    assert "eval" in why_not_fused(bn, act, x)
    torch.testing.assert_close(norm_then_act(bn, act, x), act(bn(x)), rtol=0, atol=0)
    bn.train()
    with torch.no_grad():
        assert why_not_fused(bn, act, x) == "no gradient is recorded"
    handle = act.register_forward_hook(lambda *a: None)
    assert "hooks" in why_not_fused(bn, act, x)
    handle.remove()
    assert why_not_fused(nn.BatchNorm2d(8), ATAC(), x) == "the ATAC is lazy and not built yet"
    assert "not ATAC" in why_not_fused(bn, nn.ReLU(), x)
    assert "reference" in why_not_fused(bn, ATAC(8, implementation="reference"), x)
    assert why_not_fused(bn, act, x) is None
    set_fusion(False)
    try:
        assert why_not_fused(bn, act, x) == "switched off (set_fusion(False))"
    finally:
        set_fusion(None)
    assert why_not_fused(bn, act, x) is None
    with pytest.raises(ValueError, match="enabled must be"):
        set_fusion(1)


def test_saved_bytes_drop_the_normalised_input():
    """The fused pair saves BN's output x less than act(bn(x)): exactly x's bytes on the fast
    path (z₁ stays) and on the memory-efficient path; it saves c, which the graph holds."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1)  # c, BN's input, is its output (not saved by it)
    x0 = torch.randn(8, 3, 16, 16)
    x_bytes = 8 * 16 * 16 * 16 * 4
    for me in (False, True):
        bn, act, _, _ = pair(16, memory_efficient=me)
        excl = [*conv.parameters(), *bn.parameters(), *act.parameters(), x0]
        fused = saved_bytes(lambda b=bn, a=act: norm_then_act(b, a, conv(x0)).sum(), exclude=excl)
        unfused = saved_bytes(lambda b=bn, a=act: a(b(conv(x0))).sum(), exclude=excl)
        assert unfused - fused == x_bytes, me
        z1_bytes = x_bytes // 2  # C/r channels (kept in tiles of 16 pixels; 256 = 16 tiles)
        stats = 8 * (2 * 16 + 2 * 8 + 2 * 16)  # mean and variance of BN, BN1, BN2 (double)
        assert fused == x_bytes + (0 if me else z1_bytes) + stats, me


def test_resnet_cifar_saved_bytes_meet_issue_14():
    """Issue #14's memory targets on a small resnet_cifar (ratios to the ReLU network, bytes
    autograd saves in one training forward): default ≤ 1.6×, memory-efficient ≤ 1.2×. With
    act(bn(x)) at every site they are about 1.73× and 1.49×."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))

    def saved(**kw):
        m = attnact.create_model("resnet_cifar", blocks=1, **kw)
        m = m.to(memory_format=torch.channels_last).train()
        return saved_bytes(lambda: F.cross_entropy(m(x), y), exclude=list(m.parameters()))

    relu = saved(act="relu")
    default = saved(act="atac")
    me = saved(act="atac", act_kwargs={"memory_efficient": True})
    assert default / relu <= 1.6, default / relu
    assert me / relu <= 1.2, me / relu
    native.set_native(False)  # the unfused sites (ATAC's Function) for contrast
    assert saved(act="atac", act_kwargs={"memory_efficient": True}) / relu > 1.2


def test_models_keep_state_dict_keys():
    """The hosts call norm_then_act with their own modules: the state_dict is the same
    whether or not the sites fuse, and a model's forward runs the fused operator."""
    m = attnact.create_model("resnet_cifar", blocks=1, act="atac").train()
    keys = list(m.state_dict())
    assert "layer1.0.act1.conv1.weight" in keys and "layer1.0.bn1.running_mean" in keys
    calls = []
    real = native.bn_atac

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    native.bn_atac = counting
    try:
        m(torch.randn(4, 3, 8, 8)).sum().backward()
    finally:
        native.bn_atac = real
    assert len(calls) == 7  # 6b + 1 sites
    assert list(m.state_dict()) == keys


@pytest.mark.parametrize("fused", [True, False], ids=["bn_atac", "atac"])
def test_backward_allocates_no_zero_gradients(fused):
    # z1 and the batch statistics are outputs of the forward operator for backward's use only:
    # were their gradients materialised, every backward would allocate and zero a z1-sized
    # tensor (aten::zeros) before the kernel runs
    bn, act, _, _ = pair(16, memory_efficient=False)
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = norm_then_act(bn, act, x) if fused else act(x)
    with torch.profiler.profile() as prof:
        y.backward(torch.ones_like(y))
    names = {e.name for e in prof.events()}
    assert ("attnact::bn_atac_backward" if fused else "attnact::atac_backward") in names
    assert not names & {"aten::zeros", "aten::zero_", "aten::zeros_like"}, sorted(names)


def test_double_backward_refuses():
    bn, act, _, _ = pair(8)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    (gx,) = torch.autograd.grad(norm_then_act(bn, act, x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_fake_tensors_match_the_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for fmt in ("nchw", "channels_last"):
        bn, act, _, _ = pair(16)
        c = layout(torch.randn(2, 16, 5, 7), fmt)
        args = (c, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, 1e-5,
                act.conv1.weight, act.bn1.weight, act.bn1.bias, act.conv2.weight,
                act.bn2.weight, act.bn2.bias, None, None, None, None, True, True, 1e-5, 1e-5,
                True, True)
        with torch.no_grad():
            real = torch.ops.attnact.bn_atac_forward(*args)
            with FakeTensorMode(allow_non_fake_inputs=True):
                fake = torch.ops.attnact.bn_atac_forward(*args)
            for a, b in zip(real, fake, strict=True):
                assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()
            _, z1, m0, v0, m1, v1, m2, v2 = real
            bargs = (torch.randn_like(c), c, z1, bn.weight, bn.bias, m0, v0, act.conv1.weight,
                     act.bn1.weight, act.bn1.bias, act.conv2.weight, act.bn2.weight,
                     act.bn2.bias, m1, v1, m2, v2, True, True, True, 1e-5, 1e-5, 1e-5, True)
            real_b = torch.ops.attnact.bn_atac_backward(*bargs)
            with FakeTensorMode(allow_non_fake_inputs=True):
                fake_b = torch.ops.attnact.bn_atac_backward(*bargs)
            for a, b in zip(real_b, fake_b, strict=True):
                assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()


def test_operator_checks():
    bn, act, _, _ = pair(8)
    with pytest.raises(RuntimeError, match="weight and bias must be"):
        torch.ops.attnact.bn_atac_forward(
            torch.randn(2, 8, 3, 3), bn.weight[:4], bn.bias, None, None, True, 1e-5,
            act.conv1.weight, act.bn1.weight, act.bn1.bias, act.conv2.weight, act.bn2.weight,
            act.bn2.bias, None, None, None, None, True, True, 1e-5, 1e-5, True, False)


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)  # a bias before BN: ∂ = 0
        self.norm = nn.BatchNorm2d(16)
        self.unit = ATAC(16)
        self.head = nn.Sequential(nn.BatchNorm2d(16), ATAC(16), nn.Conv2d(16, 4, 1, bias=False))
        self.side = nn.BatchNorm2d(4)
        self.side_act = ATAC(4)

    def forward(self, x):
        x = self.head(self.unit(self.norm(self.conv(x))))
        s = self.side(x)  # two users: not fused
        return self.side_act(s) + s


def test_fx_rewrite_of_a_user_model():
    """fuse_norm_act: BN → ATAC pairs with one user call norm_then_act, the rest stays;
    same state_dict keys, values and gradients as the original model."""
    torch.manual_seed(0)
    model = UserNet()
    ref = copy.deepcopy(model)
    fused = fuse_norm_act(model)
    assert list(fused.state_dict()) == list(ref.state_dict())
    calls = [n for n in fused.graph.nodes if n.target is norm_then_act]
    assert len(calls) == 2
    assert any(n.op == "call_module" and n.target == "side" for n in fused.graph.nodes)
    x = torch.randn(4, 3, 8, 8)
    y, y_ref = fused(x), ref(x)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert_close(y.detach(), y_ref.detach(), **F32, name="y")
    for (k, p), (_, q) in zip(fused.named_parameters(), ref.named_parameters(), strict=True):
        assert_close(p.grad, q.grad, **F32, name=k)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        fuse_norm_act(lambda t: t)


def test_torch_export_keeps_the_fused_operator():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), ATAC(16))
    fused = fuse_norm_act(model).train()
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(fused, (x,))
    assert "attnact.bn_atac_forward" in str(ep.graph)


@pytest.mark.slow
def test_outer_compile_of_resnet_cifar_in_one_graph():
    """torch.compile(model, fullgraph=True) of resnet_cifar with ATAC in training: no graph
    break, the fused operator in the graph, forward and gradients as the eager model's."""
    torch.manual_seed(0)
    model = attnact.create_model("resnet_cifar", blocks=1, act="atac", width=8).train()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    y_ref = ref(x)
    y_ref.square().sum().backward()
    assert_close(y.detach(), y_ref.detach(), **F32, name="y")
    for (k, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert_close(p.grad, q.grad, rtol=1e-4, floor=1e-4, name=k)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    explained = torch._dynamo.explain(copy.deepcopy(ref))(x)
    assert explained.graph_break_count == 0
    assert any("bn_atac_forward" in str(n.target) for g in explained.graphs for n in g.graph.nodes)


def test_declared_traffic_for_the_roofline():
    """The roofline's bytes for the fused operators, counted by hand (c, x: 1 unit, z₁: ½):
    forward = BN's statistics pass over c (1) + ATAC's A, B, C over c (4.5); backward = ATAC's
    B1, B2, B3 (10.5 on tiles, the pass that writes dx also adds up BN's sums) + BN's input
    gradient in place (reads dx and c, writes dc: 3)."""
    from attnact.perf.roofline import traffic

    bn, act, _, _ = pair(16)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    unit = x.numel() * 4
    _, ops = traffic(lambda: norm_then_act(bn, act, x).sum().backward())
    assert ops["attnact.bn_atac_forward"] == 5.5 * unit
    assert ops["attnact.bn_atac_backward"] == 13.5 * unit
