"""attnact's native CPU operators: ATAC (Eq. 4-5 of the ATAC paper) forward and backward as
fused C++ kernels.

What they compute is :class:`~attnact.units.atac_function.ATACFunction`'s: z₁ = W₁x,
a = δ(BN₁(z₁)), z₂ = W₂a, y = σ(BN₂(z₂)) ⊙ x, with nn.BatchNorm2d's semantics (batch statistics
in training, running ones in eval, either per BatchNorm). Where the Function calls the native
1×1 convolutions and separate element-wise kernels, ``csrc/atac.cpp`` runs the per-pixel
C → C/r → C MLP on tiles of 16 pixels held in registers and cache, with the element-wise work
and the per-channel sums the next pass needs in the same pass. The passes the data dependencies
leave (BN₁'s statistics need all of z₁ before any a, BN₂'s all of z₂ before any σ, and each
BatchNorm's input gradient two sums over the whole batch first):

* forward, training: A (x → z₁, its sums), B (z₁ → a → z₂, its sums), C (x, z₁ → y); in eval
  one pass, x → y (for float channels_last with C a multiple of 16 on AVX-512, on pixel rows
  with both BatchNorms folded into the weights and no tile transposes: ``csrc/pixel_rows.h``);
* backward: B1 (BN₂'s sums; keeps gh₂ and g·σ for B2), B2 (n₂ again, dz₂, ∂W₂, da, gh₁ and
  BN₁'s sums), B3 (dz₁, ∂W₁, dx); on pixel rows B1 keeps n₂ too.

Where C/r is a multiple of 16 as well, training runs the same passes on pixel rows
(``csrc/rows_training.h``); with fewer channels in z₁ the tiles stay faster (resnet_cifar's
first stage, C = 16, r = 2; ``benchmarks/atac-rows-training-issue14.md``).

Saved for backward: x and z₁ on the fast path (``keep_z1``), x only on the memory-efficient path
(z₁ is recomputed in each backward pass), plus per-channel statistics.

The kernels live in ``csrc/`` (package data) and are built on first use with
``torch.utils.cpp_extension.load`` (g++ and ninja; ninja comes with the package's
dependencies), cached under torch's extension directory. The binary is built for the vector
instruction set torch itself dispatches to on this CPU (``torch.backends.cpu.get_cpu_capability``:
AVX2 or AVX-512), never ``-march=native``, and that set is part of the extension's name, so a
cache shared with a different CPU does not load a binary that this one cannot run.

Registered with ``torch.library``: ``attnact::atac_forward`` and ``attnact::atac_backward``
(C++ kernels), fake-tensor implementations (so that ``torch.compile`` and ``torch.export``
trace them without running them), and autograd for the forward in C++
(``csrc/atac_autograd.cpp``, so that no Python runs per call; its backward calls
``attnact::atac_backward``, which itself refuses to be differentiated). :func:`atac` is the
entry point the ATAC module calls; it also updates the running statistics.

:func:`available` says whether the operators can be used here (``None`` from :func:`why_not`),
else the reason: ``ATTNACT_NO_NATIVE=1`` or :func:`set_native` ``(False)``, no C++ compiler, or
the build failed (a warning says why once; ATAC then takes its autograd Function). CPU only:
on CUDA ATAC keeps the Function and its compiled kernels.

AReLU (Eq. 7 of the AReLU paper) is ``attnact::arelu`` (``csrc/arelu.cpp``): one element-wise
pass each way, saving y as :class:`~attnact.units.arelu_function.AReLUFunction` does, with its
autograd in C++ so that no Python runs per call; a backward with ``create_graph=True``
differentiates ATen operations instead, so double backward works. ELSA around torch's
parameter-free activations is ``attnact::elsa`` (``csrc/elsa.cpp``, :func:`elsa_activation`
names the ones it knows): ATen's activation, then the gate in one pass; it saves x, as
:class:`~attnact.units.arelu_function.ELSAFunction` does, and recomputes the activation's
gradient from x with ATen's own backward functions. Other activations (learnable ones, users'
modules) stay on the Function.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

__all__ = ["TRAFFIC", "atac", "available", "bn_atac", "build", "elsa_activation", "gate_ready",
           "ready", "set_native", "why_not"]

ENV_NO_NATIVE = "ATTNACT_NO_NATIVE"
_CSRC = Path(__file__).with_name("csrc")
TILE = 16  # pixels per tile of the kernels (csrc/atac.cpp)
_lock = threading.Lock()
_state: dict[str, Any] = {"loaded": False, "error": None}
_forced: bool | None = None
_env_off = os.environ.get(ENV_NO_NATIVE, "") not in ("", "0")  # read once: ready() is traced

# Per operator, the bytes a call moves (attnact.perf.roofline): each kernel makes several passes
# over some of its tensors, which the operator's inputs and outputs alone do not show.
TRAFFIC: dict[str, Callable[[Any, Any], int]] = {}


def set_native(enabled: bool | None) -> None:
    """Use the native operators where they fit (``True``, the default when they build), never
    (``False``), or follow ``ATTNACT_NO_NATIVE`` again (``None``)."""
    global _forced, _env_off
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    _forced = enabled
    if enabled is None:
        _env_off = os.environ.get(ENV_NO_NATIVE, "") not in ("", "0")


def _switched_on() -> bool:
    return _forced if _forced is not None else not _env_off


def _flags() -> list[str]:
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                "-mprefer-vector-width=512"]
    if cap == "AVX2":
        return ["-mavx2", "-mfma"]
    return []


_SOURCES = ("atac.cpp", "atac_autograd.cpp", "arelu.cpp", "elsa.cpp")
# included by the sources: part of the name's hash too
_HEADERS = ("elementwise.h", "pixel_rows.h", "rows_training.h")

# ATen's at::parallel_for is a header template: in an OpenMP build of PyTorch it is an
# ``omp parallel`` region, which a translation unit compiled without -fopenmp turns into a
# serial loop (the kernels then ran on one thread whatever torch.set_num_threads said). Linking
# with -fopenmp records libgomp.so.1, the soname of the runtime PyTorch already loaded, so the
# loader reuses that one and a single OpenMP thread pool serves ATen and these kernels.
_OPENMP = ("-fopenmp",) if "backend: OpenMP" in torch.__config__.parallel_info() else ()


def _name() -> str:
    """The extension's name: the instruction set and a hash of the sources, so that a cache
    never serves a binary built from other sources or for another CPU (and a rebuild never
    overwrites a library that a running process has loaded)."""
    cap = torch.backends.cpu.get_cpu_capability().lower()
    digest = hashlib.sha256()
    for src in (*_SOURCES, *_HEADERS):
        digest.update((_CSRC / src).read_bytes())
    digest.update(" ".join([*_flags(), *_OPENMP]).encode())
    return f"attnact_native_{cap}_{digest.hexdigest()[:10]}"


def _ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH; the PyPI package's binary sits in the
    environment's bin directory, which is not on PATH when the venv is not activated."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except (ImportError, AttributeError):
        pass  # cpp_extension then says that ninja is missing


def build() -> None:
    """Build (or load from the cache) and register the operators; raises on failure."""
    with _lock:
        if _state["loaded"]:
            return
        from torch.utils import cpp_extension

        _ninja_on_path()
        cpp_extension.load(
            name=_name(),
            sources=[str(_CSRC / src) for src in _SOURCES],
            extra_cflags=["-O3", "-fno-math-errno", *_flags(), *_OPENMP],
            extra_ldflags=list(_OPENMP),  # a new list: cpp_extension appends to it
            is_python_module=False,
            verbose=False,
        )
        _register_python_parts()
        _state["loaded"] = True


def why_not() -> str | None:
    """Why the native operators are not used here, or None when they are (builds on first
    call)."""
    if _forced is False:
        return "switched off (set_native(False))"
    if _forced is None and _env_off:
        return f"{ENV_NO_NATIVE} is set"
    if _state["error"] is not None:
        return str(_state["error"])
    if not _state["loaded"]:
        try:
            build()
        except Exception as exc:  # no compiler, or a failed build: the other paths remain
            _state["error"] = f"build failed ({type(exc).__name__}: {exc})".splitlines()[0]
            warnings.warn(f"attnact: native ATAC kernels unavailable: {_state['error']}",
                          RuntimeWarning, stacklevel=2)
            return _state["error"]
    return None


def available() -> bool:
    """Whether the native operators can run here (built on first call)."""
    return why_not() is None


def ready(x: torch.Tensor) -> bool:
    """Whether ATAC on ``x`` takes the native operators: a CPU tensor, the switch on, not under
    TorchScript tracing or ONNX export, and the operators built (the first call builds them,
    under ``torch.compile`` too)."""
    if x.device.type != "cpu" or not _switched_on():
        return False
    # torch.jit re-exports is_tracing, unannotated, without listing it in __all__
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # type: ignore[attr-defined, no-untyped-call]
        return False  # TorchScript and the ONNX exporter get the other paths
    if torch.compiler.is_compiling():
        return bool(_built_for_tracing())
    return _state["loaded"] or why_not() is None


def _built_for_tracing() -> bool:
    """Whether the operators are built, building them if need be: TorchDynamo runs this
    function itself while it traces (outside the graph, once) and keeps the answer as a
    constant, so a model whose first call is under ``torch.compile`` gets the native operators
    too instead of tracing the reference."""
    return why_not() is None


# What torch.compiler.assume_constant_result(_built_for_tracing) does, without importing
# TorchDynamo with attnact (that decorator imports it, seconds and its optional dependencies,
# only to set this flag); test_first_call_under_compile_builds_the_operators checks that
# TorchDynamo still reads it.
_built_for_tracing._dynamo_marked_constant = True  # type: ignore[attr-defined]


# --- registration ----------------------------------------------------------------------------


def _register_python_parts() -> None:
    @torch.library.register_fake("attnact::atac_forward")  # type: ignore[untyped-decorator]
    def _(x: Tensor, w1: Tensor, g1: Tensor, b1: Tensor, w2: Tensor, g2: Tensor, b2: Tensor,
          rm1: Tensor | None, rv1: Tensor | None, rm2: Tensor | None, rv2: Tensor | None,
          batch1: bool, batch2: bool, eps1: float, eps2: float, relu: bool,
          keep_z1: bool) -> tuple[Tensor, ...]:
        fmt = _format(x)
        c1 = w1.shape[0]
        y = torch.empty_like(x, memory_format=fmt)
        if keep_z1:  # z1 in storage of the kernel's tiles of TILE pixels (tiles or rows)
            tiles = -(-(x.shape[2] * x.shape[3]) // TILE)
            z1 = x.new_empty((x.shape[0], tiles, c1, TILE))
        else:
            z1 = x.new_empty((0,))
        d = torch.float64  # the statistics, in double (the running update's precision)
        return (y, z1, g1.new_empty(c1, dtype=d), g1.new_empty(c1, dtype=d),
                g2.new_empty(x.shape[1], dtype=d), g2.new_empty(x.shape[1], dtype=d))

    @torch.library.register_fake("attnact::atac_backward")  # type: ignore[untyped-decorator]  # returns unannotated
    def _(grad: Tensor, x: Tensor, z1: Tensor, w1: Tensor, g1: Tensor, b1: Tensor, w2: Tensor,
          g2: Tensor, b2: Tensor, mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor,
          batch1: bool, batch2: bool, eps1: float, eps2: float,
          relu: bool) -> tuple[Tensor, ...]:
        return (torch.empty_like(x, memory_format=_format(x)), torch.empty_like(w1),
                torch.empty_like(g1), torch.empty_like(b1), torch.empty_like(w2),
                torch.empty_like(g2), torch.empty_like(b2))

    # The forward operators' autograd is C++ (csrc/atac_autograd.cpp): no Python per call.
    # The backward operators keep this Python one, which that C++ takes only when backward
    # records a graph (create_graph=True).
    def no_double_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        raise RuntimeError(
            "attnact::atac_backward is once_differentiable: it treats the batch statistics as "
            "constants, so a second derivative would be wrong; use ATAC(..., "
            "implementation='reference') for double backward")

    # without an autograd kernel torch would differentiate the backward silently as zero
    torch.library.register_autograd("attnact::atac_backward", no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)

    def fwd_bytes(args: Any, out: Any) -> int:
        x, keep = args[0], args[16]
        batch1, batch2 = args[11], args[12]
        xb: int = x.numel() * x.element_size()
        zb: int = xb * args[1].shape[0] // x.shape[1]
        need_z1 = keep or batch1 or batch2
        passes = 0
        if need_z1:
            passes += xb + zb  # A: read x, write z1
        if batch2:
            passes += zb  # B: read z1
        passes += 2 * xb + (zb if need_z1 else 0)  # C: read x (and z1), write y
        return passes

    def bwd_bytes(args: Any, out: Any) -> int:
        # the passes of csrc/atac.cpp's backward_impl; tile padding left out
        x, z1, batch1, batch2 = args[1], args[2], args[13], args[14]
        xb: int = x.numel() * x.element_size()
        zb: int = xb * args[3].shape[0] // x.shape[1]
        z_read = zb if z1.numel() else 0  # else z1 is recomputed from x
        n2 = xb if _trains_on_rows(x, args[3].shape[0]) else 0  # kept by B1 on rows only
        total = 0
        if batch2:
            total += 2 * xb + z_read + 2 * xb + n2  # B1: reads g, x, z1; writes gh2, g*s (n2)
        need_x = not z1.numel() or not batch2 or not batch1
        total += z_read + (xb if need_x else 0)  # B2 reads z1 (and x)
        total += xb + n2 if batch2 else xb  # ... gh2 (and n2) from B1, or g
        if batch1:
            total += zb + (0 if batch2 else xb)  # writes gh1 (and g*s)
            total += 2 * xb + z_read + zb + xb  # B3: reads x, z1, gh1, g*s; writes dx
        else:
            total += (xb if batch2 else 0) + xb  # reads g*s; writes dx
        return total

    _register_bn_atac(fwd_bytes, bwd_bytes)

    for name in ("attnact::arelu", "attnact::arelu_forward"):
        torch.library.register_fake(name)(_arelu_fake)

    def elsa_fake(x: Tensor, alpha: Tensor, beta: Tensor, kind: str, p1: float,
                  p2: float) -> Tensor:
        return _arelu_fake(x, alpha, beta)

    for name in ("attnact::elsa", "attnact::elsa_forward"):
        torch.library.register_fake(name)(elsa_fake)

    @torch.library.register_fake("attnact::elsa_backward")  # type: ignore[untyped-decorator]
    def _(grad: Tensor, x: Tensor, alpha: Tensor, beta: Tensor, kind: str, p1: float,
          p2: float) -> tuple[Tensor, ...]:
        return torch.empty_like(x), torch.empty_like(alpha), torch.empty_like(beta)

    @torch.library.register_fake("attnact::arelu_backward")  # type: ignore[untyped-decorator]  # returns unannotated
    def _(grad: Tensor, y: Tensor, alpha: Tensor, beta: Tensor) -> tuple[Tensor, ...]:
        return torch.empty_like(y), torch.empty_like(alpha), torch.empty_like(beta)

    TRAFFIC["attnact.atac_forward"] = fwd_bytes
    TRAFFIC["attnact.atac_backward"] = bwd_bytes


def _register_bn_atac(fwd_bytes: Callable[[Any, Any], int],
                      bwd_bytes: Callable[[Any, Any], int]) -> None:
    """Fake implementations, the backward's autograd and declared traffic of
    ``attnact::bn_atac_forward`` /
    ``attnact::bn_atac_backward`` (BatchNorm then ATAC, csrc/atac.cpp)."""
    @torch.library.register_fake("attnact::bn_atac_forward")  # type: ignore[untyped-decorator]
    def _(c: Tensor, g0: Tensor, b0: Tensor, rm0: Tensor | None, rv0: Tensor | None,
          batch0: bool, eps0: float, w1: Tensor, g1: Tensor, b1: Tensor, w2: Tensor, g2: Tensor,
          b2: Tensor, rm1: Tensor | None, rv1: Tensor | None, rm2: Tensor | None,
          rv2: Tensor | None, batch1: bool, batch2: bool, eps1: float, eps2: float, relu: bool,
          keep_z1: bool) -> tuple[Tensor, ...]:
        c1 = w1.shape[0]
        y = torch.empty_like(c, memory_format=_format(c))
        if keep_z1:
            tiles = -(-(c.shape[2] * c.shape[3]) // TILE)
            z1 = c.new_empty((c.shape[0], tiles, c1, TILE))
        else:
            z1 = c.new_empty((0,))
        d = torch.float64
        ch = c.shape[1]
        return (y, z1, g0.new_empty(ch, dtype=d), g0.new_empty(ch, dtype=d),
                g1.new_empty(c1, dtype=d), g1.new_empty(c1, dtype=d),
                g2.new_empty(ch, dtype=d), g2.new_empty(ch, dtype=d))

    @torch.library.register_fake("attnact::bn_atac_backward")  # type: ignore[untyped-decorator]
    def _(grad: Tensor, c: Tensor, z1: Tensor, g0: Tensor, b0: Tensor, mean0: Tensor,
          var0: Tensor, w1: Tensor, g1: Tensor, b1: Tensor, w2: Tensor, g2: Tensor, b2: Tensor,
          mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor, batch0: bool, batch1: bool,
          batch2: bool, eps0: float, eps1: float, eps2: float,
          relu: bool) -> tuple[Tensor, ...]:
        return (torch.empty_like(c, memory_format=_format(c)), torch.empty_like(g0),
                torch.empty_like(b0), torch.empty_like(w1), torch.empty_like(g1),
                torch.empty_like(b1), torch.empty_like(w2), torch.empty_like(g2),
                torch.empty_like(b2))

    def no_double_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        raise RuntimeError(
            "attnact::bn_atac_backward is once_differentiable: it treats the batch statistics "
            "as constants, so a second derivative would be wrong; call act(norm(x)) with "
            "ATAC(..., implementation='reference') for double backward")

    torch.library.register_autograd("attnact::bn_atac_backward", no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)

    def bn_fwd_bytes(args: Any, out: Any) -> int:
        c, batch0 = args[0], args[5]
        # ATAC's passes over c in place of x, plus BN0's statistics pass (reads c)
        atac_args = (c, args[7], *args[8:13], *args[13:17], args[17], args[18], args[19],
                     args[20], args[21], args[22])
        c_bytes: int = c.numel() * c.element_size()
        return fwd_bytes(atac_args, out) + (c_bytes if batch0 else 0)

    def bn_bwd_bytes(args: Any, out: Any) -> int:
        # ATAC's backward passes over c (as x; the one that writes dx also adds up BN0's sums),
        # then BN0's input gradient in place: reads dx and c, writes dc
        grad, c, z1 = args[0], args[1], args[2]
        cb: int = c.numel() * c.element_size()
        atac_args = (grad, c, z1, args[7], *args[8:13], *args[13:17], args[18], args[19],
                     args[21], args[22], args[23])
        return bwd_bytes(atac_args, out) + 3 * cb

    TRAFFIC["attnact.bn_atac_forward"] = bn_fwd_bytes
    TRAFFIC["attnact.bn_atac_backward"] = bn_bwd_bytes


def _trains_on_rows(x: torch.Tensor, c1: int) -> bool:
    """Whether ATAC's training passes on ``x`` take pixel rows (csrc/rows_training.h's
    ``trains_on_rows``: float32 channels_last, C and C/r multiples of 16, an AVX-512 build)."""
    return (x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] % 16 == 0 and c1 % 16 == 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and torch.backends.cpu.get_cpu_capability().startswith("AVX512"))


def _arelu_fake(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    from torch._prims_common import (
        is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense,
    )

    return torch.empty_like(x if is_non_overlapping_and_dense(x) else x.contiguous())


def elsa_activation(activation: nn.Module) -> tuple[str, float, float] | None:
    """The activation ``attnact::elsa`` computes for ``activation`` (its name in csrc/elsa.cpp
    and up to two hyperparameters), or None when it has no native form. Only the exact torch.nn
    classes (and attnact's subclasses of them that add nothing but ``inplace``) qualify: a user's
    subclass may compute something else."""
    from attnact.units import classic

    kind = type(activation)
    m: Any = activation
    if kind is nn.ReLU:
        return "relu", 0.0, 0.0
    if kind in (nn.Sigmoid, classic.Sigmoid):
        return "sigmoid", 0.0, 0.0
    if kind in (nn.Tanh, classic.Tanh):
        return "tanh", 0.0, 0.0
    if kind in (nn.Hardtanh, nn.ReLU6):
        return "hardtanh", float(m.min_val), float(m.max_val)
    if kind is nn.LeakyReLU:
        return "leaky_relu", float(m.negative_slope), 0.0
    if kind is nn.ELU:
        return "elu", float(m.alpha), 0.0
    if kind is nn.CELU:
        return "celu", float(m.alpha), 0.0
    if kind is nn.SELU:
        return "selu", 0.0, 0.0
    if kind in (nn.GELU, classic.GELU) and m.approximate in ("none", "tanh"):
        return "gelu", 1.0 if m.approximate == "tanh" else 0.0, 0.0
    if kind in (nn.Softplus, classic.Softplus):
        return "softplus", float(m.beta), float(m.threshold)
    if kind is nn.SiLU or (kind is classic.Swish and m._is_silu):
        return "silu", 0.0, 0.0
    return None


def gate_ready(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> bool:
    """Whether AReLU on ``x`` takes ``attnact::arelu`` (and ELSA ``attnact::elsa``, whose
    activation :func:`elsa_activation` names): a float32/float64 CPU tensor, one-element α and
    β, the switch on, the operators built, and not under TorchScript tracing or ONNX export (nor
    inside ``torch.compile``, where the caller gives inductor the reference)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if alpha.numel() != 1 or beta.numel() != 1 or not _switched_on():
        return False
    # torch.jit re-exports is_tracing, unannotated, without listing it in __all__
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # type: ignore[attr-defined, no-untyped-call]
        return False
    return _state["loaded"] or why_not() is None


def _format(x: torch.Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def atac(
    x: torch.Tensor,
    w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor,
    w2: torch.Tensor, g2: torch.Tensor, b2: torch.Tensor,
    stats1: tuple[torch.Tensor | None, torch.Tensor | None],
    stats2: tuple[torch.Tensor | None, torch.Tensor | None],
    cfg1: Any, cfg2: Any, use_relu: bool, keep_z1: bool,
) -> torch.Tensor:
    """y = σ(BN₂(W₂ δ(BN₁(W₁ x)))) ⊙ x (ATAC Eq. 4-5) by the native operators, for a 4-D CPU x
    (contiguous or channels_last). ``stats1``/``stats2``: each BatchNorm's running mean and
    variance (None without running statistics); ``cfg1``/``cfg2``: their
    :class:`~attnact.units.atac_function.BNConfig`; with batch statistics the running ones are
    updated here as ``nn.BatchNorm2d`` updates them (unbiased variance, the config's momentum).
    ``keep_z1``: save z₁ for backward (the fast path) instead of recomputing it (memory-efficient).
    """
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    rm1, rv1 = stats1
    rm2, rv2 = stats2
    y, _z1, mean1, var1, mean2, var2 = torch.ops.attnact.atac_forward(
        x, w1, g1, b1, w2, g2, b2, rm1, rv1, rm2, rv2, cfg1.batch_stats, cfg2.batch_stats,
        cfg1.eps, cfg2.eps, use_relu, keep_z1)
    _update_running(x, ((cfg1, rm1, rv1, mean1, var1), (cfg2, rm2, rv2, mean2, var2)))
    return cast(Tensor, y)  # torch.ops are untyped


def _update_running(x: torch.Tensor, bns: tuple[tuple[Any, ...], ...]) -> None:
    """Each BatchNorm's running statistics updated from this call's batch statistics, as
    ``nn.BatchNorm2d`` updates them: unbiased variance, the config's momentum."""
    count = x.numel() // x.shape[1]
    with torch.no_grad():
        for cfg, rm, rv, mean, var in bns:
            if cfg.batch_stats and rm is not None and rv is not None:
                # batch_norm_update_stats' update as it computes it (in the buffers' dtype), so
                # that equal statistics give equal running ones
                m, dt = cfg.momentum, rm.dtype
                rm.copy_(mean.to(dt) * m + rm * (1 - m))
                rv.copy_((var * (count / max(count - 1, 1))).to(dt) * m + rv * (1 - m))


def bn_atac(
    c: torch.Tensor, g0: torch.Tensor, b0: torch.Tensor,
    stats0: tuple[torch.Tensor | None, torch.Tensor | None], cfg0: Any,
    w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor,
    w2: torch.Tensor, g2: torch.Tensor, b2: torch.Tensor,
    stats1: tuple[torch.Tensor | None, torch.Tensor | None],
    stats2: tuple[torch.Tensor | None, torch.Tensor | None],
    cfg1: Any, cfg2: Any, use_relu: bool, keep_z1: bool,
) -> torch.Tensor:
    """ATAC(BN₀(c)) by one native operator (``attnact::bn_atac_forward``, one autograd node):
    BN₀ with weight ``g0``, bias ``b0``, running statistics ``stats0`` and config ``cfg0`` is
    folded into the ATAC kernels' loads of c, so BN₀'s output x is never stored; backward
    recomputes it from c and BN₀'s batch statistics. The other arguments as :func:`atac`; all
    three BatchNorms' running statistics are updated here."""
    if not (c.is_contiguous() or c.is_contiguous(memory_format=torch.channels_last)):
        c = c.contiguous()
    rm0, rv0 = stats0
    rm1, rv1 = stats1
    rm2, rv2 = stats2
    y, _z1, mean0, var0, mean1, var1, mean2, var2 = torch.ops.attnact.bn_atac_forward(
        c, g0, b0, rm0, rv0, cfg0.batch_stats, cfg0.eps, w1, g1, b1, w2, g2, b2, rm1, rv1, rm2,
        rv2, cfg1.batch_stats, cfg2.batch_stats, cfg1.eps, cfg2.eps, use_relu, keep_z1)
    _update_running(c, ((cfg0, rm0, rv0, mean0, var0), (cfg1, rm1, rv1, mean1, var1),
                        (cfg2, rm2, rv2, mean2, var2)))
    return cast(Tensor, y)  # torch.ops are untyped
