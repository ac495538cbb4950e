"""AReLU and ELSA as autograd Functions (issue #6) against the reference composition.

Every comparison is with ``implementation="reference"`` (the plain torch composition), never with
another path of the code under test. Kernels run eagerly here (tests/conftest.py); the one test
marked ``slow`` compiles them and checks the compiled path against the eager one.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attnact import ELSA, AReLU, create_act_layer, set_fused
from attnact.units import arelu_function, fused
from attnact.units.arelu import arelu_reference, elsa_gate, elsa_reference
from attnact.units.arelu_function import AReLUFunction, ELSAFunction

# "Within 1e-5 relative": element-wise, or relative to the tensor's largest magnitude where a
# gradient element is a sum whose terms cancel (ELSA's ∂/∂x adds the wrapped unit's and the
# gate's parts, in another order than autograd does for the reference).
F32 = dict(rtol=1e-5, atol=0.0, scaled=True)
KERNELS = (
    arelu_function.ARELU_FORWARD,
    arelu_function.ARELU_BACKWARD,
    arelu_function.ELSA_FORWARD,
    arelu_function.ELSA_BACKWARD,
)


def off_kink(x: torch.Tensor) -> torch.Tensor:
    """Keep finite differences away from x = 0, where the slope jumps."""
    return torch.where(x.abs() < 1e-3, torch.full_like(x, 0.1), x)


def saved_for_backward(fn):
    """(output of fn(), tensors autograd packed while it ran)."""
    packed: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, packed


def with_zeros(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[:3] = 0.0
    x.view(-1)[3:5] = -0.0
    return x


def run_unit(module: nn.Module, x0: torch.Tensor, g: torch.Tensor, *, non_leaf: bool = True):
    """Output and gradients w.r.t. the input and every parameter, through a fresh leaf."""
    leaf = x0.clone().requires_grad_()
    h = leaf * 1.0 if non_leaf else leaf  # a non-leaf input may be overwritten in place
    y = module(h)
    params = [p for _, p in sorted(module.named_parameters())]
    grads = torch.autograd.grad(y, [leaf, *params], g)
    return [y.detach().clone(), *grads]


def twin(make, **kw):
    """The same unit twice: Function and reference, with equal parameters."""
    torch.manual_seed(0)
    fn = make(implementation="function", **kw)
    ref = make(implementation="reference", **kw)
    ref.load_state_dict(fn.state_dict())
    return fn, ref


def assert_all_close(got, want, *, rtol, atol, scaled=False):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        tol = max(atol, rtol * b.abs().max().item()) if scaled else atol
        torch.testing.assert_close(a, b, rtol=rtol, atol=tol, msg=lambda m, i=i: f"item {i}: {m}")


# --- float64: numerical gradients ------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha_shape, beta_shape",
    [((1,), (1,)), ((), ()), ((3, 1, 1), (1,)), ((1, 3, 1, 1), (3, 1, 1))],
)
def test_arelu_function_gradcheck_and_gradgradcheck(alpha_shape, beta_shape):
    torch.manual_seed(0)
    x = off_kink(torch.randn(2, 3, 4, 4, dtype=torch.float64)).requires_grad_()
    # α inside (0.01, 0.99) and away from its ends, so finite differences see one branch
    alpha = torch.empty(alpha_shape, dtype=torch.float64).uniform_(0.1, 0.9).requires_grad_()
    beta = torch.empty(beta_shape, dtype=torch.float64).uniform_(-2, 2).requires_grad_()

    def f(t, a, b):
        return AReLUFunction.apply(t, a, b, False)

    assert torch.autograd.gradcheck(f, (x, alpha, beta))
    assert torch.autograd.gradgradcheck(f, (x, alpha, beta))
    # and the broadcast parameters give the reference's values and gradients
    g = torch.randn_like(x)
    got = [f(x, alpha, beta), *torch.autograd.grad(f(x, alpha, beta), (x, alpha, beta), g)]
    want = [
        arelu_reference(x, alpha, beta),
        *torch.autograd.grad(arelu_reference(x, alpha, beta), (x, alpha, beta), g),
    ]
    assert_all_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "swish", "prelu", "prelu_channelwise"])
def test_elsa_function_gradcheck_and_gradgradcheck(name):
    """Including the wrapped unit's own parameters (PReLU's slope, one or per channel)."""
    torch.manual_seed(0)
    x = off_kink(torch.randn(2, 3, 4, dtype=torch.float64)).requires_grad_()
    alpha = torch.tensor([0.35], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([-0.6], dtype=torch.float64, requires_grad=True)
    if name == "relu":  # through ELSAFunction.apply itself
        act = nn.ReLU()

        def f(t, a, b):
            return ELSAFunction.apply(t, a, b, act, ())

        assert torch.autograd.gradcheck(f, (x, alpha, beta))
        assert torch.autograd.gradgradcheck(f, (x, alpha, beta))
        return
    kw = {"num_parameters": 3} if name == "prelu_channelwise" else {}
    m = ELSA(name.split("_")[0], implementation="function", **kw).double()
    extra = {k: v.detach().clone().requires_grad_() for k, v in m.activation.named_parameters()}

    def f(t, a, b, *ps):
        p = {f"activation.{k}": v for k, v in zip(extra, ps, strict=True)}
        return torch.func.functional_call(m, {"alpha": a, "beta": b, **p}, (t,))

    inputs = (x, alpha, beta, *extra.values())
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


# --- float32: equal to the reference ---------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.4, 1.5, -0.2, 0.01, 0.99])
@pytest.mark.parametrize("inplace", [False, True])
def test_arelu_matches_reference_float32(alpha, inplace):
    """Values and all gradients within 1e-5 relative, inputs with exact ±0; α-gradient 0 where
    the clamp is inactive, and passed at its end points 0.01 and 0.99 as torch.clamp does."""
    fn, ref = twin(AReLU, alpha=alpha, beta=0.7, inplace=inplace)
    torch.manual_seed(1)
    x0 = with_zeros(torch.randn(4, 6, 5, 5))
    g = torch.randn_like(x0)
    got, want = run_unit(fn, x0, g), run_unit(ref, x0, g)
    assert_all_close(got, want, **F32)
    grad_alpha = dict(zip(["y", "x", "alpha", "beta"], got, strict=True))["alpha"]
    if 0.01 <= alpha <= 0.99:
        assert grad_alpha.abs().item() > 0
    else:
        assert grad_alpha.item() == 0.0


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "swish", "elu", "prelu", "pau"])
@pytest.mark.parametrize("alpha", [0.4, 1.5, -0.2])
def test_elsa_matches_reference_float32(name, alpha):
    """Including the gradients of the wrapped unit's parameters (PReLU, PAU)."""
    fn, ref = twin(lambda **kw: ELSA(name, **kw), alpha=alpha, beta=-0.3)
    torch.manual_seed(2)
    x0 = with_zeros(torch.randn(3, 4, 6, 6))
    g = torch.randn_like(x0)
    got, want = run_unit(fn, x0, g), run_unit(ref, x0, g)
    assert_all_close(got, want, **F32)
    names = ["y", "x", *sorted(n for n, _ in fn.named_parameters())]
    grads = dict(zip(names, got, strict=True))
    assert (grads["alpha"].item() == 0.0) == (not 0.01 <= alpha <= 0.99)


