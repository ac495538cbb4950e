"""Experiment registry: names → :class:`~attnact.experiments.experiment.Experiment` objects.

The built-in experiments (:mod:`attnact.experiments.atac`, :mod:`~attnact.experiments.arelu_mnist`
and the other AReLU modules) register on first use, so importing the framework does not import
every experiment. The registry depends on :mod:`~attnact.experiments.experiment` only;
:func:`~attnact.experiments.reproduction.reproduce` looks experiments up here.
"""

from __future__ import annotations

import difflib
import importlib

from attnact.experiments.experiment import Experiment

__all__ = ["get_experiment", "list_experiments", "register_experiment"]

_REGISTRY: dict[str, Experiment] = {}
_BUILTIN_MODULES = (
    "attnact.experiments.atac",
    "attnact.experiments.arelu_mnist",
    "attnact.experiments.arelu_cifar",
    "attnact.experiments.arelu_transfer",
    "attnact.experiments.arelu_meta",
)


def register_experiment(experiment: Experiment) -> Experiment:
    """Register ``experiment`` under its ``name`` (kebab-case, unique)."""
    if not isinstance(experiment, Experiment):
        raise ValueError(f"register_experiment needs an Experiment instance, got {experiment!r}")
    _load_builtin()  # the built-in experiments come first in listings, and keep their names
    name = experiment.name
    if name in _REGISTRY and _REGISTRY[name] is not experiment:
        raise ValueError(f"experiment name {name!r} is registered twice")
    _REGISTRY[name] = experiment
    return experiment


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)  # registers on import (list order is set by rank)


def list_experiments() -> list[str]:
    """Registered experiment names: the built-in modules' in :data:`_BUILTIN_MODULES` order
    (whichever was imported first), each module's in registration order (the paper's), then
    the others in registration order."""
    _load_builtin()
    rank = {module: i for i, module in enumerate(_BUILTIN_MODULES)}
    order = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY, key=lambda n: (
        rank.get(type(_REGISTRY[n]).__module__, len(rank)), order[n]))


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; ``ValueError`` listing the names otherwise."""
    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown experiment {name!r}{hint} (allowed: {', '.join(_REGISTRY)})"
    )
