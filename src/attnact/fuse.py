"""Fold BatchNorm into the convolutions before it, for inference.

In eval mode a BatchNorm layer is a fixed per-channel affine map, y = γ·(x − μ)/√(σ² + ε) + β, so
a convolution directly followed by one equals a single convolution with rescaled weights and a
bias (Ioffe & Szegedy, ICML 2015; the standard inference-time folding). That removes one pass over
every feature map per pair. For ATAC (Dai et al., "Attention as Activation", ICPR 2020, Eq. 4-5)

    X' = X ⊗ σ(BN₂(PWConv₂(δ(BN₁(PWConv₁(X))))))

both point-wise convolutions are followed by BN, so the unit becomes
``X ⊗ σ(PWConv₂'(δ(PWConv₁'(X))))`` with two biased convolutions and no BN: the gate costs two
convolutions, a ReLU and a sigmoid instead of six passes. The weights come from PyTorch's own
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`.

What :func:`fuse_for_inference` folds:

* **ATAC-like units** (:class:`~attnact.ATAC`, SEActivation, :class:`~attnact.blocks.LocalSE`, and
  any subclass that keeps ATAC's ``forward``), found by type: each becomes a :class:`FusedATAC`
  at the same path, computing the reference composition with the two folded convolutions (in
  inference, on CPU, by the native operator's one-pass eval kernel where it builds).
* **Conv → BN pairs of the host**: a ``Conv1d/2d/3d`` whose output goes to exactly one place, a
  ``BatchNorm`` of the same dimensionality and width. The conv is replaced by the folded one and
  the BN by ``nn.Identity`` (the model keeps its class, forward and module names). Pairs are found
  on a ``torch.fx`` symbolic trace of the model in eval mode, where "the conv output has no other
  user" can be checked. Submodules fx cannot trace (Python control flow on shapes or values) are
  made opaque one class at a time and the trace is retried; inside an opaque module (or the
  whole model, if its own ``forward`` cannot be traced) pairs are taken from ``nn.Sequential``
  neighbours only, whose output flows from one child to the next and nowhere else. The report
  says which detection was used.

What is *not* folded: a BN whose input is not a conv output (pre-activation ResNet's BN₁, the
input BN), a conv whose output is also read elsewhere, modules registered or called at several
places, convs with hooks, parametrizations or a ``forward`` of their own (weight standardisation
would renormalise the folded weights), and BN → conv folding into the conv's *input* side (exact
only without zero padding; no model of this package has such a site). The report lists every
BN still in the model with the reason.

The result is for inference. It is returned in eval mode; the running statistics are gone, so
``.train()`` on it trains a network without those BN layers (the folded convs are ordinary
trainable convs and behave the same in both modes; unfolded BNs switch to batch statistics as
usual). Keep the original model for training: with ``inplace=False`` (the default) it is never
modified. BN layers with ``track_running_stats=False`` have no inference-time affine map and are
refused with a ``ValueError``.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

from attnact.units import native
from attnact.units.atac import ATAC
from attnact.units.layout import as_nchw, check_channel_dim
from attnact.units.rewrite import (
    LeafTracer,
    attach_attribute,
    has_hooks,
    module_paths,
    set_module,
)

__all__ = [
    "FoldedPair",
    "FusedATAC",
    "FusionReport",
    "UnfoldedBN",
    "fuse_for_inference",
    "inference_speedup",
]

REPORT_ATTR = "fusion_report"

# BatchNorm of the same dimensionality as each conv type (BN1d also takes N×C×L).
_BN_FOR_CONV: dict[type[nn.Module], tuple[type[nn.Module], ...]] = {
    nn.Conv1d: (nn.BatchNorm1d, nn.SyncBatchNorm),
    nn.Conv2d: (nn.BatchNorm2d, nn.SyncBatchNorm),
    nn.Conv3d: (nn.BatchNorm3d, nn.SyncBatchNorm),
}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldedPair:
    """One BatchNorm folded into the convolution before it.

    Attributes:
        conv: qualified name of the convolution in the input model (now carries the BN).
        bn: qualified name of the folded BatchNorm in the input model.
        found_by: ``"unit"`` (inside an ATAC-like unit, found by type), ``"fx"`` (a conv → BN
            edge of the traced graph) or ``"sequential"`` (neighbours in an ``nn.Sequential``).
        unit: class name of the ATAC-like unit the pair belongs to, ``None`` for host pairs.
    """

    conv: str
    bn: str
    found_by: Literal["unit", "fx", "sequential"]
    unit: str | None = None


@dataclass(frozen=True)
class UnfoldedBN:
    """A BatchNorm layer left in the fused model, and why."""

    bn: str
    reason: str


@dataclass
class FusionReport:
    """What :func:`fuse_for_inference` did; attached to the result as ``.fusion_report``.

    Attributes:
        detection: how host conv → BN pairs were found: ``"fx"`` (the whole model traced),
            ``"fx+sequential"`` (traced, but the modules in ``opaque`` could not be and were
            searched by ``nn.Sequential`` neighbours), ``"sequential"`` (the model's own forward
            could not be traced; neighbours in ``nn.Sequential`` containers only), ``"none"``
            (the model is itself an ATAC-like unit).
        folded: every folded pair, units first, then host pairs in execution (or module) order.
        units: paths of the ATAC-like units replaced by :class:`FusedATAC`.
        left: BatchNorm layers still in the model, with the reason.
        opaque: modules fx could not trace.
        bn_before, bn_after: number of BatchNorm modules before and after.
        notes: anything else the user should know (why tracing failed, ...).
    """

    detection: Literal["fx", "fx+sequential", "sequential", "none"] = "fx"
    folded: list[FoldedPair] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    left: list[UnfoldedBN] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    bn_before: int = 0
    bn_after: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_folded(self) -> int:
        """Number of BatchNorm layers folded away (two per ATAC-like unit)."""
        return len(self.folded)

    @property
    def counts(self) -> dict[str, int]:
        """Folded pairs by how they were found, plus units and BN layers left."""
        by = Counter(p.found_by for p in self.folded)
        return {
            "units": len(self.units),
            "unit_pairs": by["unit"],
            "fx_pairs": by["fx"],
            "sequential_pairs": by["sequential"],
            "bn_before": self.bn_before,
            "bn_after": self.bn_after,
        }

    def to_markdown(self) -> str:
        """The report as markdown: a summary line, the folded pairs, the BN layers left."""
        c = self.counts
        lines = [
            f"Folded {self.n_folded} BatchNorm layers ({c['unit_pairs']} in {c['units']} "
            f"ATAC-like units, {c['fx_pairs']} host pairs found by fx, "
            f"{c['sequential_pairs']} by nn.Sequential neighbours; detection={self.detection!r}); "
            f"BatchNorm modules {self.bn_before} -> {self.bn_after}.",
        ]
        if self.folded:
            lines += ["", "| conv | bn | found by | unit |", "|------|----|----------|------|"]
            lines += [
                f"| `{p.conv}` | `{p.bn}` | {p.found_by} | {p.unit or ''} |" for p in self.folded
            ]
        if self.left:
            lines += ["", "| BatchNorm left | reason |", "|----------------|--------|"]
            lines += [f"| `{u.bn}` | {u.reason} |" for u in self.left]
        if self.opaque:
            lines.append("\nNot traceable by fx: " + ", ".join(f"`{p}`" for p in self.opaque))
        lines += [f"\nNote: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


# ---------------------------------------------------------------------------------------------
# The fused ATAC unit
# ---------------------------------------------------------------------------------------------


class FusedATAC(nn.Module):
    """ATAC with BN₁ and BN₂ folded into the point-wise convolutions (inference form).

    ``X ⊗ σ(conv2(δ(conv1(X))))`` with biased 1×1 convolutions; with ``use_global`` the input is
    averaged over H×W before ``conv1`` (SEActivation). Accepts the inputs ATAC accepts (rank 2 to
    4, channels in dim ``channel_dim``, the unit's). Without autograd (``torch.no_grad`` /
    ``inference_mode``) on CPU it runs ``attnact::atac_forward``'s eval kernel
    (:mod:`attnact.units.native`: the per-pixel C → C/r → C MLP, the gate and the product in one
    pass over x) where the native operators build and the input fits (:meth:`_native_fits`);
    otherwise the composition, with the ReLU, sigmoid and product in place on the gate's own
    buffer when nothing is recorded.

    Built by :func:`fuse_for_inference` (see :meth:`from_unit`), not by the registry.
    """

    def __init__(
        self,
        conv1: nn.Conv2d,
        conv2: nn.Conv2d,
        *,
        channels: int,
        use_relu: bool = True,
        use_global: bool = False,
        source: str = "ATAC",
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.channels = channels
        self.channel_dim = check_channel_dim(channel_dim)
        self.use_relu = use_relu
        self.use_global = use_global
        self.source = source

    @classmethod
    def from_unit(cls, unit: ATAC) -> FusedATAC:
        """The fused form of an ATAC-like unit (which must be in eval mode)."""
        if unit.channels is None:
            raise ValueError(
                f"{type(unit).__name__} has no channel count yet (a lazy unit): run one forward "
                f"before fusing"
            )
        return cls(
            _fold(unit.conv1, unit.bn1),
            _fold(unit.conv2, unit.bn2),
            channels=unit.channels,
            use_relu=unit.use_relu,
            use_global=unit.use_global,
            source=type(unit).__name__,
            channel_dim=unit.channel_dim,
        ).train(unit.training)

    def _native_fits(self, x: torch.Tensor) -> bool:
        """Whether this call takes ``attnact::atac_forward``'s one-pass eval kernel: local
        context, a 4-D float32/float64 CPU input the operators accept, 1×1 convolutions of the
        input's dtype, and nothing to record for autograd (the operator's backward is the
        training unit's; the fused form's gradients come from the composition)."""
        if self.use_global or x.dtype not in (torch.float32, torch.float64):
            return False
        convs = (self.conv1, self.conv2)
        if not all(_is_biased_pointwise(c, x.dtype) for c in convs):
            return False
        if torch._C._len_torch_dispatch_stack() > 0:
            return False  # a dispatch mode (FlopCounterMode) sees the composition's ops
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for c in convs for p in c.parameters())
        ):
            return False
        return native.ready(x)

    def _native_forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = σ(conv2(δ(conv1(x)))) ⊙ x by the native operator in its eval mode, which
        computes σ(γ₂·(W₂a − μ₂)/√(v₂ + ε₂) + β₂) ⊙ x with a = δ(γ₁·(W₁x − μ₁)/√(v₁ + ε₁) + β₁)
        in one pass over x: with γ = 1, μ = 0, v = 1, ε = 0 and β the folded bias that is
        exactly W·x + b (the scale is 1/√1 = 1 and the shift b − 0, in any precision)."""
        w1, b1 = self.conv1.weight, self.conv1.bias
        w2, b2 = self.conv2.weight, self.conv2.bias
        assert b1 is not None and b2 is not None  # _native_fits
        ones1, ones2 = torch.ones_like(b1), torch.ones_like(b2)
        zeros1, zeros2 = torch.zeros_like(b1), torch.zeros_like(b2)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        y = torch.ops.attnact.atac_forward(
            x, w1, ones1, b1, w2, ones2, b2, zeros1, ones1, zeros2, ones2,
            False, False, 0.0, 0.0, self.use_relu, False)[0]
        return cast(torch.Tensor, y)  # torch.ops are untyped

    def _forward4(self, x: torch.Tensor) -> torch.Tensor:
        if self._native_fits(x):  # the one-pass native kernel (units/native.py)
            return self._native_forward(x)
        z = x.mean(dim=(2, 3), keepdim=True) if self.use_global else x
        z = self.conv1(z)
        if self.use_relu:
            z = torch.relu_(z)  # a fresh conv output; ReLU's backward needs only its result
        g = self.conv2(z)
        if torch.is_grad_enabled() and (x.requires_grad or g.requires_grad):
            return torch.sigmoid(g) * x
        g = torch.sigmoid_(g)
        return g.mul_(x) if g.shape == x.shape else g * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = getattr(self, "channel_dim", 1)  # modules pickled before channel_dim existed
        if x.dim() < 2 or x.dim() > 4 or x.shape[cd] != self.channels:
            raise ValueError(
                f"FusedATAC was built for inputs of rank 2 to 4 with {self.channels} channels "
                f"(channel_dim={cd}), got shape {tuple(x.shape)}"
            )
        x4, restore = as_nchw(x, cd, "FusedATAC")
        return restore(self._forward4(x4))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, use_relu={self.use_relu}, "
            f"use_global={self.use_global}, source={self.source}"
        )


