"""ATAC's fast and memory-efficient paths (issues #6, #14) against the reference composition.

Each test runs on both backends of those paths (the ``backend`` fixture): the fused native
operators of :mod:`attnact.units.native` (skipped where they do not build) and the autograd
Function of :mod:`attnact.units.atac_function`.

Every comparison is with ``implementation="reference"`` (the plain ``torch.nn`` composition),
never with another path of the code under test. Kernels run eagerly here (tests/conftest.py);
the one test marked ``slow`` compiles them, and compiles a model with ATAC as one graph.

"Within 1e-5 relative" for float32: per element |got − want| ≤ 1e-5·|want| + floor, with the
floor 1e-5 × the tensor's largest magnitude. The floor is needed because a parameter gradient
element is a sum over all N·H·W positions whose terms cancel (BatchNorm's backward subtracts
the batch means), so an element near zero carries the rounding error of the large terms; both
paths err by ~2e-7 of the maximum against a float64 computation.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from atac_helpers import assert_close, run_unit
from torch import nn

import attnact
from attnact import ATAC, SEActivation, memory_efficient_mode, set_memory_efficient
from attnact.units import atac as atac_module
from attnact.units import atac_function, fused, native

F32 = dict(rtol=1e-5, floor=1e-5)
PATHS = ("fast", "memory_efficient")


@pytest.fixture(autouse=True, params=["native", "function"])
def backend(request):
    """The backend of the fast and memory-efficient paths for this test."""
    if request.param == "native":
        native.set_native(True)
        if not native.available():
            native.set_native(None)
            pytest.skip(f"native operators unavailable: {native.why_not()}")
    else:
        native.set_native(False)
    yield request.param
    native.set_native(None)


@pytest.fixture(autouse=True)
def _global_switch_off():
    """Each test starts (and leaves) with the global switch at its default (off)."""
    set_memory_efficient(False)
    yield
    set_memory_efficient(None)


def make(path: str, channels: int = 16, **kw) -> ATAC:
    if path == "reference":
        return ATAC(channels, implementation="reference", **kw)
    return ATAC(channels, memory_efficient=path == "memory_efficient", **kw)


def randomise(m: ATAC, seed: int = 1) -> ATAC:
    """Non-trivial BN affine parameters and running statistics, so a test sees their use."""
    g = torch.Generator().manual_seed(seed)
    for bn in (m.bn1, m.bn2):
        c = bn.num_features
        bn.weight.data = torch.rand(c, generator=g) + 0.5
        bn.bias.data = torch.randn(c, generator=g) * 0.3
        bn.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return m


def twins(path: str, *, train: bool = True, channels: int = 16, **kw) -> tuple[ATAC, ATAC]:
    """(unit on ``path``, reference unit) with equal state."""
    torch.manual_seed(0)
    ref = randomise(make("reference", channels, **kw))
    got = make(path, channels, **kw)
    got.load_state_dict(ref.state_dict())
    return got.train(train), ref.train(train)


def saved_storages(fn) -> tuple[object, dict[int, int]]:
    """(fn(), {storage pointer: bytes}) of the tensors autograd saved while fn ran; a storage
    saved by several ops (a conv's input that is also the previous ReLU's output) counts once."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, storages


def buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_buffers()}


# --- float64: numerical gradients ------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("use_relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradcheck_float64(path, train, use_relu, layout):
    """Input and all six parameters, through the module (BN in the given mode)."""
    m, _ = twins(path, train=train, channels=4, use_relu=use_relu)
    m.double()
    assert m.path_for(torch.zeros(2, 4, 1, 1, dtype=torch.float64)) == path
    x = torch.randn(3, 4, 3, 2, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in m.named_parameters()]

    def f(t, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (t,))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), *params), eps=1e-6, atol=1e-6)


