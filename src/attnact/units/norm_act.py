"""BatchNorm then ATAC as one autograd node: the pre-activation site ``act(norm(x))`` without
storing the BatchNorm's output.

In a pre-activation block BN → ATAC → conv, autograd keeps BN's input c (BatchNorm saves it)
and ATAC's input x = BN(c) (ATAC saves it; on the fast path also z₁). x is redundant: it is
c·scale + shift with BN's per-channel batch statistics (scale = γ·invstd, shift = β − mean·scale,
``nn.BatchNorm2d`` in training, the ATAC paper's Eq. 4 input). :func:`norm_then_act` runs such a
pair as ``attnact::bn_atac_forward`` (:func:`attnact.units.native.bn_atac`): the native ATAC
kernels read c and normalise it as they load it, the node saves c, BN's mean and variance (and
z₁ on the fast path), and its backward recomputes x in the same loads, then takes BN's own
backward. Running statistics of all three BatchNorms are updated once per forward, as
``nn.BatchNorm2d`` updates them (momentum, ``num_batches_tracked``, cumulative for
``momentum=None``).

Everywhere else — eval mode, no gradient recorded, another activation or normalisation,
hooks on either module, a lazy ATAC not yet built, the reference path, no native operators (CUDA,
``ATTNACT_NO_NATIVE``) — it is exactly ``act(norm(x))``. :func:`why_not_fused` says why a call is
not fused. Hosts call it at their ``act(bn(x))`` sites, so their modules and state-dict keys stay
as they are; :func:`fuse_norm_act` rewrites a user's model the same way with ``torch.fx``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import fx, nn

from attnact.units import native
from attnact.units.atac import ATAC, _bn_call, _global_module_hooks, _is_plain_batchnorm
from attnact.units.rewrite import LeafTracer, has_hooks

__all__ = ["fuse_norm_act", "fusion_enabled", "norm_then_act", "set_fusion", "why_not_fused"]

_enabled = True


def set_fusion(enabled: bool | None) -> None:
    """Fuse BatchNorm → ATAC pairs where they fit (``True``; ``None``: the default, on) or never
    (``False``: every call is ``act(norm(x))``, e.g. to measure the difference)."""
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    _enabled = True if enabled is None else enabled


def fusion_enabled() -> bool:
    """The switch of :func:`set_fusion`."""
    return _enabled


def why_not_fused(norm: nn.Module, act: nn.Module, x: object) -> str | None:
    """Why ``norm_then_act(norm, act, x)`` runs ``act(norm(x))`` instead of the fused node, or
    ``None`` when it fuses."""
    return _plan(norm, act, x)[0]


def _plan(norm: nn.Module, act: nn.Module, x: object) -> tuple[str | None, str]:
    """(why not fused or None, ATAC's path: "fast" or "memory_efficient" when fused)."""
    reason = _unfit(norm, act, x)
    if reason is not None:
        return reason, "reference"
    assert isinstance(act, ATAC) and isinstance(x, torch.Tensor)
    path = act._path4(x)
    if path == "reference":
        return "ATAC takes its reference path for this input", path
    if not native.ready(x):
        return f"no native operators ({native.why_not() or 'not a CPU tensor'})", path
    return None, path


def _unfit(norm: nn.Module, act: nn.Module, x: object) -> str | None:
    if not _enabled:
        return "switched off (set_fusion(False))"
    if not isinstance(act, ATAC) or type(act).forward is not ATAC.forward:
        return f"the activation is {type(act).__name__}, not ATAC"
    if not _is_plain_batchnorm(norm):
        return f"the normalisation is {type(norm).__name__}, not a plain affine BatchNorm2d"
    if not isinstance(x, torch.Tensor):
        return "the input is not a tensor (tracing)"
    if not norm.training:
        return "the BatchNorm is in eval mode (act(norm(x)) costs nothing extra there)"
    params = (norm.weight, norm.bias, act.conv1.weight, act.bn1.weight, act.bn1.bias,
              act.conv2.weight, act.bn2.weight, act.bn2.bias)
    if not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad
                                                                  for p in params)):
        return "no gradient is recorded"
    if act.channels is None:
        return "the ATAC is lazy and not built yet"
    if act.channel_dim != 1 or x.dim() != 4:
        return "not a 4-D (N, C, H, W) input with ATAC's channel_dim=1"
    if x.shape[1] != norm.num_features or x.shape[1] != act.channels:
        return "the channel counts of input, BatchNorm and ATAC differ"
    if x.numel() // x.shape[1] <= 1:
        return "one value per channel (BatchNorm raises its own error)"
    if norm.weight.dtype != x.dtype or norm.weight.device != x.device:
        return "the BatchNorm's parameters have another dtype or device than the input"
    if has_hooks(norm) or has_hooks(act) or _global_module_hooks():
        return "module hooks, which the fused node would bypass"
    return None


def norm_then_act(norm: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(norm(x))``; for a training ``nn.BatchNorm2d`` followed by ATAC (fast or
    memory-efficient path) one fused autograd node that does not store ``norm(x)``
    (module docstring)."""
    reason, path = _plan(norm, act, x)
    if reason is not None:
        return cast(torch.Tensor, act(norm(x)))  # Module calls are untyped
    assert isinstance(act, ATAC) and isinstance(norm, nn.BatchNorm2d)  # _plan checked both
    assert isinstance(norm.weight, torch.Tensor) and isinstance(norm.bias, torch.Tensor)
    keep_z1 = path == "fast"
    # in nn's order: the outer BatchNorm first, then the unit's two
    cfg0, rm0, rv0 = _bn_call(norm)
    cfg1, rm1, rv1 = _bn_call(act.bn1)
    cfg2, rm2, rv2 = _bn_call(act.bn2)
    return native.bn_atac(
        x, norm.weight, norm.bias, (rm0, rv0), cfg0,
        act.conv1.weight, act.bn1.weight, act.bn1.bias,
        act.conv2.weight, act.bn2.weight, act.bn2.bias,
        (rm1, rv1), (rm2, rv2), cfg1, cfg2, act.use_relu, keep_z1)


def fuse_norm_act(model: nn.Module) -> fx.GraphModule:
    """``model`` traced with ``torch.fx``, every ``nn.BatchNorm2d`` whose only user is an ATAC
    module called as :func:`norm_then_act` (which fuses where it can at each call).

    The submodules stay where they were, so ``state_dict`` keys are unchanged, and the result
    shares its modules and parameters with ``model``. Raises ``TypeError`` for a non-module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    tracer = LeafTracer()
    graph = tracer.trace(model)
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            continue
        norm, act = model.get_submodule(node.target), model.get_submodule(user.target)
        if not (isinstance(norm, nn.BatchNorm2d) and isinstance(act, ATAC)):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        with graph.inserting_before(user):
            norm_ref = graph.get_attr(node.target)
            act_ref = graph.get_attr(user.target)
            fused = graph.call_function(norm_then_act, (norm_ref, act_ref, node.args[0]))
        user.replace_all_uses_with(fused)
        graph.erase_node(user)
        graph.erase_node(node)
    graph.lint()
    name = type(model).__name__
    return fx.GraphModule(model, graph, class_name=f"{name}NormAct")