def test_arelu_branch_at_signed_zero_and_underflow():
    """x = ±0 takes the x ≥ 0 branch; a negative x whose C(α)·x underflows to −0 stays in the
    x < 0 branch. Backward tells them apart from the output's sign bit alone."""
    x0 = torch.tensor([0.0, -0.0, -1e-44, -1e-40, 1e-44, -1.0, 2.0])
    assert x0[2] != 0 and 0.01 * x0[2] == 0  # a subnormal whose product with C(α) underflows
    fn, ref = twin(AReLU, alpha=0.01, beta=0.5)
    g = torch.ones_like(x0)
    got, want = run_unit(fn, x0, g), run_unit(ref, x0, g)
    assert_all_close(got, want, rtol=0.0, atol=0.0)


# --- what is saved for backward --------------------------------------------------------------


def test_arelu_saves_one_activation_tensor_like_relu():
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    h = x * 1.0
    sizes = {}
    for impl in ("function", "reference"):
        _, packed = saved_for_backward(lambda impl=impl: AReLU(implementation=impl)(h))
        big = [t for t in packed if t.numel() == h.numel()]
        small = [t for t in packed if t.numel() != h.numel()]
        assert all(t.numel() == 1 for t in small)  # α and β
        sizes[impl] = (len(big), sum(t.numel() * t.element_size() for t in packed))
        if impl == "function":
            only = big
    _, relu_packed = saved_for_backward(lambda: nn.ReLU()(h))
    relu_bytes = sum(t.numel() * t.element_size() for t in relu_packed)
    assert sizes["function"][0] == 1
    assert only[0].numel() * only[0].element_size() == relu_bytes  # activation bytes: 1.0× ReLU
    assert sizes["function"][1] == relu_bytes + 8  # plus α and β
    assert sizes["reference"][0] >= 2 and sizes["function"][1] < sizes["reference"][1]


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "prelu", "swish"])
def test_elsa_saves_its_input_only(name):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    h = x * 1.0
    counts = {}
    for impl in ("function", "reference"):
        m = ELSA(name, implementation=impl)
        _, packed = saved_for_backward(lambda m=m: m(h))
        big = [t for t in packed if t.numel() == h.numel()]
        assert all(t.numel() <= 1 for t in packed if t.numel() != h.numel())
        counts[impl] = len(big)
        if impl == "function":
            assert len(big) == 1 and torch.equal(big[0], h)
    assert counts["reference"] >= 2