# --- float32: equal to the reference ---------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("use_relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_float32_matches_reference(path, train, use_relu, layout):
    """Output, input gradient and every parameter gradient; running statistics after the step."""
    m, ref = twins(path, train=train, use_relu=use_relu)
    torch.manual_seed(2)
    x0, g = torch.randn(4, 16, 6, 6), torch.randn(4, 16, 6, 6)
    if layout == "channels_last":
        x0, g = (t.contiguous(memory_format=torch.channels_last) for t in (x0, g))
    assert m.path_for(x0) == path and ref.path_for(x0) == "reference"
    got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
    assert got.keys() == want.keys()
    for name in want:
        if name == "bn1.bias" and train and not use_relu:
            # Without δ, β₁ shifts every position of a channel of a alike, and BN₂ (batch
            # statistics) removes that shift: ∂L/∂β₁ is 0 in exact arithmetic, and both
            # implementations return rounding noise. Check it is noise on both.
            scale = want["bn1.weight"].abs().max()
            assert got[name].abs().max() < 1e-5 * scale and want[name].abs().max() < 1e-5 * scale
            continue
        assert_close(got[name], want[name], **F32, name=name)
    if layout == "channels_last":
        assert got["y"].is_contiguous(memory_format=torch.channels_last)
    b_got, b_want = buffers(m), buffers(ref)
    for k in b_want:
        if k.endswith("num_batches_tracked"):
            assert int(b_got[k]) == int(b_want[k]) == int(train)
        else:  # statistics of z computed by a GEMM here and a convolution there (see below)
            torch.testing.assert_close(b_got[k], b_want[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(64, 16), (6, 16, 9), (4, 16, 1, 1), (3, 16, 7, 1)])
def test_lower_rank_and_degenerate_shapes(path, shape):
    """(N, C) and (N, C, L) inputs, and 1×1 or W = 1 maps, with r = 4. (Not N·H·W = 2: with two
    values per channel the normalised values are ±1, BN₁'s parameter gradients are pure
    cancellation, and the float32 reference itself is 3e-4 of their maximum off float64.)"""
    m, ref = twins(path, r=4)
    torch.manual_seed(3)
    x0, g = torch.randn(shape), torch.randn(shape)
    got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
    assert got["y"].shape == shape
    for name in want:
        assert_close(got[name], want[name], **F32, name=name)


@pytest.mark.parametrize("path", PATHS)
def test_non_contiguous_input_and_gradient(path):
    m, ref = twins(path)
    torch.manual_seed(4)
    x0 = torch.randn(4, 16, 6, 10)[..., ::2]  # neither NCHW- nor channels_last-contiguous
    g = torch.randn(4, 6, 5, 16).permute(0, 3, 1, 2)
    got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
    for name in want:
        assert_close(got[name], want[name], **F32, name=name)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_for_input_only_or_parameters_only(path):
    m, ref = twins(path)
    torch.manual_seed(5)
    x0, g = torch.randn(4, 16, 5, 5), torch.randn(4, 16, 5, 5)
    # parameters frozen: only ∂L/∂x
    for p in (*m.parameters(), *ref.parameters()):
        p.requires_grad_(False)
    xs = [x0.clone().requires_grad_() for _ in range(2)]
    got = torch.autograd.grad(m(xs[0]), xs[0], g)[0]
    want = torch.autograd.grad(ref(xs[1]), xs[1], g)[0]
    assert_close(got, want, **F32, name="x")
    # input without grad: only the parameters'
    for p in (*m.parameters(), *ref.parameters()):
        p.requires_grad_(True)
    got = torch.autograd.grad(m(x0), list(m.parameters()), g)
    want = torch.autograd.grad(ref(x0), list(ref.parameters()), g)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, **F32)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_inference_without_grad(train):
    """no_grad: same output and (train) the same running-statistics update as the reference."""
    m, ref = twins("fast", train=train)
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        y, want = m(x), ref(x)
    assert_close(y, want, **F32)
    for k, v in buffers(ref).items():
        torch.testing.assert_close(buffers(m)[k], v, rtol=1e-6, atol=1e-7, msg=k)