def _is_biased_pointwise(conv: nn.Module, dtype: torch.dtype) -> bool:
    """A plain biased 1×1 ``nn.Conv2d`` of ``dtype`` without hooks (what folding made)."""
    return (
        type(conv) is nn.Conv2d
        and conv.bias is not None
        and conv.weight.dtype == dtype
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and not has_hooks(conv)
    )


_ConvT = TypeVar("_ConvT", bound=_ConvNd)


def _fold(conv: _ConvT, bn: _BatchNorm) -> _ConvT:
    """A new conv computing bn(conv(x)) in eval mode (torch's fuse_conv_bn_eval)."""
    fused = fuse_conv_bn_eval(conv, bn)
    assert fused.bias is not None  # the fused conv always has one
    # torch gives a bias it had to create requires_grad=False; make it follow the weight so the
    # fused model trains like any other (e.g. fine-tuning without BN).
    fused.bias.requires_grad_(fused.weight.requires_grad)
    return fused


def _is_atac_like(m: nn.Module) -> bool:
    """An ATAC (or subclass such as LocalSE) whose computation is ATAC's own."""
    if not isinstance(m, ATAC):
        return False
    cls = type(m)
    return all(
        getattr(cls, name, None) is getattr(ATAC, name, None)
        for name in ("forward", "gate", "_forward4")
    )