# --- in place --------------------------------------------------------------------------------


def test_arelu_inplace_reuses_storage_and_gradients_match():
    torch.manual_seed(0)
    x0, g = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    leaf = x0.clone().requires_grad_()
    h = leaf * 1.0
    ptr, version = h.data_ptr(), h._version
    m = AReLU(0.3, 0.5, inplace=True)
    y = m(h)
    assert y.data_ptr() == ptr and h._version > version
    got = [y.detach().clone(), *torch.autograd.grad(y, [leaf, m.alpha, m.beta], g)]
    _, ref = twin(AReLU, alpha=0.3, beta=0.5)
    assert_all_close(got, run_unit(ref, x0, g), **F32)


def test_inplace_on_a_leaf_that_requires_grad_is_refused_like_relu():
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        nn.ReLU(inplace=True)(x)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        AReLU(inplace=True)(x)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        AReLU(inplace=True)(x[:3])
    with torch.no_grad():  # allowed without autograd, as for ReLU
        before = x.detach().clone()
        y = AReLU(0.3, 0.5, inplace=True)(x)
        assert y.data_ptr() == x.data_ptr()
        torch.testing.assert_close(
            x, arelu_reference(before, torch.tensor(0.3), torch.tensor(0.5)), rtol=1e-5, atol=0
        )


def test_elsa_inplace_without_grad_writes_into_input():
    torch.manual_seed(0)
    m = ELSA("gelu", alpha=0.3, beta=0.2, inplace=True)
    x = torch.randn(2, 3, 4)
    want = elsa_reference(x, m.alpha, m.beta, m.activation).detach()
    with torch.no_grad():
        y = m(x)
    assert y.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, want, rtol=1e-5, atol=0)


def test_elsa_inplace_with_grad_keeps_its_input():
    """The Function saves x, so with autograd recording the result goes elsewhere."""
    fn, ref = twin(lambda **kw: ELSA("tanh", **kw), alpha=0.3, beta=0.2)
    fn.inplace = True
    torch.manual_seed(0)
    x0, g = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    h = x0.clone().requires_grad_() * 1.0
    version = h._version
    y = fn(h)
    assert y.data_ptr() != h.data_ptr() and h._version == version
    assert_all_close(run_unit(fn, x0, g), run_unit(ref, x0, g), **F32)


# --- layouts, devices, transforms, tracing ---------------------------------------------------


