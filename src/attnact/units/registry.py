"""Activation registry: canonical names -> constructors, with what each unit needs to be built.

Every unit module registers its classes with :func:`register_activation`. The registry records,
per name, whether the unit needs the channel count (``needs_channels``), so
:func:`create_act_layer` can pass ``channels`` to exactly those units and nobody has to catch a
``TypeError`` and retry.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "ActivationSpec",
    "activation_spec",
    "create_act_layer",
    "list_activations",
    "register_activation",
]


@dataclass(frozen=True)
class ActivationSpec:
    """What the registry knows about one activation unit.

    Attributes:
        name: canonical lower-case name (``"arelu"``).
        factory: class or function returning a fresh ``nn.Module``.
        formula: the unit's formula in plain text, for tables and ``attnact list``.
        source: the paper that defines it (author, venue, year).
        needs_channels: the constructor takes ``channels`` as its first argument (ATAC, xUnit,
            SEActivation); built without it, the unit infers it at its first forward (a lazy
            module, :mod:`attnact.units.layout`), so the class fits ``act_layer=`` slots.
        learnable: it has trainable parameters.
        changes_channels: the output has a different channel count than the input (Maxout).
        elementwise: output element i depends only on input element i (so ELSA can wrap it and
            the unit works on inputs of any shape).
        defaults: keyword arguments the factory is called with unless overridden (e.g. the
            ``use_global=True`` that turns ATAC into SEActivation).
    """

    name: str
    factory: Callable[..., nn.Module]
    formula: str
    source: str
    needs_channels: bool = False
    learnable: bool = False
    changes_channels: bool = False
    elementwise: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, channels: int | None = None, **kwargs: Any) -> nn.Module:
        """Build a fresh module; ``channels`` reaches the factory only if it needs it."""
        merged = {**self.defaults, **kwargs}
        self._check_arguments(merged)
        if self.needs_channels and channels is not None:
            return self.factory(channels, **merged)
        return self.factory(**merged)  # channel units without a count: lazy


    def _check_arguments(self, kwargs: Mapping[str, Any]) -> None:
        """A misspelt or foreign argument is an error naming it, not a TypeError from deep
        inside the constructor (or, for a factory taking ``**kwargs``, passed on as is)."""
        try:
            params = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):  # a builtin without a signature: let it check itself
            return
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        allowed = [n for n, p in params.items()
                   if n not in ("self", "channels") and p.kind is not p.VAR_POSITIONAL]
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            raise ValueError(
                f"activation {self.name!r} has no argument {', '.join(map(repr, unknown))}; "
                f"its arguments are {', '.join(allowed) or 'none'}"
            )


_REGISTRY: dict[str, ActivationSpec] = {}
_BY_CLASS: dict[type, ActivationSpec] = {}


# the decorated class or factory keeps its own type (a class stays a class for type checkers)
_FactoryT = TypeVar("_FactoryT", bound=Callable[..., nn.Module])


def register_activation(
    name: str,
    *,
    formula: str,
    source: str,
    needs_channels: bool = False,
    learnable: bool = False,
    changes_channels: bool = False,
    elementwise: bool = True,
    defaults: dict[str, Any] | None = None,
) -> Callable[[_FactoryT], _FactoryT]:
    """Class/function decorator that adds a unit to the registry under ``name``.

    The same class may be registered under several names with different ``defaults``; the
    first registration is the one :func:`create_act_layer` uses when given the class itself.
    """
    key = name.lower()

    def decorate(factory: _FactoryT) -> _FactoryT:
        if key in _REGISTRY:
            raise ValueError(f"activation name {key!r} is registered twice")
        spec = ActivationSpec(
            name=key,
            factory=factory,
            formula=formula,
            source=source,
            needs_channels=needs_channels,
            learnable=learnable,
            changes_channels=changes_channels,
            elementwise=elementwise,
            defaults=dict(defaults or {}),
        )
        _REGISTRY[key] = spec
        if isinstance(factory, type):
            _BY_CLASS.setdefault(factory, spec)
        return factory

    return decorate


def list_activations(*, include_elsa: bool = True) -> list[str]:
    """Canonical names of every registered activation, sorted (``elsa_*`` variants included).

    Examples:
        27 units, and an ``elsa_<name>`` variant of every one but AReLU (which is
        ``elsa_relu``'s closed form):

        >>> import attnact
        >>> names = attnact.list_activations(include_elsa=False)
        >>> len(names), "atac" in names, "arelu" in names, "xunit" in names
        (27, True, True, True)
        >>> len(attnact.list_activations()) == 2 * len(names) - 1
        True
    """
    names = sorted(_REGISTRY)
    if not include_elsa:
        names = [n for n in names if not n.startswith("elsa_")]
    return names


def activation_spec(name: str) -> ActivationSpec:
    """The :class:`ActivationSpec` registered under ``name`` (case-insensitive).

    Examples:
        >>> import attnact
        >>> spec = attnact.activation_spec("ATAC")
        >>> spec.name, spec.needs_channels, spec.elementwise
        ('atac', True, False)
        >>> spec.formula
        'x * sigmoid(BN(PWConv2(ReLU(BN(PWConv1(x))))))'
    """
    if not isinstance(name, str):
        raise ValueError(f"activation name must be a string, got {name!r}")
    key = name.lower().replace("-", "_")
    try:
        return _REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown activation {name!r}{hint} (see attnact.list_activations() for all "
            f"{len(_REGISTRY)} names)"
        ) from None


def _class_takes_channels(cls: type) -> bool:
    """For unregistered classes: a ``channels`` parameter in the signature is the declaration."""
    try:
        return "channels" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def create_act_layer(
    name_or_class: str | type[nn.Module] | Callable[..., nn.Module],
    channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a fresh activation module.

    Args:
        name_or_class: a registered name (``"atac"``, ``"elsa_swish"``), a registered class, or
            any ``nn.Module`` subclass (its constructor gets ``channels`` only if it declares a
            ``channels`` parameter).
        channels: channel count of the input; passed only to units that need it, so one call
            with ``channels`` works for every name. Without it, those units (ATAC,
            SEActivation, xUnit) infer it at their first forward.
        **kwargs: forwarded to the constructor (``inplace`` is accepted by every unit).

    Examples:
        ``channels`` reaches only the units that need it:

        >>> import attnact
        >>> attnact.create_act_layer("atac", channels=16).conv1
        Conv2d(16, 8, kernel_size=(1, 1), stride=(1, 1), bias=False)
        >>> attnact.create_act_layer("relu", channels=16)
        ReLU()
        >>> type(attnact.create_act_layer("elsa_swish", channels=16).activation).__name__
        'Swish'
    """
    if isinstance(name_or_class, str):
        return activation_spec(name_or_class).build(channels, **kwargs)
    if isinstance(name_or_class, type) and name_or_class in _BY_CLASS:
        return _BY_CLASS[name_or_class].build(channels, **kwargs)
    if isinstance(name_or_class, type) and issubclass(name_or_class, nn.Module):
        if _class_takes_channels(name_or_class):
            if channels is None:
                raise ValueError(f"{name_or_class.__name__} needs the channel count: pass channels")
            return name_or_class(channels=channels, **kwargs)
        return name_or_class(**kwargs)
    if callable(name_or_class):
        module = name_or_class(**kwargs)
        if not isinstance(module, nn.Module):
            raise ValueError(f"{name_or_class!r} did not return an nn.Module")
        return module
    raise ValueError(
        f"name_or_class must be a registered name, an nn.Module class or a factory, "
        f"got {type(name_or_class).__name__}"
    )
