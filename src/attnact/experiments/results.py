"""The runs of a grid as the store holds them: what reports read, and the ``results.csv`` index.

The index has one row per run key, whatever its state, and is rebuilt from the run directories
every time, never appended to, so a run appears in it exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnact.experiments.keys import RunSpec
from attnact.experiments.store import RunRecord, RunStore
from attnact.fileio import atomic_write_text
from attnact.report.tables import to_csv

__all__ = ["Results"]


class Results:
    """The runs of a grid as the store holds them; reports read finished runs from here."""

    def __init__(self, specs: Sequence[RunSpec], store: RunStore) -> None:
        self.specs = list(specs)
        self.store = store
        self.records: dict[str, RunRecord] = {}
        for spec in self.specs:
            record = store.record(spec.key, spec.coords)
            if record is not None:
                self.records[spec.key] = record

    @property
    def missing(self) -> list[RunSpec]:
        """Runs of the grid that have not finished."""
        return [s for s in self.specs if s.key not in self.records]

    def select(self, **where: Any) -> list[RunRecord]:
        """Finished runs whose coordinates equal every ``where`` item, in grid order."""
        out = []
        for spec in self.specs:
            record = self.records.get(spec.key)
            if record is not None and all(spec.coords.get(k) == v for k, v in where.items()):
                out.append(record)
        return out

    def values(
        self,
        metric: Callable[[RunRecord], float] = lambda r: r.final_top1,
        *,
        by: str = "seed",
        **where: Any,
    ) -> dict[Any, float]:
        """``{run.coords[by]: metric(run)}`` over the selected runs (by seed: pairable)."""
        out: dict[Any, float] = {}
        for record in self.select(**where):
            k = record.coords.get(by)
            if k in out:
                raise ValueError(
                    f"two runs match {where} with {by}={k!r}: narrow the selection (coords: "
                    f"{record.coords})"
                )
            out[k] = metric(record)
        return out

    def index_rows(self) -> list[dict[str, Any]]:
        """One row per run of the grid (finished or not), built from the run directories."""
        rows = []
        for spec in self.specs:
            record = self.records.get(spec.key)
            status = "finished" if record is not None else self.store.status(spec.key)
            row: dict[str, Any] = {"key": spec.key, "status": status, **spec.coords}
            if record is not None:
                row.update(
                    epochs=len(record.metrics),
                    final_top1=_metric_or_none(record, "test_top1", "final"),
                    first_epoch_top1=_metric_or_none(record, "test_top1", "first"),
                    best_top1=_metric_or_none(record, "test_top1", "best"),
                    final_test_loss=_metric_or_none(record, "test_loss", "final"),
                    params=record.summary.get("params"),
                    wall_time_s=round(record.wall_time_s, 2),
                    detail="",
                )
            else:
                row["detail"] = self.store.detail(spec.key)
            row["run_dir"] = str(self.store.run_dir(spec.key))
            rows.append(row)
        return rows

    def write_index(self, path: str | os.PathLike[str]) -> Path:
        """``results.csv``: :meth:`index_rows`, rewritten atomically (never appended to)."""
        rows = self.index_rows()
        first = ["key", "status"]
        coords: list[str] = []
        for spec in self.specs:
            coords += [c for c in spec.coords if c not in coords]
        rest = ["epochs", "final_top1", "first_epoch_top1", "best_top1", "final_test_loss",
                "params", "wall_time_s", "detail", "run_dir"]
        return atomic_write_text(path, to_csv(rows, [*first, *coords, *rest]))


def _metric_or_none(record: RunRecord, name: str, at: str) -> float | None:
    try:
        return record.metric(name, at)
    except ValueError:  # the index lists what there is; a missing column is an empty cell
        return None
