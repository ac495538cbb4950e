"""Rewrite any model's activations into attentional units (ATAC, AReLU, ... or any module).

:func:`convert_activations` finds every *call site* of an activation (an ``nn.ReLU`` module, and
the functional forms ``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``, ``x.relu_()`` ...) and puts a
fresh unit at each one, built by :func:`~attnact.units.registry.create_act_layer` with that site's
channel count and channel axis. Replacing a *fraction* of the sites from the last one towards the
first is the protocol of Fig. 6 of Dai et al., "Attention as Activation" (ICPR 2020), which shows
the gain growing as the network becomes "fully attentional".

Channel axis: a unit that needs a channel count (ATAC, SEActivation, xUnit) must know which axis
holds the channels — dim 1 of a CNN's (N, C, H, W) map, the last dim of a transformer's
(N, L, C) tokens or of ConvNeXt's (N, H, W, C) maps. Taking dim 1 everywhere would size ATAC by
the sequence length or the image height: it would mix tokens and fail at any other length. So
each site's axis is read off the layer producing its input (Conv/BatchNorm/GroupNorm: 1;
Linear/LayerNorm: −1, through channel-preserving ops and element-wise sums), else off the first
such layer reading its output, else off its rank (2: both agree; 4: 1); anything else is refused
for those units unless ``channel_dim=`` says it. The report lists each site's axis and source.

How the result is built:

* Call sites are discovered by ``torch.fx`` symbolic tracing with a tracer that treats attnact
  units, the ``match`` classes and ``leaf_modules`` as opaque, so units already in the model (with
  Python control flow inside) do not break tracing and their inner ReLUs are left alone. Site
  order is the execution order of the traced graph.
* If every replaced site is a module called once, the modules are swapped inside a deep copy of
  the model: its class, module names and every other state_dict key stay as they were, and the
  new unit's keys sit under the old activation's name (``layer1.0.relu.conv1.weight``).
* Otherwise (one ``nn.ReLU`` object called at several widths, as in torchvision's Bottleneck, or
  functional calls) the result is an ``fx.GraphModule`` whose graph calls one new submodule per
  site. It keeps the whole module hierarchy of the copy, so other state_dict keys are unchanged.
* If tracing fails, sites come from forward hooks run on ``example_input`` (execution order), or
  from module registration order without one; then only modules called once can be replaced and
  functional calls cannot be seen (the report's ``notes`` say so).

Limits of the fx result: Python control flow in ``forward`` is fixed at trace time (an
``if self.training:`` branch stays as traced), submodules' own ``forward`` methods are no longer
used (call the GraphModule), and forward hooks on the root module are not carried over. An
in-place activation (``x.relu_()``, ``ReLU(inplace=True)``) whose input is read again later is
rewritten so later readers get the new unit's output; views of that input taken earlier are not.

The input model is never modified: everything happens on a ``copy.deepcopy``, so an error leaves
nothing half-converted and the original stays usable as the ReLU baseline. The report of what was
done is attached to the returned model as ``model.conversion_report`` (a :class:`ConversionReport`).
"""

from __future__ import annotations

import copy
import inspect
import operator
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.lazy import LazyModuleMixin

from attnact.units.registry import (
    ActivationSpec,
    activation_spec,
    create_act_layer,
    list_activations,
)
from attnact.units.rewrite import (
    ORDERS,
    LeafTracer,
    alias_paths,
    attach_attribute,
    is_attnact_unit,
    select_sites,
    set_module,
)

__all__ = ["ConversionReport", "ReplacedSite", "SkippedSite", "convert_activations"]

REPORT_ATTR = "conversion_report"


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplacedSite:
    """One call site that now calls a new unit.

    Attributes:
        site: qualified name of the new unit in the converted model (its state_dict prefix).
        channels: the site's channel count (dim ``channel_dim`` of its input), ``None`` if
            unknown.
        params_added: number of parameters of the new unit (ATAC: 2C²/r + 2C/r + 2C).
        index: position of the site in execution order among all matched call sites.
        original: what was called there, e.g. ``"layer1.0.relu (ReLU), call 2 of 3"``.
        unit: class name of the new unit.
        channel_dim: the site's channel axis, 1 (channels first: (N, C, ...)) or -1 (channels
            last: (N, L, C) tokens, (N, H, W, C) maps); ``None`` if unknown (element-wise units
            do not need it).
        axis_source: how the axis was found: the producing layer (``"Linear fc1"``), ``"rank 2"``
            (both axes agree), ``"assumed (rank-4 map)"``, or ``"channel_dim argument"``.
    """

    site: str
    channels: int | None
    params_added: int
    index: int
    original: str
    unit: str
    channel_dim: int | None = None
    axis_source: str = ""


@dataclass(frozen=True)
class SkippedSite:
    """A matched activation that was left as it was, and why."""

    site: str
    reason: str
    index: int | None = None