# --- BatchNorm's training semantics ----------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_running_statistics_bit_equal_for_equal_input(path, layout, backend):
    """With integer-valued x and W₁ the GEMM and the convolution give the same z₁ bit for bit;
    then bn1's update equals nn.BatchNorm2d's bit for bit (the same native kernel, the same
    factor). bn2's input a already differs in the last bit (γ/std is folded into a scale), so
    its statistics are compared to float rounding, in float64. The native kernels sum in double
    where BatchNorm runs Welford's update in float: the means agree to the bit, the running
    variance to float rounding."""
    m, ref = twins(path)
    w1 = torch.randint(-3, 4, m.conv1.weight.shape).float()
    with torch.no_grad():
        for u in (m, ref):
            u.conv1.weight.copy_(w1)
    x = torch.randint(-4, 5, (8, 16, 5, 5)).float()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    m(x).sum().backward()
    ref(x).sum().backward()
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        if backend == "native" and k == "running_var":
            torch.testing.assert_close(m.bn1.running_var, ref.bn1.running_var, rtol=1e-6,
                                       atol=0)
            continue
        assert torch.equal(getattr(m.bn1, k), getattr(ref.bn1, k)), k
    assert torch.equal(m.bn2.num_batches_tracked, ref.bn2.num_batches_tracked)

    m64, ref64 = twins(path)
    m64.double(), ref64.double()
    x64 = torch.randn(8, 16, 5, 5, dtype=torch.float64)
    m64(x64).sum().backward()
    ref64(x64).sum().backward()
    for k, v in buffers(ref64).items():
        torch.testing.assert_close(buffers(m64)[k], v, rtol=1e-13, atol=1e-15, msg=k)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_momentum_and_three_steps(path, momentum):
    """momentum None: the cumulative average (factor 1/num_batches_tracked), as nn.BatchNorm2d."""
    m, ref = twins(path)
    for u in (m, ref):
        u.bn1.momentum = u.bn2.momentum = momentum
    torch.manual_seed(6)
    for _ in range(3):
        x = torch.randn(4, 16, 3, 3) * 2 + 0.5
        m(x).sum().backward()
        ref(x).sum().backward()
    for k, v in buffers(ref).items():
        torch.testing.assert_close(buffers(m)[k], v, rtol=1e-6, atol=1e-7, msg=k)
    assert int(m.bn1.num_batches_tracked) == 3


@pytest.mark.parametrize("path", PATHS)
def test_track_running_stats_false_uses_batch_statistics_in_eval(path):
    torch.manual_seed(0)
    ref = ATAC(8, implementation="reference")
    for bn in (ref.bn1, ref.bn2):
        bn.track_running_stats = False
        bn.running_mean = bn.running_var = bn.num_batches_tracked = None
    m = copy.deepcopy(ref)
    m.implementation = "auto"
    m.memory_efficient = path == "memory_efficient"
    x0, g = torch.randn(4, 8, 3, 3), torch.randn(4, 8, 3, 3)
    for mode in (True, False):
        m.train(mode), ref.train(mode)
        assert m.path_for(x0) == path
        got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
        for name in want:
            assert_close(got[name], want[name], **F32, name=name)


def test_memory_efficient_backward_does_not_update_running_statistics():
    """The recomputation in backward uses forward's batch statistics: running_mean/var and
    num_batches_tracked change in forward, once, and not in backward."""
    m, ref = twins("memory_efficient")
    torch.manual_seed(7)
    x = torch.randn(4, 16, 5, 5, requires_grad=True)
    before = buffers(m)
    y = m(x)
    after_forward = buffers(m)
    assert int(after_forward["bn1.num_batches_tracked"]) == 1
    assert not torch.equal(after_forward["bn1.running_mean"], before["bn1.running_mean"])
    y.backward(torch.randn_like(y))
    for k, v in buffers(m).items():
        assert torch.equal(v, after_forward[k]), k  # bit for bit: backward wrote nothing
    ref(x.detach()).sum()
    for k, v in buffers(ref).items():
        torch.testing.assert_close(buffers(m)[k], v, rtol=1e-6, atol=1e-7, msg=k)


def test_one_value_per_channel_in_training_raises_batchnorms_error():
    for path in PATHS:
        m = make(path, 8)
        x = torch.randn(1, 8, 1, 1)
        assert m.path_for(x) == "reference"
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            m(x)
        m.eval()
        assert m.path_for(x) == path and m(x).shape == x.shape


# --- what is saved for backward --------------------------------------------------------------