# ---------------------------------------------------------------------------------------------
# Finding host conv -> BN pairs
# ---------------------------------------------------------------------------------------------


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, tuple(_BN_FOR_CONV))


def _conv_problem(conv: nn.Module) -> str | None:
    """Why this conv cannot take a BN, or None if it can."""
    base = next((t for t in _BN_FOR_CONV if isinstance(conv, t)), None)
    if base is None:
        return "not a Conv1d/2d/3d"
    if type(conv).forward is not base.forward:
        return f"{type(conv).__name__} has its own forward"
    if parametrize.is_parametrized(conv):
        return "its weight is parametrized"
    if has_hooks(conv):
        return "it has forward hooks"
    if nn.parameter.is_lazy(cast(torch.Tensor, conv.weight)):  # a conv, checked above
        return "its weight is not initialised (lazy module)"
    return None


def _pair_problem(conv: nn.Module, bn: nn.Module) -> str | None:
    """Why (conv, bn) cannot be folded, or None if it can."""
    problem = _conv_problem(conv)
    if problem is not None:
        return f"conv: {problem}"
    base = next(t for t in _BN_FOR_CONV if isinstance(conv, t))
    if not isinstance(bn, _BN_FOR_CONV[base]):
        return f"{type(bn).__name__} does not match {base.__name__}"
    if type(bn).forward not in (_BatchNorm.forward, nn.SyncBatchNorm.forward):
        return f"{type(bn).__name__} has its own forward"
    if has_hooks(bn):
        return "the BatchNorm has forward hooks"
    if bn.num_features != conv.out_channels:
        return f"BatchNorm width {bn.num_features} != conv out_channels {conv.out_channels}"
    return None