@dataclass
class ConversionReport:
    """What :func:`convert_activations` did; attached to the result as ``.conversion_report``.

    Attributes:
        to: name of the new unit kind.
        fraction, order: the selection that was asked for.
        method: ``"module"`` (modules swapped, model class kept) or ``"fx"`` (a GraphModule).
        replaced: the replaced call sites, in execution order.
        skipped: matched sites or modules left alone, with the reason.
        params_removed: parameters of original activation modules that left the model (0 for
            ReLU; PReLU weights when converting PReLU).
        notes: anything the user should know (tracing failed and a fallback was used, ...).
    """

    to: str
    fraction: float
    order: str
    method: Literal["module", "fx"] = "module"
    replaced: list[ReplacedSite] = field(default_factory=list)
    skipped: list[SkippedSite] = field(default_factory=list)
    params_removed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def params_added(self) -> int:
        """Total parameters of the new units."""
        return sum(s.params_added for s in self.replaced)

    @property
    def n_sites(self) -> int:
        """Number of activation call sites found (replaced or not selected)."""
        return len(self.replaced) + sum(1 for s in self.skipped if s.index is not None)

    def to_markdown(self) -> str:
        """The report as a markdown table of replaced sites, followed by the skipped ones."""
        lines = [
            f"Converted {len(self.replaced)} of {self.n_sites} activation sites to {self.to!r} "
            f"(fraction={self.fraction}, order={self.order!r}, method={self.method!r}); "
            f"+{self.params_added} parameters, -{self.params_removed}.",
            "",
            "| # | site | original | unit | channels | axis | params added |",
            "|---|------|----------|------|---------:|------|-------------:|",
        ]
        for s in self.replaced:
            ch = "?" if s.channels is None else str(s.channels)
            axis = "?" if s.channel_dim is None else f"{s.channel_dim} ({s.axis_source})"
            lines.append(
                f"| {s.index} | `{s.site}` | {s.original} | {s.unit} | {ch} | {axis} | "
                f"{s.params_added} |"
            )
        if self.skipped:
            lines += ["", "| # | skipped | reason |", "|---|---------|--------|"]
            for k in self.skipped:
                idx = "" if k.index is None else str(k.index)
                lines.append(f"| {idx} | {k.site} | {k.reason} |")
        lines += [f"\nNote: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


# ---------------------------------------------------------------------------------------------
# Matching: module classes and their functional equivalents
# ---------------------------------------------------------------------------------------------


def _fns(*names: str, ns: Any = F) -> set[Callable[..., Any]]:
    # getattr with a default: some functions do not exist in every torch version.
    return {f for f in (getattr(ns, n, None) for n in names) if f is not None}


# Module class -> (functions, Tensor method names) that compute the same activation, so that
# match=(nn.ReLU,) also finds F.relu(x), torch.relu(x), x.relu() and x.relu_().
_FUNCTIONAL: dict[type[nn.Module], tuple[set[Callable[..., Any]], set[str]]] = {
    nn.ReLU: (_fns("relu", "relu_") | _fns("relu", "relu_", ns=torch), {"relu", "relu_"}),
    nn.ReLU6: (_fns("relu6"), set()),
    nn.LeakyReLU: (_fns("leaky_relu", "leaky_relu_"), set()),
    nn.GELU: (_fns("gelu"), set()),
    nn.SiLU: (_fns("silu"), set()),
    nn.Mish: (_fns("mish"), set()),
    nn.Hardswish: (_fns("hardswish"), set()),
    nn.ELU: (_fns("elu", "elu_"), set()),
    nn.SELU: (_fns("selu", "selu_") | _fns("selu", "selu_", ns=torch), set()),
    nn.CELU: (_fns("celu", "celu_") | _fns("celu", "celu_", ns=torch), set()),
    nn.Softplus: (_fns("softplus"), set()),
    nn.Sigmoid: (_fns("sigmoid") | _fns("sigmoid", ns=torch), {"sigmoid", "sigmoid_"}),
    nn.Tanh: (_fns("tanh") | _fns("tanh", ns=torch), {"tanh", "tanh_"}),
}


@dataclass(frozen=True)
class _Matcher:
    modules: tuple[type[nn.Module], ...]
    functions: frozenset[Callable[..., Any]]
    methods: frozenset[str]


def _class_for_name(name: str) -> type[nn.Module]:
    """The module class a registered name stands for when matching: the torch.nn class that
    attnact's registered class extends (``"gelu"`` → ``nn.GELU``, so ``nn.GELU`` modules and
    ``F.gelu`` calls match), else the registered class itself."""
    factory = activation_spec(name).factory  # the registry's ValueError for unknown names
    if not isinstance(factory, type):
        raise ValueError(f"match={name!r} names a unit built by a function, not a class")
    return next((c for c in factory.__mro__ if c in _FUNCTIONAL), factory)


def _build_matcher(match: Any) -> _Matcher:
    if isinstance(match, (str, type)) or callable(match):
        items: tuple[Any, ...] = (match,)
    else:
        items = tuple(match) if isinstance(match, (tuple, list, set, frozenset)) else (match,)
    if not items:
        raise ValueError("match must name at least one activation class, e.g. (nn.ReLU,)")
    modules: list[type[nn.Module]] = []
    functions: set[Callable[..., Any]] = set()
    methods: set[str] = set()
    for item in items:
        if isinstance(item, str):
            item = _class_for_name(item)
        if isinstance(item, type) and issubclass(item, nn.Module):
            modules.append(item)
            fns, meths = _FUNCTIONAL.get(item, (set(), set()))
            functions |= fns
            methods |= meths
        elif callable(item) and not isinstance(item, type):
            functions.add(item)  # a function such as F.gelu: match its call_function nodes
        else:
            raise ValueError(
                f"match must hold registered names, nn.Module classes or functions, got {item!r} "
                f"(e.g. match=(nn.ReLU, nn.GELU), match=('relu', 'gelu') or match=(F.relu,))"
            )
    return _Matcher(tuple(modules), frozenset(functions), frozenset(methods))


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    label: str
    needs_channels: bool
    takes_channel_dim: bool = False


def _takes_channel_dim(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "channel_dim" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _describe_target(to: Any) -> _Target:
    """Name and channel needs of ``to``, with the registry's error for unknown names."""
    if isinstance(to, nn.Module):
        raise ValueError(
            f"to must be a registered name, an nn.Module class or a factory, not a module "
            f"instance ({type(to).__name__}): one object at every site would share its parameters"
        )
    if isinstance(to, str):
        spec: ActivationSpec | None = activation_spec(to)  # the registry's ValueError if unknown
    else:
        spec = next(
            (activation_spec(n) for n in list_activations() if activation_spec(n).factory is to),
            None,
        )
    if spec is not None:
        if spec.changes_channels:
            raise ValueError(
                f"to={spec.name!r} changes the channel count, so it cannot replace an activation "
                f"in place (the next layer expects the same channels); pick a unit with "
                f"changes_channels=False"
            )
        return _Target(spec.name, spec.needs_channels, spec.needs_channels)
    if isinstance(to, type):
        if not issubclass(to, nn.Module):
            raise ValueError(f"to must be a registered name, an nn.Module class or a factory, "
                             f"got class {to.__name__}")
        try:
            needs = "channels" in inspect.signature(to).parameters
        except (TypeError, ValueError):
            needs = False
        return _Target(to.__name__, needs, needs and _takes_channel_dim(to))
    if callable(to):
        return _Target(getattr(to, "__name__", repr(to)), False)
    raise ValueError(
        f"to must be a registered name (see attnact.list_activations()), an nn.Module class or "
        f"a factory, got {type(to).__name__}"
    )


def _check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    if not 0.0 <= float(fraction) <= 1.0:  # also rejects NaN
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return float(fraction)


def _as_args(example_input: Any) -> tuple[Any, ...] | None:
    if example_input is None:
        return None
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, tuple):
        return example_input
    raise ValueError(
        f"example_input must be a tensor, a tuple of forward() arguments or None, "
        f"got {type(example_input).__name__}"
    )


def _run_example(model: nn.Module, args: tuple[Any, ...]) -> None:
    """One eval-mode forward of ``model`` on the example input; a failure inside the user's
    model is reported as a bad ``example_input``."""
    try:
        with _evaluating(model):
            model(*args)
    except Exception as exc:  # user code: report it as a bad input
        raise ValueError(
            f"example_input of shape {_shape_str(args)} does not fit the model: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _shape_str(args: tuple[Any, ...]) -> str:
    return ", ".join(
        str(tuple(a.shape)) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args
    )


# ---------------------------------------------------------------------------------------------
# Site discovery
# ---------------------------------------------------------------------------------------------


@dataclass
class _Site:
    index: int
    kind: Literal["module", "function", "method"]
    original: str
    node: fx.Node | None = None  # None when sites come from hooks or registration order
    path: str = ""  # module sites: the module's qualified name
    call: int = 0  # module sites: which call of that module (0-based)
    n_calls: int = 1
    owner: str = ""  # functional sites: qualified name of the module whose forward calls it
    fname: str = ""
    inplace: bool = False
    channels: int | None = None
    channel_dim: int | None = None
    axis_source: str = ""
    shape: Any = None  # the input's shape, where example_input gave it
    name: str = ""  # where the new unit goes


def _is_uninitialized(m: nn.Module) -> bool:
    """A lazy module (torch's or attnact's) whose parameters await their first forward."""
    return isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()


def _is_opaque(m: nn.Module, matcher: _Matcher, leaf_modules: tuple[type, ...]) -> bool:
    return isinstance(m, matcher.modules) or is_attnact_unit(m) or isinstance(m, leaf_modules)


def _module_candidates(
    root: nn.Module, matcher: _Matcher, leaf_modules: tuple[type, ...]
) -> tuple[dict[str, nn.Module], list[SkippedSite]]:
    """Matched modules in registration order, and matched modules hidden inside opaque ones."""
    found: dict[str, nn.Module] = {}
    hidden: list[SkippedSite] = []
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str, inside: str | None) -> None:
        for name, child in module.named_children():
            if id(child) in seen:  # shared module: first name wins, as in named_modules()
                continue
            seen.add(id(child))
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, matcher.modules):
                if inside is None:
                    found[path] = child
                else:
                    hidden.append(SkippedSite(path, f"inside {inside}, which is treated as a leaf"))
                continue
            opaque = _is_opaque(child, matcher, leaf_modules)
            walk(child, path, inside or (f"{type(child).__name__} {path!r}" if opaque else None))

    walk(root, "", None)
    return found, hidden


