"""Shared helpers for rewriting models: module paths, hooks, the fx tracer and the site rule.

One home for what :func:`~attnact.units.convert.convert_activations`, :mod:`attnact.fuse`,
:class:`~attnact.models.act_plan.ActPlan` and the units themselves need when they put modules in
place of others:

* :func:`set_module`, :func:`alias_paths`, :func:`module_paths`: put a module at a dotted path,
  and find every path at which one module object is registered.
* :func:`has_hooks`: whether a module carries hooks that swapping or fusing would bypass.
* :func:`attach_attribute`: an attribute (a report) that a GraphModule's deepcopy keeps.
* :class:`LeafTracer`: a ``torch.fx`` tracer that treats attnact units and chosen modules as
  opaque leaves, and keeps the stack of modules being traced so a failure names its module.
* :func:`select_sites`: which of n activation sites get the new unit — round(f·n) of them, halves
  up, from the last site towards the first: the protocol of Fig. 6 of Dai et al., "Attention as
  Activation" (ICPR 2020, Sec. IV-B(3): ReLUs replaced "starting with the last layer and ending
  with the first layer"), or from the first with ``order="first_first"``.

This module imports nothing else of attnact, so units, models and fuse can all use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import fx, nn

__all__ = [
    "ORDERS",
    "LeafTracer",
    "alias_paths",
    "attach_attribute",
    "has_hooks",
    "is_attnact_unit",
    "module_paths",
    "select_sites",
    "set_module",
]

ORDERS = ("last_first", "first_first")

# torch.fx.graph_module._USER_PRESERVED_ATTRIBUTES_KEY (private, hence spelled out; an unknown
# key in GraphModule.meta is harmless on torch versions that do not read it).
_FX_PRESERVED_ATTRS = "_user_preserved_attributes"
_HOOK_ATTRS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` at the dotted ``path`` below ``root`` (replacing what is there)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    parent.add_module(leaf, module)


def module_paths(root: nn.Module) -> dict[int, list[str]]:
    """Every path of every module below ``root``, by ``id``; a module registered at several
    places has several paths, and ``root`` itself has the path ``""``."""
    paths: dict[int, list[str]] = {}
    for p, m in root.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), []).append(p)
    return paths


def alias_paths(root: nn.Module, module: nn.Module) -> list[str]:
    """The non-empty paths at which ``module`` is registered below ``root`` (all of them, so a
    swap reaches every alias of a shared module)."""
    return [p for p in module_paths(root).get(id(module), []) if p]


def has_hooks(m: nn.Module) -> bool:
    """Does ``m`` itself carry forward or backward hooks? Replacing or fusing it would drop them
    or change what they see."""
    return any(getattr(m, name, None) for name in _HOOK_ATTRS)


def is_attnact_unit(m: nn.Module) -> bool:
    """A module defined in :mod:`attnact.units` (ATAC, AReLU, ...)."""
    return type(m).__module__.startswith("attnact.units.")


def attach_attribute(module: nn.Module, name: str, value: Any) -> None:
    """Set ``module.<name> = value`` so that it survives ``copy.deepcopy`` also when ``module``
    is an ``fx.GraphModule``, whose ``__deepcopy__`` rebuilds the module and keeps only the
    attributes listed in its ``meta``."""
    setattr(module, name, value)
    if isinstance(module, fx.GraphModule):
        module.meta.setdefault(_FX_PRESERVED_ATTRS, {})[name] = value


class LeafTracer(fx.Tracer):
    """fx tracer that does not trace into attnact units, ``leaf_types`` or what ``leaf`` accepts.

    attnact units are leaves because some have Python control flow on shapes, and their inner
    modules (ATAC's ReLU) belong to the unit, not to the host network. ``stack`` holds the
    non-leaf modules being traced; after a failed trace its last entry is the module that failed.
    """

    # Defaults because unpickling a GraphModule re-traces with a no-argument subclass of the
    # tracer class that built it.
    def __init__(
        self,
        leaf_types: tuple[type, ...] = (),
        leaf: Callable[[nn.Module], bool] | None = None,
    ) -> None:
        super().__init__()
        self._leaf_types = tuple(leaf_types)
        self._leaf = leaf
        self.stack: list[nn.Module] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if (is_attnact_unit(m) or isinstance(m, self._leaf_types)
                or (self._leaf is not None and self._leaf(m))):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if self.is_leaf_module(m, ""):
            return super().call_module(m, forward, args, kwargs)
        self.stack.append(m)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()  # not reached when tracing m fails: the stack then names the culprit
        return out


def _check_selection(n: object, fraction: object, order: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
            or not 0.0 <= fraction <= 1.0):  # the comparison also rejects NaN
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")


def select_sites(n: int, fraction: float, order: str = "last_first") -> range:
    """Indices (0 … n−1, forward order) of the sites that get the new unit.

    round(fraction · n) of them with halves rounding up (Python's ``round`` would send 0.5 to 0
    and 2.5 to 2), taken from the end with ``"last_first"`` (ATAC paper, Fig. 6) or from the
    start with ``"first_first"``.
    """
    _check_selection(n, fraction, order)
    k = min(n, math.floor(fraction * n + 0.5))
    return range(n - k, n) if order == "last_first" else range(k)
