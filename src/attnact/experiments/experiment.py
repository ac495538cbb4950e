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

__all__ = ["Experiment", "ReportContext"]


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

    @abc.abstractmethod
    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        """The runs of ``preset`` with ``seeds`` seeds each (seed indices 0 … seeds − 1)."""

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