def _pair_tracer(leaves: set[int], opaque_ids: set[int], opaque_types: set[type]) -> LeafTracer:
    """The tracer for pair search: attnact units and FusedATAC are leaves, and so are the
    ATAC-like units fused by type and the modules (by instance) and classes marked opaque after
    a failed trace; its ``stack`` names the module a failed trace was in."""
    return LeafTracer(
        (FusedATAC,),
        lambda m: id(m) in leaves or id(m) in opaque_ids or type(m) in opaque_types,
    )


@dataclass
class _Found:
    # (conv, bn, found_by)
    pairs: list[tuple[str, str, Literal["unit", "fx", "sequential"]]] = field(
        default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # bn path -> why not folded
    detection: Literal["fx", "fx+sequential", "sequential", "none"] = "fx"
    opaque: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _trace(
    root: nn.Module, leaves: set[int]
) -> tuple[fx.Graph | None, set[int], set[type], Exception | None]:
    """Trace ``root``, making failing submodules opaque; (graph, opaque ids, types, error)."""
    opaque_ids: set[int] = set()
    opaque_types: set[type] = set()
    n_modules = sum(1 for _ in root.modules())
    for _ in range(n_modules + 1):
        tracer = _pair_tracer(leaves, opaque_ids, opaque_types)
        try:
            return tracer.trace(root), opaque_ids, opaque_types, None
        except Exception as exc:  # fx raises many types on untraceable user code
            culprit = tracer.stack[-1] if tracer.stack else None
            if culprit is None:
                return None, opaque_ids, opaque_types, exc
            if isinstance(culprit, _CONTAINERS) or type(culprit) is type(root):
                opaque_ids.add(id(culprit))
            else:
                opaque_types.add(type(culprit))
    return None, opaque_ids, opaque_types, RuntimeError("too many untraceable modules")


def _describe(node: Any, root: nn.Module) -> str:
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        return f"`{node.target}` ({type(root.get_submodule(str(node.target))).__name__})"
    if node.op == "placeholder":
        return f"the model input `{node.target}`"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "?")
    return f"{node.op} `{target}`"


