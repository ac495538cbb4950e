"""Activation plan: which unit a host network builds at each of its activation sites.

Every host in :mod:`attnact.models` builds each activation through one :class:`ActPlan`, which
knows ``act`` (the unit under study), ``base_act`` (the unit everywhere else, ReLU by default),
``act_fraction`` and ``order``. Sites are numbered 0 … n−1 in forward order; with
``order="last_first"`` the *last* round(act_fraction · n) sites get ``act`` — the protocol of the
ATAC paper's Fig. 6 (Dai et al., ICPR 2020, Sec. IV-B(3): ReLUs are replaced "starting with the
last layer and ending with the first layer"); ``"first_first"`` takes them from the start.
Halves round up; the rule is :func:`attnact.units.rewrite.select_sites`, the one
:func:`attnact.convert_activations` uses, so a host built with a fraction and a ReLU host
converted with the same fraction put the units at the same sites.

Knowing n in advance: each host counts its sites analytically (ResNet-v2: 6b + 1, ResNet-50-v1b:
2 per bottleneck of the last ``act_stages`` stages, MNIST-Conv: 3) and passes ``num_sites``;
:meth:`ActPlan.finish` checks that the host then built exactly that many, so a miscount fails
loudly instead of shifting the replaced sites.

Every site gets a fresh module (a module reused at several sites would share its parameters).
After building, :meth:`ActPlan.finish` records one :class:`ActSite` per site — its index, module
path, unit and channel counts — and stores the tuple on the model as ``model.act_sites``.

Channel-changing units (Maxout): a host that can widen the layer feeding the activation calls
:meth:`ActPlan.build_for_output`, which returns the unit and the input width that gives the
intended output width; :meth:`ActPlan.build` refuses such units.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from torch import nn

from attnact._checks import check_choice, check_fraction, check_int, check_kwargs
from attnact.units.registry import activation_spec, create_act_layer
from attnact.units.rewrite import ORDERS, select_sites

__all__ = ["ORDERS", "ActLike", "ActPlan", "ActSite"]


ActLike = str | type[nn.Module] | Callable[..., nn.Module]


@dataclass(frozen=True)
class ActSite:
    """One activation site of a host network.

    Attributes:
        index: position among the host's activation sites, in forward order (0-based).
        path: qualified module name in the model (``"layer2.0.act1"``), its state_dict prefix.
        unit: registered name (``"atac"``) or class name of the unit built there.
        in_channels: channels of the unit's input.
        out_channels: channels of its output (differs from ``in_channels`` only for Maxout).
        selected: True if the site got ``act``, False if it got ``base_act``.
    """

    index: int
    path: str
    unit: str
    in_channels: int
    out_channels: int
    selected: bool


def _label(act: ActLike) -> str:
    if isinstance(act, str):
        return activation_spec(act).name
    return getattr(act, "__name__", type(act).__name__)


def _check_act(name: str, act: object) -> ActLike:
    if isinstance(act, str):
        activation_spec(act)  # unknown names raise ValueError listing close matches
        return act
    if isinstance(act, nn.Module):
        raise ValueError(
            f"{name} must be a name, class or factory, not a module instance ({act!r}): one "
            f"instance at several sites would share its parameters"
        )
    if callable(act):
        return act  # an nn.Module class or a factory returning one
    raise ValueError(
        f"{name} must be a registered activation name (see attnact.list_activations()), an "
        f"nn.Module class or a factory; got {act!r}"
    )


def _factory(act: ActLike) -> Callable[..., Any]:
    return activation_spec(act).factory if isinstance(act, str) else act


def _accepts(act: ActLike, key: str) -> bool:
    """Whether the unit's constructor declares a parameter called ``key`` (not via **kwargs)."""
    try:
        params = inspect.signature(_factory(act)).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(key)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _static_changes_channels(act: ActLike) -> bool:
    """What is known before building: the registry's flag, or an ``out_channels`` method."""
    if isinstance(act, str):
        return activation_spec(act).changes_channels
    return isinstance(act, type) and callable(getattr(act, "out_channels", None))


class _ChannelChanging(Protocol):
    def out_channels(self, in_channels: int) -> int: ...


def _module_changes_channels(module: nn.Module) -> bool:
    # Maxout-like units expose out_channels(in_channels) as a method; convolutions have an int.
    return callable(getattr(module, "out_channels", None))


