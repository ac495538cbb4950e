"""ATAC's native operators (issue #14) against the reference composition, and in the tools
that trace a model: torch.compile without graph breaks, torch.export, ONNX export in eval.

The shapes exercise what the kernels special-case: tiles of 16 pixels with a remainder (H·W not
a multiple of 16), channel counts that are multiples of 16 (the AVX-512 transposes of
channels_last tiles) and ones that are not, r that does not divide C, both layouts, batch and
running statistics in either BatchNorm. Comparisons are with ``implementation="reference"``
(the plain torch.nn composition), float64 by gradcheck and float32 within 1e-5 relative.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from atac_helpers import assert_close, run_unit
from torch import nn

import attnact
from attnact import ATAC
from attnact.units import native

pytestmark = [
    pytest.mark.skipif(not native.available(),
                       reason=f"native operators unavailable: {native.why_not()}"),
    pytest.mark.usefixtures("native_on"),
]

F32 = dict(rtol=1e-5, floor=1e-5)


def randomise(m: ATAC, seed: int = 1) -> ATAC:
    g = torch.Generator().manual_seed(seed)
    for bn in (m.bn1, m.bn2):
        c = bn.num_features
        bn.weight.data = torch.rand(c, generator=g) + 0.5
        bn.bias.data = torch.randn(c, generator=g) * 0.3
        bn.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return m


def twins(channels: int, r: float = 2, use_relu: bool = True, memory_efficient: bool = False,
          dtype: torch.dtype = torch.float32) -> tuple[ATAC, ATAC]:
    torch.manual_seed(0)
    ref = randomise(ATAC(channels, r=r, use_relu=use_relu, implementation="reference"))
    got = ATAC(channels, r=r, use_relu=use_relu, memory_efficient=memory_efficient,
               implementation="function")
    got.load_state_dict(ref.state_dict())
    return got.to(dtype), ref.to(dtype)


def layout(t: torch.Tensor, name: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if name == "channels_last" else t


SHAPES = [  # (N, C, H, W, r): tile remainders, C % 16 == 0 or not, r not dividing C
    (3, 16, 5, 7, 2),
    (2, 32, 4, 8, 2),
    (2, 6, 3, 3, 2),
    (2, 7, 4, 5, 3),
]


GRADCHECK_SHAPES = [  # small: gradcheck perturbs every element
    (2, 16, 3, 6, 2),
    (2, 5, 2, 3, 2),
]


@pytest.mark.parametrize("shape", GRADCHECK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("me", [False, True], ids=["fast", "memory_efficient"])
def test_gradcheck_float64(shape, fmt, me):
    n, c, h, w, r = shape
    for train in (True, False):
        m, _ = twins(c, r=r, memory_efficient=me, dtype=torch.float64)
        m.train(train)
        x = layout(torch.randn(n, c, h, w, dtype=torch.float64), fmt).requires_grad_()
        params = [m.conv1.weight, m.bn1.weight, m.bn1.bias, m.conv2.weight, m.bn2.weight,
                  m.bn2.bias]

        def f(x, *p, m=m):
            return torch.func.functional_call(
                m, dict(zip(["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight",
                             "bn2.weight", "bn2.bias"], p, strict=True)), (x,))

        # functional_call swaps parameters without autograd transforms: the native path runs
        assert m.path_for(x) == ("memory_efficient" if me else "fast")
        assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


# channels_last float with C and C/r multiples of 16: training runs on pixel rows
# (rows_training.h), and a backward with running statistics reads their z1 rows as tiles
ROWS_TRAINING_SHAPES = [
    (3, 32, 5, 7, 2),  # 105 pixels: the last block of 8 holds 1
    (2, 48, 3, 5, 3),  # C1 = 16, C = 48: output vectors in a block of two, then one
    (1, 64, 6, 6, 2),  # C1 = 32
]


@pytest.mark.parametrize("shape", [*SHAPES, (4, 64, 8, 8, 2), *ROWS_TRAINING_SHAPES],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("me", [False, True], ids=["fast", "memory_efficient"])
@pytest.mark.parametrize("use_relu", [True, False], ids=["relu", "norelu"])
def test_float32_matches_reference(shape, fmt, me, use_relu):
    n, c, h, w, r = shape
    for train in (True, False):
        m, ref = twins(c, r=r, use_relu=use_relu, memory_efficient=me)
        m.train(train), ref.train(train)
        x0 = layout(torch.randn(n, c, h, w) * 2, fmt)
        g = layout(torch.randn(n, c, h, w), fmt)
        got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
        assert got["y"].is_contiguous(memory_format=torch.channels_last) == (
            fmt == "channels_last" and h * w > 1)
        for k in want:
            if k == "bn1.bias" and train and not use_relu:
                # BN2 removes any shift of its input, so ∂/∂β₁ is 0: both sides are rounding
                # noise, bounded by the scale of the neighbouring gradient
                scale = want["bn1.weight"].abs().max()
                assert got[k].abs().max() <= 1e-5 * scale and want[k].abs().max() <= 1e-5 * scale
                continue
            assert_close(got[k], want[k], **F32, name=f"{k} train={train}")
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(m.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=k)


# channels_last float with C % 16 == 0: the eval forward runs on pixel rows (pixel_rows.h)
ROWS_SHAPES = [
    (3, 16, 5, 7, 2),   # 105 pixels: the last block of 8 holds 1
    (2, 32, 4, 4, 16),  # C1 = 2
    (2, 48, 3, 5, 3),   # C1 = 16; three output vectors, a block of two then one
    (1, 64, 6, 6, 1),   # C1 = 64
]


@pytest.mark.parametrize("shape", ROWS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("use_relu", [True, False], ids=["relu", "norelu"])
def test_eval_inference_on_pixel_rows_matches_reference(shape, use_relu):
    n, c, h, w, r = shape
    m, ref = twins(c, r=r, use_relu=use_relu)
    m.eval(), ref.eval()
    x = layout(torch.randn(n, c, h, w) * 2, "channels_last")
    with torch.no_grad():
        got, want = m(x), ref(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, want, **F32, name="y")


def test_mixed_statistics_and_no_running_statistics():
    """BN1 with batch statistics and BN2 with running ones (and the reverse), and
    track_running_stats=False in eval (batch statistics, nothing updated)."""
    x0, g = torch.randn(4, 16, 4, 4), torch.randn(4, 16, 4, 4)
    for first, second in ((True, False), (False, True)):
        m, ref = twins(16)
        m.bn1.train(first), ref.bn1.train(first)
        m.bn2.train(second), ref.bn2.train(second)
        got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
        for k in want:
            assert_close(got[k], want[k], **F32, name=k)
    m, ref = twins(16)
    for u in (m, ref):
        for bn in (u.bn1, u.bn2):
            bn.track_running_stats = False
            bn.running_mean = bn.running_var = bn.num_batches_tracked = None
        u.eval()
    got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
    for k in want:
        assert_close(got[k], want[k], **F32, name=k)


def test_saved_bytes_and_op_calls():
    """The fast path saves x and z₁ (1.5× its input at r = 2), the memory-efficient one x only;
    one forward and one backward operator call per unit."""
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    act = x.numel() * 4
    for me, want in ((False, 1.5), (True, 1.0)):
        h = x * 1.0
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor, storages=storages) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        m = ATAC(16, memory_efficient=me)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(h)
        assert sum(b for b in storages.values() if b >= act // 4) / act == want
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            m(x * 1.0).sum().backward()
        names = [e.key for e in prof.key_averages()]
        assert "attnact::atac_forward" in names and "attnact::atac_backward" in names
        del y


def test_double_backward_refuses():
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    (gx,) = torch.autograd.grad(ATAC(8)(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_operator_checks():
    m = ATAC(8)
    w1, w2 = m.conv1.weight, m.conv2.weight
    args = (m.bn1.weight, m.bn1.bias)
    with pytest.raises(RuntimeError, match="4-D"):
        torch.ops.attnact.atac_forward(torch.randn(2, 8), w1, *args, w2, m.bn2.weight,
                                       m.bn2.bias, None, None, None, None, True, True, 1e-5,
                                       1e-5, True, False)
    with pytest.raises(RuntimeError, match="running statistics"):
        torch.ops.attnact.atac_forward(torch.randn(2, 8, 2, 2), w1, *args, w2, m.bn2.weight,
                                       m.bn2.bias, None, None, None, None, False, True, 1e-5,
                                       1e-5, True, False)


def test_fake_tensors_match_the_kernels():
    """register_fake's shapes, dtypes and layouts are those the kernels return."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    m = randomise(ATAC(16)).train()
    for fmt in ("nchw", "channels_last"):
        x = layout(torch.randn(2, 16, 5, 5), fmt)
        args = (x, m.conv1.weight, m.bn1.weight, m.bn1.bias, m.conv2.weight, m.bn2.weight,
                m.bn2.bias, m.bn1.running_mean, m.bn1.running_var, m.bn2.running_mean,
                m.bn2.running_var, True, True, 1e-5, 1e-5, True, True)
        real = torch.ops.attnact.atac_forward(*args)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake = torch.ops.attnact.atac_forward(*args)
        for a, b in zip(real, fake, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()
        g = torch.randn_like(real[0])
        bargs = (g, x, real[1], m.conv1.weight, m.bn1.weight, m.bn1.bias, m.conv2.weight,
                 m.bn2.weight, m.bn2.bias, *real[2:], True, True, 1e-5, 1e-5, True)
        real_b = torch.ops.attnact.atac_backward(*bargs)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake_b = torch.ops.attnact.atac_backward(*bargs)
        for a, b in zip(real_b, fake_b, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()


def test_torch_export_and_onnx_eval():
    """torch.export keeps the operator (fake implementation); the ONNX exporter gets the
    reference (its TorchScript tracing does not take the native path)."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), ATAC(16)).eval()
    randomise(model[1])
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(model, (x,))
    assert "attnact.atac_forward" in str(ep.graph)
    torch.testing.assert_close(ep.module()(x), model(x))
    onnx = pytest.importorskip("onnx")
    import io

    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False)
    assert onnx.load_from_string(buf.getvalue()).graph.node


@pytest.mark.slow
def test_outer_compile_keeps_the_operators_in_one_graph():
    """torch.compile(model, fullgraph=True) of a network with ATAC: no graph break, the native
    operators in the graph, forward and gradients equal to the eager reference."""
    attnact.set_fused(True)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), ATAC(16), nn.Conv2d(16, 4, 1))
        ref = copy.deepcopy(model)
        ref[1].implementation = "reference"
        randomise(model[1]), randomise(ref[1])
        x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
        compiled = torch.compile(model, fullgraph=True)
        y = compiled(x)
        y.square().sum().backward()
        y_ref = ref(x)
        y_ref.square().sum().backward()
        assert_close(y.detach(), y_ref.detach(), **F32, name="y")
        for (k, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
            assert_close(p.grad, q.grad, **F32, name=k)
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=k)
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0
        assert any("atac_forward" in str(n.target) for g in explained.graphs for n in g.graph.nodes)
    finally:
        attnact.set_fused(None)


FIRST_CALL_COMPILED = """
import torch
from attnact.models import create_model
from attnact.units import native
model = create_model("resnet_cifar", act="atac", num_classes=10, blocks=1, in_channels=3)
assert not native._state["loaded"]
explained = torch._dynamo.explain(model.train())(torch.randn(4, 3, 16, 16))
print(explained.graph_break_count,
      any("bn_atac_forward" in str(n.target) for g in explained.graphs for n in g.graph.nodes))
"""


def test_first_call_under_compile_builds_the_operators():
    # a fresh process whose first ATAC call is traced by torch.compile: it must build (here:
    # load from the cache) the operators and put them in the graph, not trace the reference
    import subprocess

    out = subprocess.run([sys.executable, "-c", FIRST_CALL_COMPILED], capture_output=True,
                         text=True, timeout=600, check=True)
    assert out.stdout.split()[-2:] == ["0", "True"], out.stdout + out.stderr


def test_declared_traffic_for_the_roofline():
    """The bytes the roofline counts for the operators, against the passes counted by hand
    (x: 1 unit, z₁: ½ at r = 2): forward A (x, z₁) + B (z₁) + C (x, z₁, y) = 4.5; backward on
    tiles B1 (g, x, z₁; gh₂, g·s) 4.5 + B2 (z₁, gh₂; gh₁) 2 + B3 (x, z₁, gh₁, g·s; dx) 4, and
    on pixel rows (C and C/r multiples of 16, channels_last, AVX-512) n₂ kept too: + 2."""
    from attnact.perf.roofline import traffic

    m = randomise(ATAC(16, memory_efficient=False)).train()
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    unit = x.numel() * 4
    _, ops = traffic(lambda: m(x).sum().backward())
    assert ops["attnact.atac_forward"] == 4.5 * unit
    assert ops["attnact.atac_backward"] == 10.5 * unit
    rows = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    m = randomise(ATAC(32, memory_efficient=False)).train()
    x = torch.randn(4, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    _, ops = traffic(lambda: m(x).sum().backward())
    assert ops["attnact.atac_backward"] == (12.5 if rows else 10.5) * x.numel() * 4


def _mapped(name: str) -> set[str]:
    """Paths of the shared libraries whose file name contains ``name`` mapped in this process."""
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if name in line and "/" in line}


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or "backend: OpenMP" not in torch.__config__.parallel_info(),
                    reason="Linux (/proc/self/maps) and an OpenMP build of PyTorch")
def test_kernels_share_torchs_openmp_runtime():
    # The kernels' at::parallel_for is an OpenMP region only when the extension is compiled with
    # -fopenmp (without it they ran serially); and a second OpenMP runtime beside torch's own
    # would give two thread pools that oversubscribe the cores.
    m, _ = twins(16)
    m(torch.randn(2, 16, 4, 4)).sum().backward()
    extension = [p for p in _mapped("attnact_native_") if p.endswith(".so")]
    assert len(extension) == 1, extension
    with open(extension[0], "rb") as lib:
        assert b"GOMP_parallel" in lib.read(), "the extension was compiled without OpenMP"
    assert len({p for p in _mapped("gomp") if ".so" in p}) == 1, _mapped("gomp")


@pytest.mark.parametrize("me", [False, True], ids=["fast", "memory_efficient"])
def test_every_thread_count_matches_reference(me):
    # The tiles are split into one chunk per thread, each with its own partial sums: 1, 2 and 3
    # threads give different summation orders, each within float32 rounding of the reference,
    # and each the same on every call at that thread count.
    before = torch.get_num_threads()
    m, ref = twins(16, memory_efficient=me)
    x0 = layout(torch.randn(8, 16, 9, 10) * 2, "channels_last")
    g = layout(torch.randn(8, 16, 9, 10), "channels_last")
    want = run_unit(ref, x0, g)
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            got, again = run_unit(m, x0, g), run_unit(m, x0, g)
            for name, w in want.items():
                assert_close(got[name], w, **F32, name=f"{threads} threads: {name}")
                assert torch.equal(got[name], again[name]), f"{threads} threads: {name}"
    finally:
        torch.set_num_threads(before)
