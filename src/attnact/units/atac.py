"""ATAC: the local channel attention activation unit of Dai et al., "Attention as Activation"
(ICPR 2020), and its global-context ablation SEActivation (the paper's Fig. 3).

    L(X) = σ(B(PWConv₂(δ(B(PWConv₁(X))))))      Eq. (4)
    X'   = L(X) ⊗ X                              Eq. (5)

PWConv₁ maps C → C/r channels and PWConv₂ maps C/r → C, both 1×1 and without bias; B is batch
normalisation, δ is ReLU and σ the sigmoid. The unit replaces a ReLU ("fully attentional network").
Compared with a 3×3 convolution C → C it adds 2C²/r weights, i.e. 2/(9r) of the convolution.

Three paths compute the same values and gradients (issue #6):

* the reference — :meth:`ATAC.gate` times x — the plain composition of ``torch.nn`` modules.
  Autograd saves x, z₁ (conv1 out), a (ReLU out), z₂ (conv2 out) and σ's output: four
  activation-sized tensors at r = 2 where a ReLU saves one. It stays in the package because the
  tests and the benchmark compare against it, and because it is what an outer ``torch.compile``,
  ``torch.func`` transforms and ``torch.fx`` tracing should see;
* the fast path (the default): :class:`~attnact.units.atac_function.ATACFunction`, which keeps
  the native 1×1 convolutions, fuses BatchNorm (folded to a per-channel scale and shift) with δ,
  and with σ and the product with x, and saves x, z₁ and z₂;
* the memory-efficient path: the same Function saving only x (and per-channel statistics) and
  recomputing the gate in backward — ``ATAC(..., memory_efficient=True)``, or for every ATAC
  built with ``memory_efficient=None`` (the default): :func:`set_memory_efficient`,
  :func:`memory_efficient_mode` or the environment variable ``ATTNACT_MEMORY_EFFICIENT=1``. The
  switch is read at every forward, so it changes the path of existing modules too.

On CPU the fast and memory-efficient paths run attnact's fused native operators instead of the
Function where they build (:mod:`attnact.units.native`; the fast path then saves x and z₁).
Behind a BatchNorm, as at every site of the pre-activation hosts, x itself need not be saved:
:func:`attnact.units.norm_act.norm_then_act` runs BN → ATAC as one node that keeps BN's input.

BatchNorm keeps ``nn.BatchNorm2d``'s semantics on every path: in training the batch statistics
(biased variance) normalise, and running_mean/running_var are updated once per forward with the
module's momentum (cumulative average when momentum is None), num_batches_tracked counts up;
``track_running_stats=False`` or missing running statistics mean batch statistics in eval too.

``implementation="auto"`` (the default) takes the Function except where the reference is the
better or the only correct choice: ``use_global=True`` (SEActivation: its gate is N×C, and
the reference already saves just x besides it); inside an outer ``torch.compile`` (inductor fuses
the reference itself) or ``torch.func`` transforms; a non-tensor input (``torch.fx`` tracing);
autocast; dtypes other than float32/float64; devices other than CPU and CUDA (e.g. the meta
tensors of shape and FLOP probes); submodules replaced or changed (a SyncBatchNorm, a convolution
with bias, ...) or carrying hooks, module-level or global (``FlopCounterMode``'s module
tracker), which the Function would bypass; one value per channel in training (so the reference
raises BatchNorm's own error); and, on CPU without the native operators, a small input on the
default path (``memory_efficient`` left at None with the global switch off): see
:data:`CPU_FAST_PATH_MIN`. Inside an outer ``torch.compile`` the native operators, where built,
stay in the graph (one operator each way, no graph break). ``"function"`` takes the
Function wherever its structure fits
(same submodules, dtypes, no autocast), also under an outer compile or with hooks, which it then
bypasses (benchmarks); ``"reference"`` the composition.
:meth:`ATAC.path_for` says which path a given input takes.

Double backward (``create_graph=True``) needs ``implementation="reference"``: the Function's
backward treats the batch statistics as constants and refuses to be differentiated.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from attnact._checks import check_bool, check_choice, check_positive_int
from attnact.units import native
from attnact.units.atac_function import ATACFunction, BNConfig
from attnact.units.inputs import check_float_input
from attnact.units.layout import LazyChannels, as_nchw, check_channel_dim
from attnact.units.registry import register_activation
from attnact.units.rewrite import has_hooks

__all__ = [
    "ATAC",
    "ATAC_PATHS",
    "CPU_FAST_PATH_MIN",
    "IMPLEMENTATIONS",
    "SEActivation",
    "memory_efficient_enabled",
    "memory_efficient_mode",
    "set_memory_efficient",
]

IMPLEMENTATIONS = ("auto", "function", "reference")
ATAC_PATHS = ("fast", "memory_efficient", "reference")

#: (elements, H·W): on CPU the default path takes the Function only for inputs at least this
#: large in both. Each Function call has a fixed cost beyond the reference's native calls (its
#: compiled-kernel calls and their guards, small per-channel ops), which the passes it saves
#: win back only on large maps; the threshold sits between the shapes where the fast path was
#: faster and those where it was slower (benchmarks/README.md, "ATAC's CPU fast-path
#: threshold"). The memory-efficient path and ``implementation="function"`` ignore this
#: (memory is their point, or the caller chose).
CPU_FAST_PATH_MIN = (786_432, 144)
ENV_MEMORY_EFFICIENT = "ATTNACT_MEMORY_EFFICIENT"

_me_forced: bool | None = None  # set_memory_efficient(); None: follow the environment variable


def _check_switch(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be True, False or None, got {value!r}")
    return value


def set_memory_efficient(enabled: bool | None) -> None:
    """Make every ATAC built with ``memory_efficient=None`` (the default) take the
    memory-efficient path (``True``: saves only its input, recomputes the gate in backward) or
    the fast path (``False``), from its next forward on.

    ``None`` restores the default: off, unless the environment variable
    ``ATTNACT_MEMORY_EFFICIENT`` is set to a non-empty value other than ``0``. Modules built with
    ``memory_efficient=True`` or ``False`` keep their own choice.
    """
    global _me_forced
    _me_forced = _check_switch("enabled", enabled)


def memory_efficient_enabled() -> bool:
    """The global switch of :func:`set_memory_efficient` (or the environment variable)."""
    if _me_forced is not None:
        return _me_forced
    return os.environ.get(ENV_MEMORY_EFFICIENT, "") not in ("", "0")


@contextlib.contextmanager
def memory_efficient_mode(enabled: bool = True) -> Iterator[None]:
    """``with memory_efficient_mode(): ...`` — :func:`set_memory_efficient` for a block only
    (forward calls inside it choose their path; their backward follows that choice).

    Examples:
        >>> import torch, attnact
        >>> unit, x = attnact.ATAC(8), torch.randn(4, 8, 16, 16)
        >>> with attnact.memory_efficient_mode():
        ...     unit.path_for(x)
        'memory_efficient'
        >>> attnact.ATAC(8, implementation="reference").path_for(x)
        'reference'
    """
    global _me_forced
    _check_switch("enabled", enabled)
    before = _me_forced
    _me_forced = enabled
    try:
        yield
    finally:
        _me_forced = before


def _small_on_cpu(x: torch.Tensor) -> bool:
    """A CPU input below :data:`CPU_FAST_PATH_MIN` (elements or H·W)."""
    if x.device.type != "cpu":
        return False
    min_numel, min_hw = CPU_FAST_PATH_MIN
    spatial = x.shape[2] * x.shape[3] if x.dim() == 4 else 1
    return x.numel() < min_numel or spatial < min_hw


def _is_pointwise_conv(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.bias is None
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def _is_plain_batchnorm(bn: nn.Module) -> bool:
    # a subclass that overrides forward, or SyncBatchNorm (statistics across processes), is not
    return (
        isinstance(bn, nn.BatchNorm2d)
        and type(bn).forward is _BatchNorm.forward
        and bn.affine
        and (bn.running_mean is None) == (bn.running_var is None)
    )


def _global_module_hooks() -> bool:
    mod = nn.modules.module
    return any(
        getattr(mod, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def _bn_call(bn: nn.BatchNorm2d) -> tuple[BNConfig, torch.Tensor | None, torch.Tensor | None]:
    """What ``nn.BatchNorm2d.forward`` would do for this call, with its side effect on
    num_batches_tracked (the same steps, in the same order, as ``_BatchNorm.forward``)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    mean = bn.running_mean if use_running else None
    var = bn.running_var if use_running else None
    return BNConfig(batch_stats, factor, bn.eps), mean, var