@pytest.mark.parametrize("make", [AReLU, lambda **kw: ELSA("gelu", **kw)], ids=["arelu", "elsa"])
def test_channels_last(make):
    fn, ref = twin(make)
    torch.manual_seed(0)
    x0 = with_zeros(torch.randn(2, 6, 5, 5)).to(memory_format=torch.channels_last)
    g = torch.randn(2, 6, 5, 5).to(memory_format=torch.channels_last)
    got, want = run_unit(fn, x0, g, non_leaf=False), run_unit(ref, x0, g, non_leaf=False)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert_all_close(got, want, **F32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("make", [AReLU, lambda **kw: ELSA("prelu", **kw)], ids=["arelu", "elsa"])
def test_cuda(make):
    fn, ref = twin(make)
    fn, ref = fn.cuda(), ref.cuda()
    torch.manual_seed(0)
    x0 = with_zeros(torch.randn(2, 6, 5, 5, device="cuda"))
    g = torch.randn_like(x0)
    got, want = run_unit(fn, x0, g), run_unit(ref, x0, g)
    assert got[0].device.type == "cuda"
    assert_all_close(got, want, **F32)


def test_function_under_vmap_and_grad_of_grad():
    """AReLUFunction carries a generated vmap rule and a differentiable backward."""
    torch.manual_seed(0)
    x = off_kink(torch.randn(5, 7, dtype=torch.float64))
    w = torch.randn(7, dtype=torch.float64)
    a, b = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)

    def outer(f):
        def loss(a, b, xi):
            return (f(xi * a.sum(), a, b) * w).sum() ** 2  # x depends on α: mixed terms

        inner = torch.func.grad(loss, argnums=(0, 1))

        def total(a, b, xi):
            ga, gb = inner(a, b, xi)
            return ga.sum() + gb.sum()

        return torch.func.vmap(torch.func.grad(total, argnums=(0, 1)), in_dims=(None, None, 0))

    got = outer(lambda t, a, b: AReLUFunction.apply(t, a, b, False))(a, b, x)
    want = outer(arelu_reference)(a, b, x)
    assert_all_close(got, want, rtol=1e-10, atol=1e-12)
    assert got[0].abs().sum() > 0


@pytest.mark.parametrize("make", [AReLU, lambda **kw: ELSA("prelu", **kw)], ids=["arelu", "elsa"])
def test_modules_under_torch_func_second_order(make):
    """MAML's pattern: grad of grad through functional_call, vmapped over tasks."""
    fn, ref = twin(make)
    fn.implementation = "auto"
    torch.manual_seed(0)
    xs = torch.randn(3, 4, 6)

    def meta(m):
        params = {k: v.detach() for k, v in m.named_parameters()}

        def loss(p, x):
            return (torch.func.functional_call(m, p, (x,)) ** 2).mean()

        def adapted(p, x):
            g = torch.func.grad(loss)(p, x)
            return loss({k: v - 0.1 * g[k] for k, v in p.items()}, x)

        return torch.func.vmap(torch.func.grad(adapted), in_dims=(None, 0))(params, xs)

    got, want = meta(fn), meta(ref)
    assert got.keys() == want.keys()
    assert_all_close(list(got.values()), list(want.values()), **F32)


def test_elsa_functional_call_swapped_parameters_get_gradients():
    """Backward recomputes with the tensors forward used, not the module's own ones."""
    m = ELSA("prelu", alpha=0.4, beta=0.1)
    ref = ELSA("prelu", alpha=0.4, beta=0.1, implementation="reference")
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    w = torch.tensor([0.6], requires_grad=True)
    grads = []
    for unit in (m, ref):
        y = torch.func.functional_call(unit, {"activation.weight": w}, (x,))
        grads.append(torch.autograd.grad(y.sum(), w)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=0)
    assert m.activation.weight.item() == pytest.approx(0.25)  # the module's own is untouched


def test_fx_symbolic_trace_sees_the_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), AReLU(), ELSA("gelu"))
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=0)


# --- when the reference runs -----------------------------------------------------------------


def test_elsa_does_not_recompute_batchnorm_in_training():
    """ATAC holds BatchNorms: recomputing it in backward would count each batch twice."""
    fn, ref = twin(lambda **kw: ELSA("atac", channels=4, **kw))
    fn.implementation = "auto"
    torch.manual_seed(0)
    x0, g = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    assert_all_close(run_unit(fn, x0, g), run_unit(ref, x0, g), **F32)
    tracked = [b for n, b in fn.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(b) == 1 for b in tracked)