def _function_label(fn: Any) -> str:
    name = getattr(fn, "__name__", repr(fn))
    if getattr(F, name, None) is fn:
        return f"F.{name}"
    if getattr(torch, name, None) is fn:
        return f"torch.{name}"
    return getattr(fn, "__qualname__", name)


def _site_input(node: fx.Node) -> Any:
    if node.args:
        return node.args[0]
    return node.kwargs.get("input", node.kwargs.get("self"))


def _is_inplace_call(node: fx.Node) -> bool:
    """Does this functional/method call modify its input in place?"""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if name.endswith("_"):
        return True
    if node.kwargs.get("inplace") is True:
        return True
    if isinstance(node.target, str):  # a method name: no signature to bind
        return False
    try:  # positional inplace, e.g. F.relu(x, True)
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
        return bound.arguments.get("inplace") is True
    except (TypeError, ValueError):
        return False


def _owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return str(list(stack.values())[-1][0])


def _sites_from_graph(gm: fx.GraphModule, matcher: _Matcher) -> tuple[list[_Site], list[str]]:
    """Matched call sites in execution order, and notes about matched nodes that were ignored."""
    sites: list[_Site] = []
    notes: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if not isinstance(module, matcher.modules):
                continue
            site = _Site(
                index=0, kind="module", original="", node=node, path=node.target,
                inplace=bool(getattr(module, "inplace", False)),
            )
        elif node.op == "call_function" and node.target in matcher.functions:
            site = _Site(
                index=0, kind="function", original=_function_label(node.target), node=node,
                owner=_owner(node), fname=node.target.__name__.rstrip("_"),
                inplace=_is_inplace_call(node),
            )
        elif node.op == "call_method" and node.target in matcher.methods:
            site = _Site(
                index=0, kind="method", original=f"Tensor.{node.target}", node=node,
                owner=_owner(node), fname=node.target.rstrip("_"), inplace=_is_inplace_call(node),
            )
        else:
            continue
        if not isinstance(_site_input(node), fx.Node):
            notes.append(f"{node.format_node()}: input is not a tensor of the graph, left alone")
            continue
        site.index = len(sites)
        sites.append(site)
    _number_module_calls(sites, {s.path: type(gm.get_submodule(s.path)).__name__
                                 for s in sites if s.kind == "module"})
    for s in sites:
        if s.kind != "module":
            where = f" in {s.owner}" if s.owner else ""
            s.original = f"{s.original}{where}"
    return sites, notes


def _number_module_calls(sites: list[_Site], class_names: dict[str, str]) -> None:
    counts: dict[str, int] = {}
    for s in sites:
        if s.kind == "module":
            s.call = counts.get(s.path, 0)
            counts[s.path] = s.call + 1
    for s in sites:
        if s.kind == "module":
            s.n_calls = counts[s.path]
            s.original = f"{s.path} ({class_names[s.path]})"
            if s.n_calls > 1:
                s.original += f", call {s.call + 1} of {s.n_calls}"


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad: probing shapes must not update BatchNorm running statistics."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def _channels_of(shape: Any, axis: int | None = 1) -> int | None:
    if shape is None or len(shape) < 2 or axis is None:
        return None
    return int(shape[axis])


def _settle_axis(site: _Site, shape: Any) -> None:
    """Fix a site's axis from its input's shape where the producer did not tell: rank 2 has one
    channel axis either way; a rank-4 map is taken as channels first (the layout of every
    torch.nn 2-D layer); other ranks stay unknown (a rank-3 tensor may be (N, C, L) or
    (N, L, C)), which conversion to a channel unit refuses."""
    site.shape = shape
    if site.channel_dim is None and shape is not None:
        if len(shape) == 2:
            site.channel_dim, site.axis_source = 1, "rank 2"
        elif len(shape) == 4:
            site.channel_dim, site.axis_source = 1, "assumed (rank-4 map)"
    site.channels = _channels_of(shape, site.channel_dim)