def test_saved_bytes_single_unit(backend):
    """Per unit, against nn.ReLU on the same input: memory-efficient 1.0× (x itself plus
    per-channel vectors and the weights), fast 2.5× (x, z₁, z₂ at r = 2; native: 1.5×, x and z₁),
    reference 4.0×."""
    torch.manual_seed(0)
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    h = x * 1.0
    _, relu = saved_storages(lambda: nn.ReLU()(h))
    act = h.numel() * h.element_size()
    assert sum(relu.values()) == act
    ratio, big = {}, {}
    for path in ("reference", "fast", "memory_efficient"):
        m, h = make(path), x * 1.0
        y, saved = saved_storages(lambda m=m, h=h: m(h))
        y.sum().backward()  # and the saved tensors serve a backward
        ratio[path] = sum(saved.values()) / act
        big[path] = sum(b for b in saved.values() if b >= act // 2) / act
    fast = 1.5 if backend == "native" else 2.5
    assert big == {"reference": 4.0, "fast": fast, "memory_efficient": 1.0}
    # target <= 1.5; here x plus the weights and per-channel vectors (1% at this size)
    assert ratio["memory_efficient"] <= 1.02
    assert ratio["memory_efficient"] < ratio["fast"] < ratio["reference"]
    # the one activation-sized tensor the memory-efficient path saves is its input's storage
    h = x * 1.0
    _, saved = saved_storages(lambda: make("memory_efficient")(h))
    assert h.untyped_storage().data_ptr() in saved


def test_saved_bytes_resnet_cifar():
    """ResNet-20 (b = 3), batch 8: bytes saved for backward by a whole forward, ATAC network
    over ReLU network. Measured: reference 2.82×, fast 2.14×, memory-efficient 1.46×."""
    x = torch.randn(8, 3, 32, 32)
    total = {}
    for name in ("relu", "reference", "fast", "memory_efficient"):
        torch.manual_seed(0)
        model = attnact.create_model("resnet_cifar", act="relu" if name == "relu" else "atac",
                                     blocks=3)
        units = [u for u in model.modules() if isinstance(u, ATAC)]
        assert len(units) == (0 if name == "relu" else 19)
        for u in units:
            if name == "reference":
                u.implementation = "reference"
            else:
                u.memory_efficient = name == "memory_efficient"
            assert u.path_for(torch.zeros(2, u.channels, 2, 2)) == name
        out, saved = saved_storages(lambda model=model: model(x))
        out.logsumexp(1).sum().backward()
        total[name] = sum(saved.values())
    ratio = {k: v / total["relu"] for k, v in total.items()}
    assert ratio["memory_efficient"] <= 1.5, ratio
    assert ratio["memory_efficient"] < ratio["fast"] < ratio["reference"], ratio
    assert ratio["fast"] <= 2.2, ratio


def test_se_activation_takes_the_reference_which_saves_only_x():
    """use_global: the gate is N×C×1×1, so the reference saves x and vectors already."""
    m = SEActivation(16)
    m.memory_efficient = True
    x = torch.randn(4, 16, 6, 6, requires_grad=True)
    h = x * 1.0
    assert m.path_for(h) == "reference"
    y, saved = saved_storages(lambda: m(h))
    act = h.numel() * h.element_size()
    assert sorted(b for b in saved.values() if b >= act // 2) == [act]
    ref = ATAC(16, use_global=True, implementation="reference")
    ref.load_state_dict(m.state_dict())
    g = torch.randn_like(y)
    got, want = run_unit(m, h.detach(), g), run_unit(ref, h.detach(), g)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


# --- the global switch -----------------------------------------------------------------------


def test_default_path_on_cpu_takes_the_reference_for_small_inputs(backend):
    """Below CPU_FAST_PATH_MIN (elements or H·W) the default path is the reference on CPU; an
    explicit memory_efficient=False/True or implementation="function" keeps the Function. The
    native operators cost one call each way, so with them small inputs stay on the fast path."""
    min_numel, min_hw = atac_module.CPU_FAST_PATH_MIN
    side = math.isqrt(min_hw - 1)  # H·W just below the limit
    default, fast, me = ATAC(8), ATAC(8, memory_efficient=False), ATAC(8, memory_efficient=True)
    forced = ATAC(8, implementation="function")
    small_map = torch.empty(min_numel // (8 * side * side) + 1, 8, side, side)
    assert small_map.numel() >= min_numel
    few = torch.empty(2, 8, 16, 16)
    big = torch.empty(min_numel // (8 * min_hw) + 1, 8, 12, 12)
    assert big.numel() >= min_numel and min_hw <= 12 * 12
    small = "fast" if backend == "native" else "reference"
    for x in (small_map, few):
        assert [u.path_for(x) for u in (default, fast, me, forced)] == [
            small, "fast", "memory_efficient", "fast"]
    assert default.path_for(big) == "fast"
    with memory_efficient_mode():
        assert default.path_for(few) == "memory_efficient"


def test_global_switch_changes_existing_modules(monkeypatch, backend):
    """Read at every forward: modules built with memory_efficient=None (the default) follow it,
    modules built with True/False keep their choice."""
    monkeypatch.setattr(atac_module, "CPU_FAST_PATH_MIN", (0, 0))  # small inputs: see below
    default, fast, me = ATAC(8), ATAC(8, memory_efficient=False), ATAC(8, memory_efficient=True)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    h = x * 1.0
    act = h.numel() * h.element_size()

    def activation_bytes(m):
        _, saved = saved_storages(lambda: m(h))
        return sum(b for b in saved.values() if b >= act // 2) / act

    assert [u.path_for(h) for u in (default, fast, me)] == ["fast", "fast", "memory_efficient"]
    assert activation_bytes(default) == (1.5 if backend == "native" else 2.5)
    set_memory_efficient(True)
    assert attnact.units.memory_efficient_enabled()
    assert [u.path_for(h) for u in (default, fast, me)] == [
        "memory_efficient", "fast", "memory_efficient"
    ]
    assert activation_bytes(default) == 1.0
    set_memory_efficient(False)
    with memory_efficient_mode():
        assert default.path_for(h) == "memory_efficient"
        with memory_efficient_mode(False):
            assert default.path_for(h) == "fast"
        assert default.path_for(h) == "memory_efficient"
    assert default.path_for(h) == "fast"
    # None: the environment variable decides
    set_memory_efficient(None)
    monkeypatch.setenv(atac_module.ENV_MEMORY_EFFICIENT, "1")
    assert default.path_for(h) == "memory_efficient"
    monkeypatch.setenv(atac_module.ENV_MEMORY_EFFICIENT, "0")
    assert default.path_for(h) == "fast"
    monkeypatch.delenv(atac_module.ENV_MEMORY_EFFICIENT)
    assert default.path_for(h) == "fast"


def test_backward_follows_the_path_chosen_in_forward():
    m, ref = twins("fast")
    m.memory_efficient = None
    x0, g = torch.randn(4, 16, 3, 3), torch.randn(4, 16, 3, 3)
    leaf = x0.clone().requires_grad_()
    with memory_efficient_mode():
        y = m(leaf)
    (gx,) = torch.autograd.grad(y, leaf, g)  # outside the block: still the saved x only
    want = run_unit(ref, x0, g)["x"]
    assert_close(gx, want, **F32)


def test_switch_and_argument_checks():
    with pytest.raises(ValueError, match="enabled"):
        set_memory_efficient(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="enabled"), memory_efficient_mode("yes"):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="memory_efficient"):
        ATAC(8, memory_efficient="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="implementation"):
        ATAC(8, implementation="fast")
    with pytest.raises(ValueError, match="memory_efficient=True needs implementation"):
        ATAC(8, memory_efficient=True, implementation="reference")
    assert "memory_efficient=True" in repr(ATAC(8, memory_efficient=True))
    assert "implementation='reference'" in repr(ATAC(8, implementation="reference"))
    assert "memory_efficient" not in repr(ATAC(8)) and "implementation" not in repr(ATAC(8))
    m = attnact.create_act_layer("atac", channels=8, memory_efficient=True)
    assert m.memory_efficient is True


# --- state_dict ------------------------------------------------------------------------------


def test_state_dict_round_trip_between_implementations():
    """Train two steps on each path; the state loads into every other implementation, with the
    same keys, and gives the same eval output."""
    states = {}
    x = torch.randn(4, 16, 5, 5)
    for path in ("fast", "memory_efficient", "reference"):
        torch.manual_seed(0)
        m = make(path)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
        states[path] = m.state_dict()
    keys = set(states["reference"])
    assert all(set(s) == keys for s in states.values())
    for a, b in (("fast", "reference"), ("memory_efficient", "reference")):
        for k in keys:
            torch.testing.assert_close(states[a][k], states[b][k], rtol=1e-5, atol=1e-6, msg=k)
    for src, dst in (("fast", "reference"), ("reference", "memory_efficient"),
                     ("memory_efficient", "fast")):
        u, v = make(src), make(dst)
        u.load_state_dict(states[src])
        v.load_state_dict(states[src])
        u.eval(), v.eval()
        with torch.no_grad():
            assert_close(u(x), v(x), **F32)


# --- when the reference runs -----------------------------------------------------------------


def test_changed_submodules_take_the_reference():
    x = torch.randn(2, 8, 3, 3)
    m = ATAC(8, memory_efficient=False)  # the fast path even for this small input
    assert m.path_for(x) == "fast"
    sync = copy.deepcopy(m)
    sync.bn1 = nn.SyncBatchNorm.convert_sync_batchnorm(sync.bn1)
    biased = copy.deepcopy(m)
    biased.conv2 = nn.Conv2d(4, 8, 1)
    fixed = copy.deepcopy(m)
    fixed.bn2 = nn.BatchNorm2d(8, affine=False)
    for u in (sync, biased, fixed):
        assert u.path_for(x) == "reference"
        u.implementation = "function"
        assert u.path_for(x) == "reference"  # the Function would compute something else
    assert m.path_for(x.half()) == "reference"
    meta = torch.empty(2, 8, 3, 3, device="meta")
    on_meta = copy.deepcopy(m).to("meta")
    assert on_meta.path_for(meta) == "reference" and on_meta(meta).shape == meta.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.path_for(x) == "reference"


def test_hooks_on_submodules_are_honoured():
    """A forward hook on conv1 (feature extraction, Grad-CAM) sees conv1 run."""
    m = ATAC(8, memory_efficient=False)
    seen = []
    handle = m.conv1.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    x = torch.randn(2, 8, 3, 3)
    assert m.path_for(x) == "reference"
    m(x)
    assert seen == [torch.Size([2, 4, 3, 3])]
    handle.remove()
    assert m.path_for(x) == "fast"


def test_torch_func_transforms_take_the_reference():
    m, ref = twins("fast", train=False)
    x = torch.randn(3, 16, 4, 4)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(module, p):
        return (torch.func.functional_call(module, p, (x,)) ** 2).sum()

    got = torch.func.grad(lambda p: loss(m, p))(params)
    want = torch.func.grad(lambda p: loss(ref, p))(params)
    for k in want:
        assert_close(got[k], want[k], **F32, name=k)


def test_double_backward_needs_the_reference():
    """The Function's backward treats the batch statistics as constants: it refuses to be
    differentiated; the reference supports create_graph=True."""
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    for path in PATHS:
        (gx,) = torch.autograd.grad(make(path, 8)(x).pow(2).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            gx.sum().backward()
    (gx,) = torch.autograd.grad(make("reference", 8)(x).pow(2).sum(), x, create_graph=True)
    gx.sum().backward()
    assert x.grad is not None


def test_elsa_around_atac_still_matches():
    """ELSA wraps ATAC (elsa_atac); in eval ELSA's Function recomputes ATAC in backward."""
    torch.manual_seed(0)
    fn = attnact.ELSA("atac", channels=8)
    ref = attnact.ELSA("atac", channels=8, implementation="reference")
    ref.activation.implementation = "reference"
    ref.load_state_dict(fn.state_dict())
    x0, g = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 4, 4)
    for mode in (True, False):
        fn.train(mode), ref.train(mode)
        got, want = run_unit(fn, x0, g), run_unit(ref, x0, g)
        for name in want:
            assert_close(got[name], want[name], **F32, name=name)


# --- devices ---------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cuda(path, layout):
    m, ref = twins(path)
    m, ref = m.cuda(), ref.cuda()
    torch.manual_seed(0)
    x0 = torch.randn(4, 16, 6, 6, device="cuda")
    g = torch.randn_like(x0)
    if layout == "channels_last":
        x0, g = (t.contiguous(memory_format=torch.channels_last) for t in (x0, g))
    assert m.path_for(x0) == path
    got, want = run_unit(m, x0, g), run_unit(ref, x0, g)
    assert got["y"].device.type == "cuda"
    for name in want:
        assert_close(got[name], want[name], **F32, name=name)
    for k, v in buffers(ref).items():
        torch.testing.assert_close(buffers(m)[k], v, rtol=1e-5, atol=1e-6, msg=k)


# --- compiled: one slow test -----------------------------------------------------------------


@pytest.mark.slow
def test_compiled_kernels_and_outer_compile(backend):
    """The compiled kernels agree with the eager ones and the reference on both paths and
    layouts; a small model with ATAC compiles with fullgraph=True (no graph break: under an
    outer compile the unit gives dynamo the reference) and trains like the eager model."""
    reason = fused._compile_unavailable("cpu")
    if reason:
        pytest.skip(reason)
    for k in atac_function.KERNELS:
        k.reset()
    try:
        torch.manual_seed(1)
        x0, g = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
        for layout in ("nchw", "channels_last"):
            if layout == "channels_last":
                x0, g = (t.contiguous(memory_format=torch.channels_last) for t in (x0, g))
            for path in PATHS:
                m, ref = twins(path, channels=8)
                attnact.set_fused(False)
                eager = run_unit(copy.deepcopy(m), x0, g)
                attnact.set_fused(True)
                compiled = run_unit(m, x0, g)
                want = run_unit(ref, x0, g)
                for name in want:
                    assert_close(compiled[name], eager[name], rtol=1e-6, floor=1e-6, name=name)
                    assert_close(compiled[name], want[name], **F32, name=name)
        if backend == "function":  # the native operators replace the Function's kernels
            assert all(k._compiled is not None and k.unavailable == {}
                       for k in atac_function.KERNELS)

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), ATAC(8),
                              nn.Conv2d(8, 8, 3, padding=1), ATAC(8, memory_efficient=True))
        twin = copy.deepcopy(model)
        x = torch.randn(4, 3, 6, 6)
        explained = torch._dynamo.explain(copy.deepcopy(model))(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1
        compiled_model = torch.compile(model, fullgraph=True)
        y = compiled_model(x)
        y.square().mean().backward()
        want = twin(x)
        want.square().mean().backward()
        assert_close(y.detach(), want.detach(), **F32)
        for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
            assert_close(p.grad, q.grad, rtol=1e-4, floor=1e-5, name=n)
    finally:
        attnact.set_fused(None)
        torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_kernels_stay_compiled_across_units_and_networks(monkeypatch):
    """One kernel meets several ranks, layouts, flags and requires_grad states in a process;
    with dynamo's default limit of 8 variants per function, ATAC's gate kernel fell back to
    eager (with a warning) during `attnact bench` (a bare unit, then ResNet, then MNIST-Conv)."""
    from attnact.perf import bench
    from attnact.units import atac_function
    from attnact.units.fused import fused_status

    monkeypatch.setitem(bench.HOSTS, "u", bench.Host("u", None, (4, 6, 6), 3))
    monkeypatch.setitem(bench.HOSTS, "r", bench.Host("r", "resnet_cifar", (3, 16, 16), 2,
                                                     {"blocks": 1}))
    monkeypatch.setitem(bench.HOSTS, "m", bench.Host("m", "mnist_conv", (1, 28, 28), 2,
                                                     channels_last=False))
    attnact.set_fused(True)
    try:
        for kernel in atac_function.KERNELS:
            kernel.reset()
        bench.run_bench(("u", "r", "m"), rounds=1, warmup=0)
        assert fused_status()["eager"] == {}
    finally:
        attnact.set_fused(None)