def _sequential_pairs(
    scope: nn.Module, prefix: str, skip: set[int], found: _Found, seen: set[int]
) -> None:
    """Conv → BN neighbours in every nn.Sequential inside ``scope`` (``scope`` included)."""
    for name, m in scope.named_modules(prefix=prefix):
        if id(m) in skip:
            continue
        if not isinstance(m, nn.Sequential) or type(m).forward is not nn.Sequential.forward:
            continue
        # Sequential.forward runs _modules in order, a module listed twice included;
        # named_children() would drop the repeat and make false neighbours.
        children = [(k, v) for k, v in m._modules.items() if v is not None]
        for (cname, conv), (bname, bn) in itertools.pairwise(children):
            if not isinstance(bn, _BatchNorm) or id(bn) in seen:
                continue
            seen.add(id(bn))
            conv_path = f"{name}.{cname}" if name else cname
            bn_path = f"{name}.{bname}" if name else bname
            problem = _pair_problem(conv, bn)
            if problem is None:
                found.pairs.append((conv_path, bn_path, "sequential"))
            else:
                found.reasons[bn_path] = f"after `{conv_path}` in an nn.Sequential, but {problem}"


def _find_pairs(root: nn.Module, unit_ids: set[int]) -> _Found:
    """Host conv → BN pairs of ``root`` (in eval mode), ATAC-like units excluded."""
    found = _Found()
    graph, opaque_ids, opaque_types, error = _trace(root, unit_ids)
    skip = set(unit_ids)
    # Modules inside ATAC-like units belong to the unit.
    for m in root.modules():
        if id(m) in unit_ids:
            skip.update(id(s) for s in m.modules())

    if graph is None:
        found.detection = "sequential"
        found.notes.append(
            f"fx could not trace the model's forward ({type(error).__name__}: {error}); "
            "conv -> BN pairs were taken from nn.Sequential neighbours only"
        )
        _sequential_pairs(root, "", skip, found, set())
        return found

    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    attrs = [n.target for n in graph.nodes if n.op == "get_attr"]

    def read_directly(path: str) -> bool:
        return any(a == path or a.startswith(path + ".") for a in attrs)

    for node in graph.nodes:
        if node.op != "call_module":
            continue
        m = root.get_submodule(node.target)
        if not isinstance(m, _BatchNorm):
            continue
        bn_path = node.target
        src = node.args[0] if node.args else node.kwargs.get("input")
        if calls[bn_path] > 1:
            found.reasons[bn_path] = f"called {calls[bn_path]} times in forward"
            continue
        if not (isinstance(src, fx.Node) and src.op == "call_module"
                and _is_conv(root.get_submodule(str(src.target)))):
            found.reasons[bn_path] = f"its input is {_describe(src, root)}, not a convolution"
            continue
        conv_path = str(src.target)  # a call_module target is the module's path
        conv = root.get_submodule(conv_path)
        others = [u for u in src.users if u is not node]
        if others:
            found.reasons[bn_path] = (
                f"the output of `{conv_path}` is also used by "
                + ", ".join(_describe(u, root) for u in others)
            )
        elif len(node.args) + len(node.kwargs) != 1:
            found.reasons[bn_path] = "called with extra arguments"
        elif calls[conv_path] > 1:
            found.reasons[bn_path] = f"`{conv_path}` is called {calls[conv_path]} times in forward"
        elif read_directly(conv_path) or read_directly(bn_path):
            found.reasons[bn_path] = "the parameters are also read directly in forward"
        elif (problem := _pair_problem(conv, m)) is not None:
            found.reasons[bn_path] = f"after `{conv_path}`, but {problem}"
        else:
            found.pairs.append((conv_path, bn_path, "fx"))

    opaque = [
        (n.target, root.get_submodule(n.target))
        for n in graph.nodes
        if n.op == "call_module"
        and (id(root.get_submodule(n.target)) in opaque_ids
             or type(root.get_submodule(n.target)) in opaque_types)
    ]
    seen_opaque: set[int] = set()
    seen_bn: set[int] = set()
    for path, m in opaque:
        if id(m) in seen_opaque:
            continue
        seen_opaque.add(id(m))
        found.opaque.append(path)
        _sequential_pairs(m, path, skip, found, seen_bn)
    if found.opaque:
        found.detection = "fx+sequential"
        kinds = sorted({type(m).__name__ for _, m in opaque})
        found.notes.append(
            f"fx could not trace {', '.join(kinds)}; inside {len(found.opaque)} such module(s) "
            "conv -> BN pairs were taken from nn.Sequential neighbours only"
        )
    return found


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _count_bn(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, _BatchNorm))