def _propagate_shapes(gm: fx.GraphModule, args: tuple[Any, ...], sites: list[_Site]) -> None:
    with _evaluating(gm):
        try:
            ShapeProp(gm).propagate(*args)
        except Exception as exc:  # any error raised by user code: report it as a bad input
            raise ValueError(
                f"example_input of shape {_shape_str(args)} does not fit the model: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    for s in sites:
        meta = s.node.meta.get("tensor_meta") if s.node is not None else None
        _settle_axis(s, getattr(meta, "shape", None))


def _sites_from_hooks(
    model: nn.Module, candidates: dict[str, nn.Module], args: tuple[Any, ...]
) -> list[_Site]:
    """Call sites of matched modules in execution order, found by running ``example_input``;
    each site's channel axis from the module that produced its input (tracked by tensor
    identity through the forward hooks of every module), else from the first layer with a known
    axis that reads its output."""
    calls: list[tuple[str, Any, tuple[int | None, str]]] = []
    produced: dict[int, tuple[torch.Tensor, tuple[int | None, str]]] = {}
    # (output shape, axis, source) of every layer with a known axis, in call order, and where
    # each module's call started in that list: a container (LeViT's Linear + BatchNorm1d block
    # that reshapes the BN output) inherits the axis of the last such layer it ran, when the
    # width matches (below).
    events: list[tuple[tuple[int, ...], int, str]] = []
    starts: list[int] = []
    modules = dict(model.named_modules())

    def layout_of(t: Any) -> tuple[int | None, str]:
        hit = produced.get(id(t)) if isinstance(t, torch.Tensor) else None
        return hit[1] if hit is not None and hit[0] is t else (None, "")

    def inherited(out: torch.Tensor, since: int, path: str) -> tuple[int | None, str]:
        if len(events) <= since or out.dim() < 2:
            return None, ""
        shape, axis, source = events[-1]
        width = shape[axis]
        last = axis == -1 or len(shape) == 2  # the layer's channels are its last dim
        if last and out.shape[-1] == width:
            return -1, f"{source} via {path}"
        if not last and len(shape) == out.dim() and out.shape[1] == width:
            return 1, f"{source} via {path}"
        return None, ""

    # Sites whose input no known layer produced, by id of their output: the first layer with a
    # known axis that reads that output tells the axis instead (LeViT's attention output goes
    # through Hardswish into a Linear projection).
    pending: dict[int, tuple[torch.Tensor, int]] = {}

    def start(m: nn.Module, inputs: tuple[Any, ...]) -> None:
        starts.append(len(events))
        t = inputs[0] if inputs else None
        hit = pending.get(id(t)) if isinstance(t, torch.Tensor) else None
        axis = _module_axis(m)
        if hit is not None and hit[0] is t and axis is not None:
            i = hit[1]
            calls[i] = (calls[i][0], calls[i][1], (axis, f"read by {type(m).__name__}"))
            del pending[id(t)]

    def record(path: str) -> Callable[..., None]:
        def hook(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
            since = starts.pop() if starts else len(events)
            if path in candidates:
                layout = layout_of(inputs[0] if inputs else None)
                calls.append((path, getattr(out, "shape", None), layout))
                if layout[0] is None and isinstance(out, torch.Tensor):
                    pending[id(out)] = (out, len(calls) - 1)
            if not isinstance(out, torch.Tensor):
                return
            axis = _module_axis(m)
            if axis is not None:
                info: tuple[int | None, str] = (axis, f"{type(m).__name__} {path}")
                events.append((tuple(out.shape), axis, info[1]))
            elif isinstance(m, _SAME_CHANNEL_MODULES) and inputs:
                info = layout_of(inputs[0])
            elif id(out) not in produced:
                info = inherited(out, since, path)
            else:
                return
            if info[0] is not None:
                produced[id(out)] = (out, info)
        return hook

    handles = [m.register_forward_pre_hook(start) for path, m in modules.items() if path]
    handles += [m.register_forward_hook(record(path)) for path, m in modules.items() if path]
    try:
        _run_example(model, args)
    finally:
        for h in handles:
            h.remove()
        produced.clear()
        events.clear()
        pending.clear()
    sites = []
    for i, (path, shape, (axis, source)) in enumerate(calls):
        site = _Site(index=i, kind="module", original="", path=path, channel_dim=axis,
                     axis_source=source,
                     inplace=bool(getattr(candidates[path], "inplace", False)))
        _settle_axis(site, shape)
        sites.append(site)
    _number_module_calls(sites, {p: type(m).__name__ for p, m in candidates.items()})
    return sites


# ---------------------------------------------------------------------------------------------
# Channel inference without example_input
# ---------------------------------------------------------------------------------------------

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
# Modules and calls whose output has the channel count of their (first) input.
_SAME_CHANNEL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.modules.dropout._DropoutNd,
    nn.AlphaDropout,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    *_FUNCTIONAL,
    nn.PReLU,
    nn.Hardsigmoid,
)
_SAME_CHANNEL_FUNCTIONS = {
    f for fns, _ in _FUNCTIONAL.values() for f in fns
} | _fns("dropout", "dropout2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
_SAME_CHANNEL_METHODS = {m for _, ms in _FUNCTIONAL.values() for m in ms} | {"contiguous", "clone"}
# Element-wise binary ops: the result's channel count is that of the operands (broadcasting
# allows 1 on one side).
_BINARY_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    torch.add, torch.sub, torch.mul,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}


def _module_axis(m: nn.Module) -> int | None:
    """The channel axis of a layer's output: 1 for convolutions and the channel norms, -1 for
    Linear and LayerNorm (which act on the last dim); None for anything else."""
    if isinstance(m, (nn.modules.conv._ConvNd, *_NORM_TYPES, nn.GroupNorm)):
        return 1
    if isinstance(m, (nn.Linear, nn.LayerNorm)):
        return -1
    return None


def _module_width(m: nn.Module) -> int | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    if isinstance(m, _NORM_TYPES):
        return m.num_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    return None


Layout = tuple[int | None, int | None, str]  # (channels, channel axis, the layer that says so)
_UNKNOWN: Layout = (None, None, "")


def _infer_layout(gm: fx.GraphModule, node: Any, depth: int = 0) -> Layout:
    """Channel count and axis of ``node``'s output read off the module that produced it.

    Only unambiguous cases: a Conv/BatchNorm/InstanceNorm/GroupNorm (axis 1) or Linear/
    LayerNorm (axis −1), reached through channel-preserving ops, or element-wise sums whose
    operands all resolve and agree.
    """
    if not isinstance(node, fx.Node) or depth > 200:
        return _UNKNOWN
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))  # a call_module target is the module's path
        axis = _module_axis(m)
        if axis is not None:
            return _module_width(m), axis, f"{type(m).__name__} {node.target}"
        if isinstance(m, _SAME_CHANNEL_MODULES) or is_attnact_unit(m):
            # attnact units preserve channels, except Maxout which the caller refuses as `to`
            # but may meet in the host network: its class name tells.
            if "maxout" in type(m).__name__.lower():
                return _UNKNOWN
            return _infer_layout(gm, _site_input(node), depth + 1)
        return _UNKNOWN
    if node.op in ("call_function", "call_method"):
        same = (
            node.target in _SAME_CHANNEL_FUNCTIONS
            if node.op == "call_function"
            else node.target in _SAME_CHANNEL_METHODS
        )
        if same:
            return _infer_layout(gm, _site_input(node), depth + 1)
        binary = (
            node.target in _BINARY_FUNCTIONS
            if node.op == "call_function"
            else node.target in _BINARY_METHODS
        )
        if binary:
            operands = [a for a in node.args if isinstance(a, fx.Node)]
            layouts = [_infer_layout(gm, a, depth + 1) for a in operands]
            if not layouts or any(c is None for c, _, _ in layouts):
                return _UNKNOWN
            wide = {(c, ax) for c, ax, _ in layouts if c != 1}
            if len(wide) > 1:
                return _UNKNOWN
            if not wide:
                return 1, layouts[0][1], layouts[0][2]
            c, ax = wide.pop()
            return c, ax, next(src for cc, aa, src in layouts if (cc, aa) == (c, ax))
    return _UNKNOWN


