"""Run keys and :class:`RunSpec`, the one run of a grid that a key names.

A key is a stable, human-readable name built from a run's grid coordinates
(``fashion_mnist-b2-atac-seed1``); it is also the run's directory below the store root. A key
names one configuration everywhere: the experiments of :mod:`attnact.experiments.atac` build
every run from one catalogue of units, so a store shared by several experiments trains, e.g.,
the ReLU baseline once for Table III, Fig. 6, 7 and 8 (the store refuses a key whose stored
configuration differs from the grid's). A spec's training function is a ``module:function``
string so that worker processes and Ray tasks can import it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from attnact.train.config import TrainConfig

__all__ = [
    "DEFAULT_FIT",
    "RunSpec",
    "check_key",
    "filter_specs",
    "fit_name",
    "resolve_fit",
    "run_key",
]

DEFAULT_FIT = "attnact.train.engine:fit"

# A key is one or more "/"-separated parts of letters, digits and . _ + = -, each starting with a
# letter or digit: safe as a path on every filesystem, in a shell and in a CSV cell.
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
_FIT_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_key(key: str) -> str:
    """``key`` if it is a valid run key, else ``ValueError`` saying what is allowed."""
    if not isinstance(key, str) or not key or not all(
        _KEY_PART.fullmatch(part) for part in key.split("/")
    ):
        raise ValueError(
            f"invalid run key {key!r}: use letters, digits and . _ + = - (each '/'-separated "
            f"part starting with a letter or digit)"
        )
    return key


def run_key(*parts: object) -> str:
    """Join grid coordinates into a run key: ``run_key("cifar10", "b2", "atac", "seed1")`` is
    ``"cifar10-b2-atac-seed1"``."""
    return check_key("-".join(str(p) for p in parts))


def _check_coord(name: str, value: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"grid coordinate names must be non-empty strings, got {name!r}")
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(
            f"grid coordinate {name}={value!r} must be a string, number, bool or None (it goes "
            f"to JSON and CSV)"
        )


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment's grid.

    Attributes:
        key: stable, human-readable identifier (see :func:`run_key`); also the run's directory
            below the store root. One key = one configuration, in every experiment.
        coords: grid coordinates (``{"dataset": ..., "b": 2, "unit": "atac", "seed": 1}``);
            ``seed`` is the seed index the reports pair runs on.
        config: what is trained; the runner sets ``out_dir`` and ``resume``.
        fit: ``"module:function"`` called as ``fit(config)``; it must leave a run directory
            whose ``summary.json`` says finished. A callable is accepted by the inline backend
            only (worker processes and Ray tasks import the function by name).
    """

    key: str
    coords: Mapping[str, Any]
    config: TrainConfig
    fit: str | Callable[[TrainConfig], Any] = DEFAULT_FIT

    def __post_init__(self) -> None:
        check_key(self.key)
        for name, value in self.coords.items():
            _check_coord(name, value)
        object.__setattr__(self, "coords", dict(self.coords))
        if not isinstance(self.config, TrainConfig):
            raise ValueError(f"RunSpec.config must be a TrainConfig, got {type(self.config)}")
        if isinstance(self.fit, str):
            if not _FIT_TARGET.fullmatch(self.fit):
                raise ValueError(
                    f"RunSpec.fit must be 'package.module:function', got {self.fit!r}"
                )
        elif not callable(self.fit):
            raise ValueError(f"RunSpec.fit must be a 'module:function' string or a callable, "
                             f"got {self.fit!r}")


def resolve_fit(fit: str | Callable[[TrainConfig], Any]) -> Callable[[TrainConfig], Any]:
    """The training function ``fit`` names (imported from its module), or ``fit`` itself."""
    if callable(fit):
        return fit
    module, _, name = fit.partition(":")
    func = getattr(importlib.import_module(module), name, None)
    if not callable(func):
        raise ValueError(f"fit target {fit!r}: {module} has no function {name!r}")
    return cast(Callable[[TrainConfig], Any], func)  # callable, checked above

def fit_name(fit: str | Callable[..., Any]) -> str:
    """``fit`` as the ``module:function`` text a run's spec.json records (a callable's
    qualified name, which need not be importable)."""
    if isinstance(fit, str):
        return fit
    return f"{getattr(fit, '__module__', '?')}:{getattr(fit, '__qualname__', repr(fit))}"


def _axis_values(specs: Sequence[RunSpec], axis: str) -> list[str]:
    return sorted({str(s.coords.get(axis)) for s in specs})


def _as_coordinate(axis: str, value: str, values: Sequence[str]) -> str:
    """``value`` as the coordinate's text; a value spelled as in the run keys (``b1``,
    ``seed0``: the axis name glued to the value) means that value (``b=b1`` is ``b=1``)."""
    if value not in values and value.startswith(axis) and value[len(axis):] in values:
        return value[len(axis):]
    return value


def filter_specs(
    specs: Sequence[RunSpec], where: Mapping[str, Sequence[str]] | None
) -> list[RunSpec]:
    """The runs whose coordinate ``axis`` (as text) is among ``where[axis]``, for every axis.

    A value may also be written as the run keys spell it (``--where b=b1``)."""
    if where is not None and not isinstance(where, Mapping):
        raise ValueError(f"where must map a coordinate to its values ({{'b': ['1', '2']}}), "
                         f"got {where!r}")
    if not where:
        return list(specs)
    axes = sorted({k for s in specs for k in s.coords})
    chosen: dict[str, set[str]] = {}
    for axis, allowed in where.items():
        if axis not in axes:
            # each axis with its values, so that a key part such as "b1" reads as b=1
            listing = "; ".join(f"{a}: {', '.join(_axis_values(specs, a))}" for a in axes)
            raise ValueError(
                f"--where {axis}=...: the grid has no coordinate {axis!r}; its coordinates and "
                f"their values are {listing} (e.g. --where {axes[0]}="
                f"{_axis_values(specs, axes[0])[0]})"
            )
        values = _axis_values(specs, axis)
        wanted = [_as_coordinate(axis, v, values) for v in allowed]
        unknown = [v for v, w in zip(allowed, wanted, strict=True) if w not in values]
        if unknown:
            raise ValueError(
                f"--where {axis}={','.join(allowed)}: no run has {axis} in {unknown} (values: "
                f"{', '.join(values)})"
            )
        chosen[axis] = set(wanted)
    return [s for s in specs if all(str(s.coords.get(a)) in vs for a, vs in chosen.items())]