class ActPlan:
    """Builds the activation unit of each site of one host network, in forward order.

    Args:
        act: the unit under study: a registered name, an ``nn.Module`` class or a factory.
        num_sites: n, the number of activation sites the host will build (counted in advance).
        base_act: the unit at the sites that do not get ``act`` (default ``"relu"``).
        act_fraction: share of the n sites that get ``act``, in [0, 1]; round(f·n), halves up.
        order: ``"last_first"`` (ATAC paper Fig. 6: the last sites in forward order get ``act``)
            or ``"first_first"``.
        act_kwargs: keyword arguments for ``act`` (e.g. ``{"r": 4}`` for ATAC).
        base_kwargs: keyword arguments for ``base_act``.
        unit_defaults: host-level defaults offered to every unit whose constructor declares them
            by name, unless ``act_kwargs``/``base_kwargs`` set them (the host's ``r`` reaches
            ATAC and SEActivation this way, but not AReLU).
    """

    def __init__(
        self,
        act: ActLike = "relu",
        *,
        num_sites: int,
        base_act: ActLike = "relu",
        act_fraction: float = 1.0,
        order: str = "last_first",
        act_kwargs: Mapping[str, Any] | None = None,
        base_kwargs: Mapping[str, Any] | None = None,
        unit_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.act = _check_act("act", act)
        self.base_act = _check_act("base_act", base_act)
        self.num_sites = check_int("num_sites", num_sites, minimum=0)
        self.act_fraction = check_fraction("act_fraction", act_fraction)
        self.order = check_choice("order", order, ORDERS)
        self.act_kwargs = check_kwargs("act_kwargs", act_kwargs)
        self.base_kwargs = check_kwargs("base_kwargs", base_kwargs)
        for key, value in check_kwargs("unit_defaults", unit_defaults).items():
            if key not in self.act_kwargs and _accepts(self.act, key):
                self.act_kwargs[key] = value
            if key not in self.base_kwargs and _accepts(self.base_act, key):
                self.base_kwargs[key] = value
        self.selected_indices: frozenset[int] = frozenset(
            select_sites(self.num_sites, self.act_fraction, self.order))
        self._built: list[tuple[nn.Module, int, int, bool]] = []

    # ------------------------------------------------------------------ what the plan says

    @property
    def num_selected(self) -> int:
        """How many sites get ``act``."""
        return len(self.selected_indices)

    def is_selected(self, index: int) -> bool:
        """Whether site ``index`` gets ``act`` (else ``base_act``)."""
        return index in self.selected_indices

    @property
    def changes_channels(self) -> bool:
        """Whether a unit the plan will build changes the channel count (Maxout).

        Only units actually used count: ``act`` with act_fraction=0 does not.
        """
        uses_act = self.num_selected > 0
        uses_base = self.num_selected < self.num_sites
        return (uses_act and _static_changes_channels(self.act)) or (
            uses_base and _static_changes_channels(self.base_act)
        )

    def describe(self) -> str:
        """One line for error messages and reports."""
        return (
            f"act={_label(self.act)!r} at {self.num_selected}/{self.num_sites} sites "
            f"({self.order}), base_act={_label(self.base_act)!r} elsewhere"
        )

    def require_same_channels(self, host: str) -> None:
        """Raise a ValueError if the plan would build a channel-changing unit for ``host``."""
        if self.changes_channels:
            raise ValueError(
                f"{host} cannot host channel-changing activations ({self.describe()}): its "
                f"activations follow a BatchNorm of the residual stream, so there is no layer to "
                f"widen. Use mnist_conv for Maxout."
            )

    # ------------------------------------------------------------------ building

    def _create(self, selected: bool, channels: int) -> nn.Module:
        act, kwargs = (self.act, self.act_kwargs) if selected else (self.base_act, self.base_kwargs)
        module = create_act_layer(act, channels, **kwargs)
        if any(module is m for m, *_ in self._built):
            raise ValueError(
                f"the factory for {_label(act)!r} returned a module already used at another "
                f"site; every site needs a fresh module (shared parameters otherwise)"
            )
        return module

    def _claim(self) -> tuple[int, bool]:
        index = len(self._built)
        if index >= self.num_sites:
            raise RuntimeError(
                f"the host builds more activation sites than the {self.num_sites} it counted"
            )
        return index, self.is_selected(index)

    def build(self, channels: int) -> nn.Module:
        """A fresh unit for the next site, whose input has ``channels`` channels.

        Raises ValueError for a unit that changes the channel count.
        """
        check_int("channels", channels)
        index, selected = self._claim()
        module = self._create(selected, channels)
        if _module_changes_channels(module):
            act = self.act if selected else self.base_act
            raise ValueError(
                f"activation {_label(act)!r} changes the channel count, which this host cannot "
                f"absorb at site {index} ({channels} channels)"
            )
        self._built.append((module, channels, channels, selected))
        return module

    def build_for_output(self, out_channels: int) -> tuple[nn.Module, int]:
        """A fresh unit for the next site and the input width it needs to output ``out_channels``.

        For ordinary units the input width is ``out_channels``; for Maxout with pool size k it is
        k · out_channels, so the host widens the layer that feeds the unit by k.
        """
        check_int("out_channels", out_channels)
        index, selected = self._claim()
        module = self._create(selected, out_channels)
        in_channels = out_channels
        if _module_changes_channels(module):
            act = self.act if selected else self.base_act
            factor = getattr(module, "pool_size", None)
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
                raise ValueError(
                    f"activation {_label(act)!r} at site {index} changes the channel count but "
                    f"has no integer pool_size to widen the layer before it by"
                )
            in_channels = out_channels * factor
            mapped = cast(_ChannelChanging, module).out_channels(in_channels)
            if mapped != out_channels:
                raise ValueError(
                    f"activation {_label(act)!r} maps {in_channels} channels to "
                    f"{mapped}, not {out_channels}"
                )
        self._built.append((module, in_channels, out_channels, selected))
        return module, in_channels

    def finish(self, model: nn.Module) -> tuple[ActSite, ...]:
        """Check the count, find each unit's path in ``model``, set ``model.act_sites``."""
        if len(self._built) != self.num_sites:
            raise RuntimeError(
                f"the host counted {self.num_sites} activation sites but built {len(self._built)}"
            )
        paths = {id(m): name for name, m in model.named_modules()}
        sites = []
        for index, (module, cin, cout, selected) in enumerate(self._built):
            if id(module) not in paths:
                raise RuntimeError(f"activation site {index} is not registered in the model")
            act = self.act if selected else self.base_act
            sites.append(
                ActSite(index, paths[id(module)], _label(act), cin, cout, selected)
            )
        result = tuple(sites)
        # any attribute may be set on a module; torch types __setattr__ for tensors and modules
        model.act_sites = result  # type: ignore[assignment]
        return result