def _consumer_layout(gm: fx.GraphModule, node: fx.Node, depth: int = 0) -> Layout:
    """Channel count and axis of ``node``'s output read off the first layer that consumes it
    (through channel-preserving ops), when every consumer that tells agrees."""
    found: set[tuple[int | None, int, str]] = set()
    for user in node.users:
        if user.op == "call_module" and _site_input(user) is node:
            m = gm.get_submodule(str(user.target))
            axis = _module_axis(m)
            if axis is not None:
                width = m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else (
                    m.in_features if isinstance(m, nn.Linear) else _module_width(m))
                found.add((width, axis, f"read by {type(m).__name__} {user.target}"))
                continue
            if isinstance(m, _SAME_CHANNEL_MODULES) and depth < 20:
                c, a, src = _consumer_layout(gm, user, depth + 1)
                if a is not None:
                    found.add((c, a, src))
        elif depth < 20 and (
            (user.op == "call_function" and user.target in _SAME_CHANNEL_FUNCTIONS)
            or (user.op == "call_method" and user.target in _SAME_CHANNEL_METHODS)
        ):
            c, a, src = _consumer_layout(gm, user, depth + 1)
            if a is not None:
                found.add((c, a, src))
    if len({(c, a) for c, a, _ in found}) != 1:
        return _UNKNOWN
    return found.pop()


def _infer_channels(gm: fx.GraphModule, node: Any) -> int | None:
    """Channel count of ``node``'s output read off the module that produced it, or None."""
    return _infer_layout(gm, node)[0]


# ---------------------------------------------------------------------------------------------
# Building the result
# ---------------------------------------------------------------------------------------------