def fuse_for_inference(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy of ``model`` with BatchNorm folded into the convolutions before it.

    ATAC-like units (ATAC, SEActivation, LocalSE) become :class:`FusedATAC` with both BN layers
    folded; every other conv directly followed by a BN (found by ``torch.fx``, or by
    ``nn.Sequential`` neighbours where fx cannot trace) gets the BN folded in, and the BN becomes
    ``nn.Identity``. In eval mode the result computes the same function up to floating-point
    rounding. The report is attached as ``result.fusion_report`` (:class:`FusionReport`).

    The result is for inference: it is returned in eval mode and the BN statistics are gone, so
    ``.train()`` on it does not give back the original network (module docstring).

    Args:
        model: any ``nn.Module``. A model that is itself an ATAC-like unit comes back as a
            :class:`FusedATAC` (a new module, also with ``inplace=True``).
        inplace: modify and return ``model`` itself (put in eval mode) instead of a deep copy.

    Raises:
        ValueError: the model has BatchNorm layers with ``track_running_stats=False`` (no running
            statistics to fold; they normalise with batch statistics even in eval mode).

    Examples:
        All three BatchNorm layers go (the host's and ATAC's two); the outputs agree:

        >>> import torch, attnact
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8),
        ...                     attnact.ATAC(8)).eval()
        >>> fused = attnact.fuse_for_inference(net)
        >>> sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        0
        >>> x = torch.randn(2, 3, 10, 10)
        >>> torch.allclose(fused(x), net(x), atol=1e-5)
        True
        >>> fused.fusion_report.n_folded
        3
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    no_stats = [
        p for p, m in model.named_modules()
        if isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None)
    ]
    if no_stats:
        shown = ", ".join(f"`{p}`" for p in no_stats[:5]) + (" ..." if len(no_stats) > 5 else "")
        raise ValueError(
            f"cannot fold BatchNorm layers without running statistics "
            f"(track_running_stats=False): {shown}; they normalise with the statistics of each "
            f"batch even in eval mode, so there is no fixed affine map to fold"
        )

    work = model if inplace else copy.deepcopy(model)
    work.eval()
    report = FusionReport(bn_before=_count_bn(work))
    aliases = module_paths(work)

    # ATAC-like units, found by type. A unit registered at several paths is one module: fused
    # once and put back at every path.
    units: dict[int, tuple[str, ATAC]] = {}
    for path, m in work.named_modules():
        if isinstance(m, ATAC) and id(m) not in units:
            if not _is_atac_like(m):
                report.notes.append(
                    f"`{path}` ({type(m).__name__}) overrides ATAC's forward; left alone"
                )
                continue
            if m.channels is None:
                report.notes.append(
                    f"`{path}` ({type(m).__name__}) has no channel count yet (a lazy unit: run "
                    f"one forward first); left alone"
                )
                continue
            problems = [
                f"{c}/{b}: {pr}"
                for c, b in (("conv1", "bn1"), ("conv2", "bn2"))
                if (pr := _pair_problem(getattr(m, c), getattr(m, b))) is not None
            ]
            if problems:
                why = "; ".join(problems)
                report.notes.append(f"`{path}` ({type(m).__name__}) not fused: {why}")
                continue
            units[id(m)] = (path, m)

    # A model that is itself a unit has no host to search.
    found = _Found(detection="none") if id(work) in units else _find_pairs(work, set(units))
    report.detection = found.detection
    report.opaque = found.opaque
    report.notes += found.notes

    for path, unit in units.values():
        fused = FusedATAC.from_unit(unit)
        for alias in aliases[id(unit)]:
            if alias:
                set_module(work, alias, fused)
            else:  # the model is itself a unit: the result is a new module
                work = fused
        report.units.append(path)
        report.folded += [
            FoldedPair(f"{path}.conv1", f"{path}.bn1", "unit", type(unit).__name__),
            FoldedPair(f"{path}.conv2", f"{path}.bn2", "unit", type(unit).__name__),
        ]

    for conv_path, bn_path, how in found.pairs:
        conv, bn = work.get_submodule(conv_path), work.get_submodule(bn_path)
        shared = [m for m in (conv, bn) if len(aliases[id(m)]) > 1]
        if shared:
            found.reasons[bn_path] = "; ".join(
                f"{type(m).__name__} registered at several paths ({', '.join(aliases[id(m)])})"
                for m in shared
            )
            continue
        # _pair_problem passed: a Conv1d/2d/3d and its matching BatchNorm
        set_module(work, conv_path, _fold(cast(_ConvNd, conv), cast(_BatchNorm, bn)))
        set_module(work, bn_path, nn.Identity().train(False))
        report.folded.append(FoldedPair(conv_path, bn_path, how))

    for path, m in work.named_modules():
        if isinstance(m, _BatchNorm):
            reason = found.reasons.get(path)
            if reason is None:
                inside = next((o for o in found.opaque if path.startswith(o + ".")), None)
                if found.detection == "sequential" or inside is not None:
                    where = f"inside `{inside}`, which fx could not trace" if inside else (
                        "fx could not trace the model")
                    reason = f"{where}, and not right after a conv in an nn.Sequential"
                else:
                    reason = "never called in the traced forward"
            report.left.append(UnfoldedBN(path, reason))
    report.bn_after = _count_bn(work)

    attach_attribute(work, REPORT_ATTR, report)
    return work


@contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def inference_speedup(
    model: nn.Module,
    example: torch.Tensor | tuple[Any, ...],
    *,
    repeats: int = 30,
    warmup: int = 3,
    fused: nn.Module | None = None,
) -> float:
    """Median eval forward time of ``model`` divided by that of its fused form (> 1: faster).

    Both run in eval mode under ``torch.no_grad`` in this process, alternately (the order flips
    every repeat), so machine load hits both alike (see ``benchmarks/README.md``); ``warmup``
    untimed calls of each first (compiled kernels compile there). ``fused`` defaults to
    ``fuse_for_inference(model)``. The model's train/eval modes are restored afterwards.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    args = example if isinstance(example, tuple) else (example,)
    fused = fuse_for_inference(model) if fused is None else fused
    times: dict[int, list[float]] = {0: [], 1: []}
    nets = (model, fused)
    with _eval_mode(model, fused), torch.no_grad():
        for _ in range(warmup):
            for net in nets:
                net(*args)
        for i in range(repeats):
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                nets[k](*args)
                times[k].append(time.perf_counter() - t0)
    return statistics.median(times[0]) / statistics.median(times[1])