@register_activation(
    "atac",
    formula="x * sigmoid(BN(PWConv2(ReLU(BN(PWConv1(x))))))",
    source="Dai, Oehmcke, Gieseke, Wu & Barnard, ICPR 2020 (Eq. 4-5)",
    needs_channels=True,
    learnable=True,
    elementwise=False,
)
class ATAC(LazyChannels, nn.Module):
    """Attentional activation unit (ATAC), Eq. (4)-(5) of the ATAC paper.

    Args:
        channels: number of input channels C; ``None`` (the default): inferred at the first
            forward from dim ``channel_dim`` (a PyTorch lazy module, :mod:`attnact.units.layout`),
            so ``act_layer=attnact.ATAC`` fits timm/torchvision-style slots.
        r: channel reduction ratio; the bottleneck has C // r channels (paper: r = 2).
        use_relu: keep the ReLU δ between the two point-wise convolutions (ablation switch).
        use_global: global-average-pool the input before PWConv₁, so one gate per channel is
            broadcast over all positions. This is the SEActivation unit of the paper's Fig. 3.
        inplace: accepted for ``act_layer=`` compatibility; ignored (the input is needed twice).
        memory_efficient: ``True``: save only the input for backward and recompute the gate
            there; ``False``: the fast path; ``None`` (default): follow the global switch
            (:func:`set_memory_efficient`, read at every forward).
        implementation: ``"auto"``, ``"function"`` or ``"reference"`` (module docstring).
        channel_dim: 1 (default; (N, C), (N, C, L), (N, C, H, W)) or -1 ((N, C), token
            sequences (N, L, C), channels-last maps (N, H, W, C)).

    Layouts (:mod:`attnact.units.layout`): the point-wise convolutions act on every position
    alike — on tokens they are per-token linear maps over C, so no token's output depends on
    another token's value (in eval; in training BatchNorm's batch statistics couple the batch,
    over N·L values per channel, as over N·H·W on maps) — and the unit runs at any sequence
    length or image size. With ``use_global`` the context is the mean over all positions of one
    sample (the L tokens of a sequence, padding included; for (N, C) features the value itself).

    The state_dict keys ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*`` are part of the
    public API. Integer and bool inputs raise ``TypeError``.

    Examples:
        The output has the input's shape; the unit adds 2C²/r point-wise weights and two
        BatchNorm layers (C = 64, r = 2: 4096 + 2·32 + 2·64 = 4288 parameters), and its gate
        σ(·) lies in (0, 1), so on a positive input 0 < X' < X (Eq. (5)):

        >>> import torch, attnact
        >>> unit = attnact.ATAC(64, r=2).eval()
        >>> sum(p.numel() for p in unit.parameters()) == 2 * 64 * 64 // 2 + 2 * 32 + 2 * 64
        True
        >>> x = torch.rand(2, 64, 8, 8) + 0.1
        >>> y = unit(x)
        >>> y.shape
        torch.Size([2, 64, 8, 8])
        >>> bool(((y > 0) & (y < x)).all())
        True
    """

    # class-level defaults keep modules pickled before these attributes existed loadable
    memory_efficient: bool | None = None
    implementation: str = "auto"
    channel_dim: int = 1

    def __init__(
        self,
        channels: int | None = None,
        r: int | float = 2,
        use_relu: bool = True,
        use_global: bool = False,
        inplace: bool = False,
        memory_efficient: bool | None = None,
        implementation: str = "auto",
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if channels is not None:
            check_positive_int("channels", channels)
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        _check_switch("memory_efficient", memory_efficient)
        if memory_efficient and implementation == "reference":
            raise ValueError(
                "memory_efficient=True needs implementation 'auto' or 'function', "
                "got implementation='reference'"
            )
        # inf passes `r > 0` but leaves no bottleneck channel (and no placeholder width)
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < math.inf:
            raise ValueError(f"r (the reduction ratio) must be positive and finite, got {r!r}")
        self.r = r
        self.use_relu = check_bool("use_relu", use_relu)
        self.use_global = check_bool("use_global", use_global)
        self.memory_efficient = memory_efficient
        self.implementation = implementation
        self.channel_dim = check_channel_dim(channel_dim)
        self._init_channels(channels, placeholder=max(1, math.ceil(r)))

    def _build(self, channels: int) -> None:
        inter = int(channels // self.r)
        if inter < 1:
            raise ValueError(
                f"channels // r must be at least 1, got channels={channels}, r={self.r} "
                f"(use r <= {channels})"
            )
        self.channels = channels
        self.inter_channels = inter
        self.conv1 = nn.Conv2d(channels, inter, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def _state_channels(self, state_dict: dict[str, Any], prefix: str) -> int | None:
        w = state_dict.get(prefix + "conv1.weight")
        return None if w is None else int(w.shape[1])

    def gate(self, x4: torch.Tensor) -> torch.Tensor:
        """The attention map L(X) of Eq. (4) for a 4-D input (N×C×1×1 with ``use_global``)."""
        z = x4.mean(dim=(2, 3), keepdim=True) if self.use_global else x4
        z = self.bn1(self.conv1(z))
        if self.use_relu:
            z = torch.relu(z)
        return torch.sigmoid(self.bn2(self.conv2(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_input(x, "ATAC")
        cd = self.channel_dim
        if x.dim() < 2 or x.shape[cd] != self.channels:
            shape = tuple(x.shape)
            raise ValueError(
                f"ATAC was built for {self.channels} channels (channel_dim={cd}), got input of "
                f"shape {shape}; build it with channel_dim=-1 for (N, L, C) tokens or "
                f"(N, H, W, C) maps, channel_dim=1 for (N, C, ...)"
            )
        x4, restore = as_nchw(x, cd, "ATAC")
        return restore(self._forward4(x4))

    def _forward4(self, x4: torch.Tensor) -> torch.Tensor:
        path = self._path4(x4)
        if path == "reference":
            return self.gate(x4) * x4
        bn1, rm1, rv1 = _bn_call(self.bn1)
        bn2, rm2, rv2 = _bn_call(self.bn2)
        params = (self.conv1.weight, self.bn1.weight, self.bn1.bias,
                  self.conv2.weight, self.bn2.weight, self.bn2.bias)
        recording = torch.is_grad_enabled() and (
            x4.requires_grad or any(p.requires_grad for p in params)
        )
        w1, g1, b1, w2, g2, b2 = params
        if native.ready(x4):  # the fused native operators (units/native.py)
            return native.atac(x4, w1, g1, b1, w2, g2, b2, (rm1, rv1), (rm2, rv2), bn1, bn2,
                               self.use_relu, keep_z1=path == "fast" and recording)
        return cast(torch.Tensor, ATACFunction.apply(
            x4, w1, g1, b1, w2, g2, b2, rm1, rv1, rm2, rv2, bn1, bn2, self.use_relu,
            path == "memory_efficient" or not recording,
        ))

    def path_for(self, x: torch.Tensor) -> str:
        """``"fast"``, ``"memory_efficient"`` or ``"reference"``: the path ``forward(x)`` takes now
        (it depends on the module's settings and modes, the global switch and the input)."""
        reshaped = x.dim() != 4 or self.channel_dim != 1 if isinstance(x, torch.Tensor) else False
        if reshaped and 2 <= x.dim() <= 4:
            x = as_nchw(x, self.channel_dim, "ATAC")[0]  # the view forward computes on
        return self._path4(x)

    def _path4(self, x: torch.Tensor) -> str:
        if self.implementation == "reference" or self._reference_needed(x):
            return "reference"
        me = self.memory_efficient
        if me is None:
            me = memory_efficient_enabled()
            if (not me and self.implementation == "auto" and _small_on_cpu(x)
                    and not native.ready(x)):
                return "reference"
        return "memory_efficient" if me else "fast"

    def _reference_needed(self, x: object) -> bool:
        if self.use_global or not isinstance(x, torch.Tensor):
            return True
        auto = self.implementation == "auto"
        if auto and torch._C._are_functorch_transforms_active():
            return True
        if auto and torch.compiler.is_compiling() and not native.ready(x):
            return True
        if x.dtype not in (torch.float32, torch.float64) or x.numel() == 0:
            return True
        if x.device.type not in ("cpu", "cuda"):  # meta (shape/FLOP probes) and the untested
            return True
        if torch.is_autocast_enabled(x.device.type):
            return True
        if not (_is_pointwise_conv(self.conv1) and _is_pointwise_conv(self.conv2)):
            return True
        if not (_is_plain_batchnorm(self.bn1) and _is_plain_batchnorm(self.bn2)):
            return True
        for p in (self.conv1.weight, self.conv2.weight, self.bn1.weight, self.bn1.bias,
                  self.bn2.weight, self.bn2.bias):
            if p.dtype != x.dtype or p.device != x.device:
                return True
        batch_stats = any(bn.training or bn.running_mean is None for bn in (self.bn1, self.bn2))
        if batch_stats and x.numel() // x.shape[1] <= 1:
            return True  # BatchNorm raises its own error for one value per channel
        # hooks on the submodules would be bypassed by the Function
        return auto and (_global_module_hooks() or any(map(has_hooks, self.children())))

    def extra_repr(self) -> str:
        s = (
            f"channels={self.channels}, r={self.r}, use_relu={self.use_relu}, "
            f"use_global={self.use_global}"
        )
        if self.channel_dim != 1:
            s += f", channel_dim={self.channel_dim}"
        if self.memory_efficient is not None:
            s += f", memory_efficient={self.memory_efficient}"
        if self.implementation != "auto":
            s += f", implementation={self.implementation!r}"
        return s


@register_activation(
    "se_activation",
    formula="x * sigmoid(BN(PWConv2(ReLU(BN(PWConv1(GAP(x)))))))",
    source="Dai et al., ICPR 2020, Fig. 3 (SE block of Hu et al., CVPR 2018, used as activation)",
    needs_channels=True,
    learnable=True,
    elementwise=False,
)
def SEActivation(
    channels: int | None = None,
    r: int | float = 2,
    use_relu: bool = True,
    inplace: bool = False,
    channel_dim: int = 1,
) -> ATAC:
    """SEActivation (ATAC paper, Fig. 3): ATAC with global average pooling before PWConv₁.

    Same parameters as ATAC (``channels=None``: lazy), but one gate per channel and sample
    shared over all positions, i.e. global rather than local context; the paper's Table III
    shows this loses badly. The global context is the mean over H×W of a map, over the L tokens
    of a (N, L, C) sequence (padding tokens included), and the value itself for (N, C).

    Examples:
        One gate per channel and sample: X'/X is the same at every position.

        >>> import torch, attnact
        >>> unit = attnact.SEActivation(16).eval()
        >>> x = torch.rand(2, 16, 5, 5) + 0.1
        >>> g = unit(x) / x
        >>> torch.allclose(g, g[:, :, :1, :1].expand_as(g))
        True
    """
    return ATAC(channels, r=r, use_relu=use_relu, use_global=True, inplace=inplace,
                channel_dim=channel_dim)