def _full_graph_module(work: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule that keeps *all* of ``work``'s submodules, parameters and buffers.

    fx.GraphModule copies only what the graph references; unused modules and parameters would
    vanish and state_dict keys would change. Re-attaching the original children keeps the same
    keys (and lets pretrained weights load) whatever the graph uses.
    """
    gm = fx.GraphModule(work, graph, class_name=type(work).__name__)
    persistent = set(work.state_dict().keys())
    for name, child in work.named_children():
        gm.add_module(name, child)
    for name, p in work.named_parameters(recurse=False):
        gm.register_parameter(name, p)
    for name, b in work.named_buffers(recurse=False):
        gm.register_buffer(name, b, persistent=name in persistent)
    return gm


def _has_attr_path(root: nn.Module, path: str) -> bool:
    obj: Any = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _assign_names(root: nn.Module, sites: list[_Site]) -> None:
    """Give every site (selected or not) a unique home, so names do not depend on ``fraction``."""
    taken: set[str] = set()

    def unique(base: str) -> str:
        name, k = base, 0
        while name in taken or _has_attr_path(root, name):
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    per_owner: dict[tuple[str, str], int] = {}
    for s in sites:
        if s.kind == "module" and s.n_calls == 1:
            s.name = s.path  # the new unit takes the old module's place
            taken.add(s.name)
        elif s.kind == "module":
            s.name = unique(f"{s.path}_{s.call}")
        else:
            k = per_owner.get((s.owner, s.fname), 0)
            per_owner[(s.owner, s.fname)] = k + 1
            leaf = f"{s.fname}_fn" if k == 0 else f"{s.fname}_fn_{k}"
            s.name = unique(f"{s.owner}.{leaf}" if s.owner else leaf)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _placement(model: nn.Module) -> dict[str, Any]:
    """Device and dtype for new units: those of the model's floating-point tensors, if uniform."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    devices = {t.device for t in tensors}
    dtypes = {t.dtype for t in tensors}
    out: dict[str, Any] = {}
    if len(devices) == 1:
        out["device"] = devices.pop()
    if len(dtypes) == 1:
        out["dtype"] = dtypes.pop()
    return out


def _reads_input_later(site: _Site) -> bool:
    """An in-place site whose input tensor is read again after it (``x.relu_(); return x``)."""
    node = site.node
    if node is None or not site.inplace:
        return False
    inp = _site_input(node)
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    return any(u is not node and order[u] > order[node] for u in inp.users)


def _rewrite_graph(gm: fx.GraphModule, site: _Site, unit: nn.Module) -> None:
    node = site.node
    assert node is not None
    graph = gm.graph
    inp = _site_input(node)
    order = {n: i for i, n in enumerate(graph.nodes)}
    later_readers = [u for u in inp.users if u is not node and order[u] > order[node]]
    if site.kind == "module":
        if site.n_calls == 1:
            for alias in alias_paths(gm, gm.get_submodule(site.path)):
                set_module(gm, alias, unit)
        else:
            gm.add_submodule(site.name, unit)
            node.target = site.name
        new = node
    else:
        gm.add_submodule(site.name, unit)
        with graph.inserting_before(node):
            new = graph.call_module(site.name, (inp,))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    if site.inplace:
        # The old call changed its input in place, so later readers of that tensor saw the
        # activated values; make them read the new unit's output instead.
        for user in later_readers:
            user.replace_input_with(inp, new)


def _verify(model: nn.Module, args: tuple[Any, ...], units: dict[str, nn.Module]) -> None:
    """Run the converted model once; every new unit must keep its input's shape."""
    bad: list[str] = []

    def check(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
            shape_in = getattr(inputs[0], "shape", None) if inputs else None
            if shape_in != getattr(out, "shape", None):
                bad.append(f"{name}: {tuple(shape_in or ())} -> {tuple(getattr(out, 'shape', ()))}")
        return hook

    handles = [u.register_forward_hook(check(n)) for n, u in units.items()]
    try:
        with _evaluating(model):
            model(*args)
    except Exception as exc:  # user code and new units: report which conversion broke
        raise ValueError(
            f"the converted model fails on example_input of shape {_shape_str(args)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    if bad:
        raise ValueError(f"new units change the shape of their input: {'; '.join(bad)}")


def _match_label(match: Any) -> str:
    items = match if isinstance(match, (tuple, list, set, frozenset)) else (match,)
    return "(" + ", ".join(getattr(i, "__name__", repr(i)) for i in items) + ",)"


_ACTIVATION_FUNCTIONS = {f for fns, _ in _FUNCTIONAL.values() for f in fns}


def _activation_types(root: nn.Module, gm: fx.GraphModule | None) -> str:
    """What looks like an activation in the model: modules of torch.nn's activation module or
    named like one, and activation function calls in the traced graph, with their counts."""
    counts: dict[str, int] = {}
    for m in root.modules():
        name = type(m).__name__
        if (type(m).__module__ == "torch.nn.modules.activation" or is_attnact_unit(m)
                or any(k in name.lower() for k in ("activation", "relu", "gelu", "silu", "swish"))):
            counts[f"{name} (module)"] = counts.get(f"{name} (module)", 0) + 1
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
                key = f"{_function_label(node.target)} (call)"
                counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# The steps of convert_activations, in the order it runs them
# ---------------------------------------------------------------------------------------------

# stacklevel of a warning raised in a helper of a step (helper -> step -> convert_activations
# -> the user's call), so that it points at the user's line; a step itself uses one less.
_USER_FRAME = 4
# The tracer under its former name: a pickled GraphModule names the tracer class that built it
# and re-traces with it when loaded.
_SiteTracer = LeafTracer


@dataclass
class _Conversion:
    """What the steps of :func:`convert_activations` hand on to each other."""

    to: Any
    target: _Target
    matcher: _Matcher
    match: Any
    leaf_modules: tuple[type[nn.Module], ...]
    channel_dim: int | None
    args: tuple[Any, ...] | None
    unit_kwargs: dict[str, Any]
    work: nn.Module
    report: ConversionReport
    gm: fx.GraphModule | None = None
    trace_error: Exception | None = None
    candidates: dict[str, nn.Module] = field(default_factory=dict)
    hidden: list[SkippedSite] = field(default_factory=list)
    sites: list[_Site] = field(default_factory=list)
    chosen: list[_Site] = field(default_factory=list)
    use_fx: bool = False
    units: dict[str, nn.Module] = field(default_factory=dict)
    removed: dict[int, nn.Module] = field(default_factory=dict)
    result: nn.Module | None = None


def _validate(
    model: Any, to: Any, fraction: Any, order: Any, example_input: Any, match: Any,
    leaf_modules: Any, channel_dim: Any, unit_kwargs: dict[str, Any],
) -> _Conversion:
    """Check every argument (a clear error before any work), then copy the model: the user's
    model is never touched, even if a later step fails half-way."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "convert_activations needs an eager nn.Module, got a TorchScript module "
            f"({type(model).__name__}): its code is compiled and cannot be rewritten. Convert "
            "the eager model first, then script the result"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if channel_dim is not None and (isinstance(channel_dim, bool) or channel_dim not in (1, -1)):
        raise ValueError(f"channel_dim must be None, 1 or -1, got {channel_dim!r}")
    fraction = _check_fraction(fraction)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
    target = _describe_target(to)
    matcher = _build_matcher(match)
    leaf_modules = tuple(leaf_modules)
    if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in leaf_modules):
        raise ValueError(f"leaf_modules must be a tuple of nn.Module classes, got {leaf_modules!r}")
    args = _as_args(example_input)
    return _Conversion(
        to=to, target=target, matcher=matcher, match=match, leaf_modules=leaf_modules,
        channel_dim=channel_dim, args=args, unit_kwargs=unit_kwargs, work=copy.deepcopy(model),
        report=ConversionReport(to=target.label, fraction=fraction, order=order),
    )


def _materialise_lazy(c: _Conversion) -> None:
    """Give lazy modules (ATAC() in act_layer= slots) their shapes by a first forward on the
    example input, as the user would before training: fx cannot trace them before."""
    lazy = [p for p, m in c.work.named_modules() if _is_uninitialized(m)]
    if lazy and c.args is not None:
        _run_example(c.work, c.args)
        c.report.notes.append(f"lazy modules materialised by a first forward on example_input: "
                              f"{', '.join(lazy)}")
    elif lazy:
        c.report.notes.append(f"lazy modules not materialised yet ({', '.join(lazy)}): fx cannot "
                              "trace them; run one forward first or pass example_input")


def _find_sites(c: _Conversion) -> None:
    """Every matched call site in execution order: from the fx graph, else from forward hooks on
    ``example_input``, else from module registration order; then the not-called modules."""
    c.candidates, c.hidden = _module_candidates(c.work, c.matcher, c.leaf_modules)
    try:
        graph = LeafTracer(c.matcher.modules + c.leaf_modules).trace(c.work)
        c.gm = _full_graph_module(c.work, graph)
    except Exception as exc:  # fx raises many types on untraceable user code; we fall back
        c.trace_error = exc
    if c.gm is not None:
        _sites_by_graph(c, c.gm)
    else:
        _sites_without_graph(c)
    if not c.sites:
        seen = _activation_types(c.work if c.gm is None else c.gm, c.gm)
        msg = (f"convert_activations matched no activation call site "
               f"(match={_match_label(c.match)}); activations in the model: "
               f"{seen or 'none recognised'}. Pass match=... with those classes or names, e.g. "
               "match=('relu', 'gelu')")
        c.report.notes.append(msg)
        warnings.warn(msg, stacklevel=_USER_FRAME - 1)
    called = {s.path for s in c.sites if s.kind == "module"}
    if c.gm is not None or c.args is not None:
        c.report.skipped += [SkippedSite(p, "never called in forward")
                             for p in c.candidates if p not in called]
    c.report.skipped += [h for h in c.hidden if h.site not in called]


def _sites_by_graph(c: _Conversion, gm: fx.GraphModule) -> None:
    """Sites from the traced graph, each with the channel axis of the layer producing its input
    (else of the first layer reading its output), and shapes from ``example_input``."""
    c.sites, notes = _sites_from_graph(gm, c.matcher)
    c.report.notes += notes
    for s in c.sites:
        assert s.node is not None  # sites from a graph carry their node
        s.channels, s.channel_dim, s.axis_source = _infer_layout(gm, _site_input(s.node))
        if s.channel_dim is None and s.node is not None:
            s.channels, s.channel_dim, s.axis_source = _consumer_layout(gm, s.node)
    if c.args is not None:
        _propagate_shapes(gm, c.args, c.sites)


def _sites_without_graph(c: _Conversion) -> None:
    """The fallbacks when fx cannot trace: forward hooks on ``example_input`` (execution order),
    else module registration order (each module assumed called once, with a warning)."""
    why = f"fx could not trace the model ({type(c.trace_error).__name__}: {c.trace_error})"
    if c.args is not None:
        c.sites = _sites_from_hooks(c.work, c.candidates, c.args)
        c.report.notes.append(f"{why}; call sites found with forward hooks on example_input, "
                              "functional calls (F.relu, x.relu()) were not searched")
        return
    c.sites = [
        _Site(index=i, kind="module", original=f"{p} ({type(m).__name__})", path=p,
              inplace=bool(getattr(m, "inplace", False)))
        for i, (p, m) in enumerate(c.candidates.items())
    ]
    msg = (f"{why}; sites taken in module registration order, assuming each module is "
           "called once; functional calls were not searched. Pass example_input to check.")
    c.report.notes.append(msg)
    warnings.warn(msg, stacklevel=_USER_FRAME)


def _override_channel_dim(c: _Conversion) -> None:
    """``channel_dim=`` given: every site takes that axis, and its width along it."""
    if c.channel_dim is None:
        return
    for s in c.sites:
        if s.channel_dim != c.channel_dim:
            s.channels = _channels_of(s.shape, c.channel_dim) if s.shape is not None else None
        s.channel_dim, s.axis_source = c.channel_dim, "channel_dim argument"


def _select(c: _Conversion) -> None:
    """The sites to replace by the fraction/order rule (:func:`~attnact.units.rewrite.
    select_sites`, ATAC paper Fig. 6); the others go to the report as not selected."""
    report, n = c.report, len(c.sites)
    c.chosen = [c.sites[i] for i in select_sites(n, report.fraction, report.order)]
    chosen_ids = {s.index for s in c.chosen}
    for s in c.sites:
        if s.index not in chosen_ids:
            report.skipped.append(SkippedSite(
                s.original, f"not selected: fraction={report.fraction}, order={report.order!r} "
                f"replaces {len(c.chosen)} of {n} sites", s.index))
    report.skipped.sort(key=lambda s: (s.index is None, s.index or 0))


def _check_channels(c: _Conversion) -> None:
    """A unit that needs a channel count gets, at every chosen site, a known axis it can take
    and a known width; otherwise a ValueError naming the sites."""
    target = c.target
    if not target.needs_channels:
        return
    no_axis = [s for s in c.chosen if s.channel_dim is None and s.shape is not None]
    if no_axis:
        where = "; ".join(
            f"{s.original} (input shape {tuple(s.shape) if s.shape is not None else '?'})"
            for s in no_axis)
        raise ValueError(
            f"to={target.label!r} needs each site's channel axis, which cannot be told for: "
            f"{where}. No Conv/Norm (axis 1) or Linear/LayerNorm (axis -1) produces the "
            f"input; pass channel_dim=1 for (N, C, L) inputs or channel_dim=-1 for (N, L, C)"
            f" tokens"
        )
    if not target.takes_channel_dim:
        last = [s for s in c.chosen if s.channel_dim == -1 and
                (s.shape is None or len(s.shape) > 2)]
        if last:
            raise ValueError(
                f"to={target.label!r} does not take channel_dim, but site(s) "
                f"{', '.join(s.original for s in last)} have their channels last"
            )
    missing = [s for s in c.chosen if s.channels is None]
    if missing:
        where = ", ".join(s.original for s in missing)
        hint = ("pass example_input=... so shapes can be propagated" if c.args is None
                else "the unit needs inputs with a channel dimension")
        raise ValueError(
            f"to={target.label!r} needs the channel count of each site, which could not be "
            f"determined for: {where}; {hint}"
        )


def _choose_strategy(c: _Conversion) -> None:
    """Swap modules in the copy when every chosen site is a module called once; otherwise
    rewrite the fx graph (refused when there is none). Names every site's new unit."""
    c.use_fx = any(
        s.kind != "module" or s.n_calls > 1 or _reads_input_later(s) for s in c.chosen
    )
    if c.use_fx and c.gm is None:
        multi = sorted({s.original for s in c.chosen if s.n_calls > 1})
        raise ValueError(
            f"module(s) {', '.join(multi)} are called more than once, so each call needs its "
            f"own unit, which needs an fx graph; but fx could not trace the model "
            f"({type(c.trace_error).__name__}: {c.trace_error}). Pass the classes of the "
            f"submodules with data-dependent control flow as leaf_modules=(...), or replace "
            f"fewer sites."
        )
    if c.gm is not None:
        _assign_names(c.gm if c.use_fx else c.work, c.sites)
    else:
        for s in c.sites:
            s.name = s.path
    c.result = c.gm if c.use_fx and c.gm is not None else c.work


def _build_units(c: _Conversion) -> None:
    """One fresh unit per chosen site, with that site's channels and axis, on the model's
    device and dtype; a constructor error is re-raised naming the site."""
    placement = _placement(c.work)
    for s in c.chosen:
        try:
            layout = {"channel_dim": s.channel_dim} if c.target.takes_channel_dim else {}
            unit = create_act_layer(c.to, channels=s.channels, **layout, **c.unit_kwargs)
        except (TypeError, ValueError) as exc:  # not a retry: re-raised with the failing site
            raise ValueError(
                f"building {c.target.label!r} for site {s.original} (channels={s.channels}) "
                f"failed: {exc}"
            ) from exc
        c.units[s.name] = unit.to(**placement)


def _swap(c: _Conversion) -> None:
    """Put each new unit at its site: at every path of the old module, or by rewriting the
    graph; the old modules that leave the model are kept to count their parameters."""
    result = c.result
    assert result is not None
    for s in c.chosen:
        unit = c.units[s.name]
        if s.kind == "module" and s.n_calls == 1:
            old = result.get_submodule(s.path)
            c.removed[id(old)] = old
        if c.use_fx:
            _rewrite_graph(result, s, unit)  # type: ignore[arg-type]
        else:
            old = c.work.get_submodule(s.path)
            for alias in alias_paths(c.work, old):
                set_module(c.work, alias, unit)
        c.report.replaced.append(ReplacedSite(
            site=s.name, channels=s.channels, params_added=_n_params(unit), index=s.index,
            original=s.original, unit=type(unit).__name__, channel_dim=s.channel_dim,
            axis_source=s.axis_source))


def _clean_up_graph(c: _Conversion) -> None:
    """After a graph rewrite: drop modules no node calls any more, make the code picklable and
    recompile it. Then count the parameters that left the model."""
    if c.use_fx:
        result = c.result
        assert isinstance(result, fx.GraphModule)
        # A module called at several sites, all of them replaced, is now dead weight: drop it
        # (its parameters would get no gradient, which e.g. DDP rejects).
        still_called = {nd.target for nd in result.graph.nodes if nd.op == "call_module"}
        for path in sorted({s.path for s in c.chosen if s.kind == "module" and s.n_calls > 1}):
            if path not in still_called and _has_attr_path(result, path):
                old = result.get_submodule(path)
                c.removed[id(old)] = old
                for alias in alias_paths(result, old):
                    result.delete_submodule(alias)
        for nd in result.graph.nodes:
            # `from __future__ import annotations` makes forward()'s annotations strings, which
            # fx turns into string globals that GraphModule pickling (torch.save) chokes on.
            if isinstance(nd.type, str):
                nd.type = None
        result.graph.lint()
        result.recompile()
        c.report.method = "fx"
    c.report.params_removed = sum(_n_params(m) for m in c.removed.values())


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def convert_activations(
    model: nn.Module,
    to: str | type[nn.Module] | Callable[..., nn.Module],
    *,
    fraction: float = 1.0,
    order: str = "last_first",
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
    match: Any = (nn.ReLU,),
    leaf_modules: tuple[type[nn.Module], ...] = (),
    channel_dim: int | None = None,
    **unit_kwargs: Any,
) -> nn.Module:
    """Return a copy of ``model`` whose activation call sites call new units of kind ``to``.

    Each call site gets its own fresh unit, ``create_act_layer(to, channels=C, **unit_kwargs)``
    with C the size of that site's channel axis (``channel_dim`` below; the unit gets that axis
    too where it takes one). ``model`` is never modified. The report is attached as
    ``result.conversion_report`` (:class:`ConversionReport`).

    Args:
        model: any ``nn.Module``.
        to: registered name (``"atac"``, ``"arelu"``), an ``nn.Module`` class or a factory.
            Units that change the channel count (``"maxout"``) are refused.
        fraction: share of the call sites to replace, in [0, 1]; round(fraction × n) sites,
            halves rounding up.
        order: ``"last_first"`` replaces from the last site in execution order towards the first
            (the protocol of Fig. 6 of the ATAC paper); ``"first_first"`` from the first.
        example_input: a tensor, or a tuple of ``forward`` arguments. Gives each site's channel
            count by shape propagation and is used to check the converted model runs. Without
            it, channels (needed only by units such as ATAC and xUnit) are read off the
            Conv/BatchNorm/Linear feeding the site, when that is unambiguous.
        match: activations to replace: module classes (their functional forms are matched too:
            ``nn.ReLU`` also finds ``F.relu``, ``torch.relu``, ``x.relu()``, ``x.relu_()``),
            registered names (``"gelu"`` means ``nn.GELU`` and ``F.gelu``), or plain functions
            (``F.gelu``, matching only calls of that function). A conversion that matches
            nothing warns and lists the activation types the model has.
        leaf_modules: extra module classes fx should not trace into (for submodules with
            data-dependent control flow); activations inside them are left alone.
        channel_dim: the channel axis of every site, 1 or −1, overriding the detection. By
            default each site's axis comes from the layer producing its input (Conv/BatchNorm/
            GroupNorm: 1; Linear/LayerNorm: −1, as in transformers and ConvNeXt blocks), else
            from the first such layer reading its output, else from its rank (2: either; 4:
            1). Units that need a channel
            count (ATAC, SEActivation, xUnit) are built with that axis (``channel_dim=``), and a
            site whose axis cannot be told is refused. The report lists each site's axis.
        **unit_kwargs: forwarded to each new unit's constructor (``r=4``, ``alpha=0.5``).

    Returns:
        The model's own class when every replaced site is a module called once; otherwise an
        ``fx.GraphModule`` with the same module hierarchy plus one new submodule per site.

    Raises:
        ValueError: bad ``fraction``/``order``/``match``/``to``, an ``example_input`` that does
            not fit, channel counts or axes that cannot be inferred, or a model fx cannot trace
            when a graph rewrite is needed.
        TypeError: a TorchScript module (convert the eager model, then script the result).

    Examples:
        The ReLU after a 3-channel → 8-channel convolution becomes an 8-channel ATAC; the
        original model is left as it was.

        >>> import torch, attnact
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> atac_net = attnact.convert_activations(
        ...     net, "atac", example_input=torch.randn(1, 3, 8, 8))
        >>> type(atac_net[1]).__name__, atac_net[1].channels, type(net[1]).__name__
        ('ATAC', 8, 'ReLU')
        >>> print(atac_net.conversion_report)  # doctest: +ELLIPSIS
        Converted 1 of 1 activation sites to 'atac' (fraction=1.0, order='last_first', ...
        ...
        | 0 | `1` | 1 (ReLU) | ATAC | 8 | 1 (Conv2d 0) | 88 |
    """
    c = _validate(model, to, fraction, order, example_input, match, leaf_modules, channel_dim,
                  unit_kwargs)
    _materialise_lazy(c)
    _find_sites(c)
    _override_channel_dim(c)
    _select(c)
    _check_channels(c)
    _choose_strategy(c)
    _build_units(c)
    _swap(c)
    _clean_up_graph(c)
    assert c.result is not None
    if c.args is not None and c.chosen:
        _verify(c.result, c.args, c.units)
    attach_attribute(c.result, REPORT_ATTR, c.report)  # documented home of the report
    return c.result