def test_elsa_random_unit_gradient_belongs_to_its_forward_noise():
    """RReLU draws slopes in training: backward must use the forward's draw. For x < 0,
    F = (r + C(α))·x, so ∂F/∂x = F/x elementwise; likewise (1 + σ(β)) above zero."""
    m = ELSA("rrelu", alpha=0.3, beta=0.2)
    torch.manual_seed(0)
    x = off_kink(torch.randn(200)).requires_grad_()
    y = m(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(gx, (y / x).detach(), rtol=1e-5, atol=1e-6)


def test_elsa_maxout_keeps_the_reference():
    m = ELSA("maxout", implementation="function")
    x = torch.randn(2, 6, 3, 3, requires_grad=True)
    y = m(x)
    a = m.activation(x)
    torch.testing.assert_close(y, a + elsa_gate(a, m.alpha, m.beta))
    y.sum().backward()
    assert x.grad is not None and m.alpha.grad is not None


# --- module API ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [AReLU, lambda **kw: ELSA("gelu", **kw)], ids=["arelu", "elsa"])
def test_implementation_argument(make):
    with pytest.raises(ValueError, match="implementation"):
        make(implementation="fast")
    for impl in ("auto", "function", "reference"):
        assert set(make(implementation=impl).state_dict()) == {"alpha", "beta"}
    assert "implementation='reference'" in repr(make(implementation="reference"))
    assert "implementation" not in repr(make())


def test_registry_passes_implementation_and_inplace():
    m = create_act_layer("elsa_swish", implementation="reference", inplace=True)
    assert m.implementation == "reference" and m.inplace
    assert create_act_layer("arelu", inplace=True).inplace


def test_elsa_refuses_an_activation_that_works_in_place():
    with pytest.raises(ValueError, match="in place"):
        ELSA(nn.ReLU(inplace=True))
    ELSA(create_act_layer("prelu", inplace=True))  # accepts the flag and ignores it: fine


# --- the kernel switch and the compile fallback (no compilation here) ------------------------


@pytest.fixture
def restore_switch():
    yield
    set_fused(None)


def test_switch_env_and_function(monkeypatch, restore_switch):
    monkeypatch.setenv(fused.ENV_NO_COMPILE, "1")
    set_fused(None)
    assert not fused.fused_enabled()
    monkeypatch.setenv(fused.ENV_NO_COMPILE, "0")
    assert fused.fused_enabled()
    set_fused(False)
    assert not fused.fused_enabled()
    with pytest.raises(ValueError, match="enabled"):
        set_fused("yes")  # type: ignore[arg-type]


class FakeCompile:
    """Stands in for torch.compile: counts calls, optionally fails like a missing compiler."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.calls = fail, 0

    def __call__(self, fn, **kwargs):
        def compiled(*args):
            self.calls += 1
            if self.fail:
                raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
            return fn(*args)

        return compiled


@pytest.fixture
def fake_compiler(monkeypatch, restore_switch):
    set_fused(True)
    monkeypatch.setattr(fused, "_compile_unavailable", lambda device_type: None)
    for k in KERNELS:
        k.reset()
    yield lambda fail: monkeypatch.setattr(torch, "compile", FakeCompile(fail)) or torch.compile
    for k in KERNELS:
        k.reset()


def test_units_call_the_compiled_kernels_forward_and_backward(fake_compiler):
    fake = fake_compiler(False)
    fn, ref = twin(AReLU)
    x0, g = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert_all_close(run_unit(fn, x0, g), run_unit(ref, x0, g), **F32)
    assert fake.calls == 2  # one forward kernel, one backward kernel
    efn, eref = twin(lambda **kw: ELSA("tanh", **kw))
    assert_all_close(run_unit(efn, x0, g), run_unit(eref, x0, g), **F32)
    assert fake.calls == 4
    # create_graph=True: backward runs eagerly so that it is recorded
    x = x0.clone().requires_grad_()
    (gx,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
    assert fake.calls == 5 and gx.requires_grad


def test_failed_compilation_falls_back_to_eager_once(fake_compiler):
    fake = fake_compiler(True)
    fn, ref = twin(AReLU)
    x0, g = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    with pytest.warns(RuntimeWarning, match="InvalidCxxCompiler"):
        got = run_unit(fn, x0, g)
    assert_all_close(got, run_unit(ref, x0, g), **F32)
    calls = fake.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_unit(fn, x0, g)
    assert fake.calls == calls  # stays eager, no second attempt, no second warning
    assert "InvalidCxxCompiler" in fused.fused_status()["eager"]["_arelu_forward"]["cpu"]


def test_bad_input_does_not_switch_compilation_off(fake_compiler):
    fake_compiler(True)
    kernel = arelu_function.ARELU_FORWARD
    with pytest.raises(RuntimeError):  # the eager run raises the input's own error
        kernel(torch.randn(3), torch.randn(4), torch.randn(1), False)
    assert kernel.unavailable == {}


def test_no_cxx_compiler_means_eager(monkeypatch, restore_switch):
    monkeypatch.setattr(fused, "_KERNELS", list(fused._KERNELS))  # forget the test's kernel
    monkeypatch.setattr(fused, "_cxx_compiler", lambda: None)
    assert "C++ compiler" in fused._compile_unavailable("cpu")
    set_fused(True)
    monkeypatch.setattr(torch, "compile", FakeCompile(True))
    kernel = fused.FusedKernel(lambda x: x * 2)
    with torch.no_grad():
        torch.testing.assert_close(kernel(torch.ones(2)), torch.full((2,), 2.0))
    assert "C++ compiler" in kernel.unavailable["cpu"]


@pytest.mark.parametrize("x_shape", [(2, 3, 4, 5), (3, 1), (4,), (2, 0, 3)])
@pytest.mark.parametrize("p_shape", [(), (1,), (3, 1, 1), (1, 3, 1, 1), (5,), (2, 1, 1, 1),
                                     (1, 1, 1, 1, 1), (3, 4, 5), (4, 1), (7,)])
def test_broadcast_check_agrees_with_torch(x_shape, p_shape):
    from attnact.units.arelu import _broadcasts_into

    try:
        want = torch.broadcast_shapes(x_shape, p_shape) == torch.Size(x_shape)
    except RuntimeError:
        want = False
    assert _broadcasts_into(torch.Size(x_shape), torch.zeros(p_shape)) == want


def test_select_and_masked_equal_where_eagerly_and_compiled():
    """The eager forms (lerp on a 0/1 mask, product by the mask) are bit-equal to torch.where."""
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        t = torch.randn(3, 5, 7, dtype=dtype)
        mask = torch.randn(3, 5, 7) > 0
        a = torch.tensor([0.01, 1.62, 0.99, 1e-30, 3.0], dtype=dtype).view(1, 5, 1)
        b = torch.tensor([-0.25, 1.0, 2.0, 0.7, 1e30], dtype=dtype).view(1, 5, 1)
        for m in (mask, fused.condition(mask, dtype)):  # bool, or converted once (eager: 0/1)
            assert torch.equal(fused.select(m, a, b), torch.where(mask, a, b))
            assert torch.equal(fused.masked(m, t), torch.where(mask, t, 0.0))
        def both_forms(m, t, a, b):
            c = fused.condition(m, t.dtype)
            return fused.select(c, a, b), fused.masked(c, t)

        both = torch.compile(both_forms, backend="eager", fullgraph=True)(mask, t, a, b)
        assert torch.equal(both[0], torch.where(mask, a, b))
        assert torch.equal(both[1], torch.where(mask, t, 0.0))


def test_fused_mode_sets_and_restores(restore_switch):
    set_fused(True)
    with fused.fused_mode(False):
        assert not fused.fused_enabled()
    assert fused._forced is True
    set_fused(None)
    with pytest.raises(RuntimeError), fused.fused_mode(True):
        assert fused.fused_enabled()
        raise RuntimeError("boom")
    assert fused._forced is None


def test_environment_is_checked_once_per_device_and_limit_restored(monkeypatch, restore_switch):
    """The availability check (dynamo, a C++ compiler on PATH) runs once per device type, not on
    every call; the raised recompile limit applies during the call only."""
    checks = []
    monkeypatch.setattr(fused, "_KERNELS", list(fused._KERNELS))  # forget the test's kernel
    monkeypatch.setattr(fused, "_compile_unavailable", lambda d: checks.append(d))
    limits = []

    def compile_(fn, **kwargs):
        def compiled(*args):
            limits.append(torch._dynamo.config.recompile_limit)
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    set_fused(True)
    kernel = fused.FusedKernel(lambda x: x * 2)
    # (dynamo's config module does not survive monkeypatch's undo: patch it its own way)
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=8):
        for _ in range(3):
            kernel(torch.ones(2))
        assert torch._dynamo.config.recompile_limit == 8
    assert checks == ["cpu"]
    assert limits == [fused.RECOMPILE_LIMIT] * 3


# --- compiled: one slow test -----------------------------------------------------------------


@pytest.mark.slow
def test_compiled_kernels_and_outer_compile(restore_switch):
    """The compiled kernels agree with the eager ones and the reference; a model of AReLU and
    ELSA units compiles as one graph (the units give the outer compile the reference)."""
    reason = fused._compile_unavailable("cpu")
    if reason:
        pytest.skip(reason)
    for k in KERNELS:
        k.reset()
    torch.manual_seed(0)
    x0, g = with_zeros(torch.randn(2, 4, 5, 5)), torch.randn(2, 4, 5, 5)
    makers = {
        "arelu": lambda **kw: AReLU(alpha=1.5, **kw),
        "arelu_inplace": lambda **kw: AReLU(alpha=0.3, inplace=True, **kw),
        "elsa_gelu": lambda **kw: ELSA("gelu", **kw),
        "elsa_prelu": lambda **kw: ELSA("prelu", **kw),
    }
    try:
        for name, make in makers.items():
            fn, ref = twin(make)
            set_fused(False)
            eager = run_unit(fn, x0, g)
            set_fused(True)
            compiled = run_unit(fn, x0, g)
            assert_all_close(compiled, eager, rtol=1e-6, atol=1e-7)
            assert_all_close(compiled, run_unit(ref, x0, g), **F32)
            assert all(k.unavailable == {} for k in KERNELS), name
        assert all(k._compiled is not None for k in KERNELS)

        # in place without autograd, compiled: the input's storage holds the result
        inplace_makers = (
            lambda **kw: AReLU(alpha=0.3, inplace=True, **kw),
            lambda **kw: ELSA("tanh", inplace=True, **kw),
        )
        for make in inplace_makers:
            fn, ref = twin(make)
            h = x0.clone()
            with torch.no_grad():
                y = fn(h)
                want = ref(x0.clone())
            assert y.data_ptr() == h.data_ptr()
            torch.testing.assert_close(h, want, rtol=1e-5, atol=0)
        # compiled, the sign bit is read without torch.signbit (a scalar loop in inductor):
        # every value whose sign bit is set must still be found, ±0, subnormals and ±inf included
        special = torch.tensor([0.0, -0.0, -1e-44, 1e-44, -1e-40, float("-inf"), float("inf"),
                                -1.0, 1.0])
        read = torch.compile(arelu_function._sign_bit_set, fullgraph=True)(special)
        assert torch.equal(read, torch.signbit(special))
        x_edge = torch.tensor([0.0, -0.0, -1e-44, -1e-40, 1e-44, -1.0, 2.0])
        fn, ref = twin(AReLU, alpha=0.01, beta=0.5)
        ones = torch.ones_like(x_edge)
        assert_all_close(run_unit(fn, x_edge, ones), run_unit(ref, x_edge, ones), rtol=0, atol=0)
        # channels_last recompiles for the new strides
        fn, ref = twin(AReLU)
        x_cl, g_cl = (t.to(memory_format=torch.channels_last) for t in (x0, g))
        got = run_unit(fn, x_cl, g_cl, non_leaf=False)
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        assert_all_close(got, run_unit(ref, x_cl, g_cl, non_leaf=False), **F32)
        assert all(k.unavailable == {} for k in KERNELS)

        model = nn.Sequential(nn.Conv2d(4, 4, 1), AReLU(), nn.Conv2d(4, 4, 1), ELSA("prelu"))
        explained = torch._dynamo.explain(model)(x0)
        assert explained.graph_break_count == 0 and explained.graph_count == 1
        compiled_model = torch.compile(model, fullgraph=True)
        got = run_unit(compiled_model, x0, g)
        want = run_unit(model, x0, g)
        assert_all_close(got, want, rtol=1e-5, atol=1e-6)
    finally:
        for k in KERNELS:
            k.reset()
        torch._dynamo.reset()
