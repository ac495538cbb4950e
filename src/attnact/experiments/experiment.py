"""A paper experiment: its grid of runs for a preset, and the report it makes of them.

``paper`` is the paper's datasets and recipe; ``quick`` a CPU-sized version on Fashion-MNIST.
Experiments register by name (:mod:`attnact.experiments.registry`) and
:func:`~attnact.experiments.reproduction.reproduce` runs one end to end; this module depends on
neither, so both can depend on it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from attnact.experiments.keys import RunSpec
from attnact.experiments.results import Results
from attnact.experiments.store import RunStore

__all__ = ["Experiment", "ReportContext", "TopUp", "matches"]

#: A precision top-up: (selector of grid coordinates, seeds those grid points get) pairs.
TopUp = Sequence[tuple[Mapping[str, Any], int]]


@dataclass(frozen=True)
class ReportContext:
    """What a report knows besides the runs: how they were produced."""

    experiment: str
    preset: str
    seeds: int
    command: str
    store: RunStore
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # this experiment's, this preset
    where: Mapping[str, Sequence[str]] = field(default_factory=dict)


class Experiment(abc.ABC):
    """A paper experiment: a grid of runs per preset and the report it makes.

    Subclasses set the class attributes and implement :meth:`grid` and :meth:`report`.
    """

    name: ClassVar[str]
    title: ClassVar[str]  # one line, e.g. "Table III: ATAC vs SEActivation, NiN, LocalSENet"
    source: ClassVar[str]  # where in which paper, e.g. "Dai et al., ICPR 2020, Table III"
    presets: ClassVar[tuple[str, ...]] = ("paper", "quick")
    default_seeds: ClassVar[Mapping[str, int]] = {"paper": 3, "quick": 2}
    # per preset, the half-width (points) its paired differences' 95% intervals are designed to
    # reach; the report header states it beside the achieved widths
    precision_targets: ClassVar[Mapping[str, float]] = {}
    # per preset, the precision top-up: grid points (a selector of coordinates, compared as
    # text) that the design gives more seeds than the preset's default, with their seed count
    topups: ClassVar[Mapping[str, TopUp]] = {}

    @abc.abstractmethod
    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        """The runs of ``preset`` with ``seeds`` seeds each (seed indices 0 … seeds − 1)."""

    def design(self, preset: str, seeds: int) -> list[RunSpec]:
        """:meth:`grid` with ``seeds`` seeds, plus the preset's precision top-up
        (:attr:`topups`): the extra seed indices of the grid points it names."""
        topup = self.topups.get(preset, ())
        specs = self.grid(preset, max([seeds, *(n for _, n in topup)]))  # built once
        for where, _ in topup:
            if not any(matches(s.coords, where) for s in specs):
                raise ValueError(f"experiment {self.name!r}: the {preset} top-up names "
                                 f"{dict(where)}, which matches none of its grid points")
        return [s for s in specs if int(s.coords["seed"]) < seeds or any(
            int(s.coords["seed"]) < n and matches(s.coords, where) for where, n in topup)]

    def topup_points(self, preset: str, specs: Sequence[RunSpec]) -> list[tuple[str, int]]:
        """The top-up's grid points that ``specs`` hold, as ``("act relu, lr 1e-5", seeds)``."""
        return [(", ".join(f"{k} {v}" for k, v in where.items()), n)
                for where, n in self.topups.get(preset, ())
                if any(matches(s.coords, where) for s in specs)]

    @abc.abstractmethod
    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        """Write the report files below ``out``; return them by name."""

    def settings(self, preset: str) -> str:
        """A paragraph on the preset's datasets and recipe, for the report header."""
        return ""

    def check_preset(self, preset: str) -> None:
        if preset not in self.presets:
            raise ValueError(
                f"experiment {self.name!r} has no preset {preset!r} (allowed: "
                f"{', '.join(self.presets)})"
            )

    def required_datasets(self, specs: Sequence[RunSpec]) -> list[str]:
        """Datasets the runs read (checked before training starts)."""
        return sorted({s.config.dataset for s in specs})


def matches(coords: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether a run's coordinates hold every item of ``where`` (compared as text, so ``b=1``
    matches the integer 1)."""
    return all(k in coords and str(coords[k]) == str(v) for k, v in where.items())
