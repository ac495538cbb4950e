"""Experiments as declared grids of training runs, a run store that survives interruption, and a
runner with K worker processes (or Ray on a cluster).

Issue #4: users come to reproduce and extend the papers' comparisons, and every comparison is
reported with its uncertainty over seeds. The pieces, from the bottom up:

* :class:`RunSpec` — one run of a grid: a stable, human-readable key built from its grid
  coordinates (``fashion_mnist-b2-atac-seed1``), the coordinates themselves, the
  :class:`~attnact.train.config.TrainConfig` it trains, and the training function
  (``"attnact.train.engine:fit"``; a ``module:function`` string so that worker processes and Ray
  tasks can import it).
* :class:`RunStore` — one directory per run, keyed by the run key: the engine's own run
  directory (``config.yaml``, ``metrics.csv``, ``checkpoint.pt``, ``summary.json``) plus::

      <root>/<key>/spec.json    key, grid coordinates, fit target (written before training)
      <root>/<key>/error.json   why the last attempt failed before the engine wrote a summary
      <root>/<key>/.lock        held (flock) by the process training the run
      <root>/sweeps.json        one entry per sweep: experiment, command, wall time, counts

  A run is finished when its ``summary.json`` says ``"status": "finished"``. The engine writes
  that file atomically (temp file, fsync, rename) after the last epoch's checkpoint and metrics,
  so a run killed at any instant is either finished — with all its files — or not, and is then
  resumed from its last checkpoint. Re-running a sweep skips finished runs and resumes the rest.
  Older versions could finish a run with metrics.csv an epoch behind its checkpoint: a finished
  run whose metrics.csv disagrees with its summary has the CSV rebuilt from the checkpoint, or,
  when that is not possible, counts as unfinished (and is resumed or retrained).
* :func:`run_grid` — trains every unfinished run of a grid: in this process (``"inline"``), in
  K spawned worker processes (``"process"``: each with ``cores // K`` intra-op threads, a failing
  run is reported and the sweep goes on), or as Ray tasks (``"ray"``, optional). A run's
  directory is locked while it trains, so two sweeps sharing a store never train one run twice.
* :class:`Results` — the finished runs of a grid, read back from the store; its index
  (``results.csv``: one row per run key, whatever its state) is rebuilt from the run
  directories every time, never appended to, so a run appears in it exactly once.
* :class:`Experiment` — a paper experiment: its grid for a preset (``paper``: the paper's
  datasets and recipe; ``quick``: a CPU-sized version on Fashion-MNIST) and its report.
  :func:`reproduce` runs one end to end.

Sharing runs between experiments: a key names one configuration everywhere (the experiments of
:mod:`attnact.experiments.atac` build every run from one catalogue of units), so a store shared by
several experiments trains, e.g., the ReLU baseline once for Table III, Fig. 6, 7 and 8. A key
whose stored configuration differs from the grid's is an error, never silently reused.
"""

from __future__ import annotations

import abc
import contextlib
import csv
import importlib
import json
import logging
import math
import multiprocessing
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import yaml

from attnact._checks import check_positive_int
from attnact.fileio import atomic_write_json, atomic_write_text, exclusive_lock
from attnact.report.tables import to_csv
from attnact.train.config import PRESETS, RUN_LOCAL_FIELDS, TrainConfig, config_identity

__all__ = [
    "BACKENDS",
    "DEFAULT_FIT",
    "RUN_LOCAL_FIELDS",
    "Experiment",
    "ReportContext",
    "ReproduceResult",
    "Results",
    "RunOutcome",
    "RunRecord",
    "RunSpec",
    "RunStore",
    "StoreConflictError",
    "SweepResult",
    "check_key",
    "default_threads",
    "execute_run",
    "reproduce",
    "run_grid",
    "run_key",
    "train_command",
]

logger = logging.getLogger("attnact.experiments")

DEFAULT_FIT = "attnact.train.engine:fit"
BACKENDS = ("process", "inline", "ray")

#: TrainConfig fields that do not change what a run computes; they may differ between a grid's
#: spec and the run directory it finds (a moved dataset, another device, no progress bars).
# A key is one or more "/"-separated parts of letters, digits and . _ + = -, each starting with a
# letter or digit: safe as a path on every filesystem, in a shell and in a CSV cell.
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
_FIT_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class StoreConflictError(ValueError):
    """A run directory holds a different configuration than the grid's run of the same key."""


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


def _resolve_fit(fit: str | Callable[[TrainConfig], Any]) -> Callable[[TrainConfig], Any]:
    if callable(fit):
        return fit
    module, _, name = fit.partition(":")
    func = getattr(importlib.import_module(module), name, None)
    if not callable(func):
        raise ValueError(f"fit target {fit!r}: {module} has no function {name!r}")
    return func


# ====================================================================== the store
@dataclass(frozen=True)
class RunRecord:
    """A finished run read back from its directory. Accuracies are percentages, as the engine's
    ``metrics.csv`` and ``summary.json`` record them."""

    key: str
    coords: dict[str, Any]
    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, float]]  # metrics.csv, one row per epoch

    def metric(self, name: str = "test_top1", at: str = "final") -> float:
        """``name`` at the ``"final"`` epoch, the ``"first"`` epoch or its ``"best"`` value."""
        if at not in ("final", "first", "best"):
            raise ValueError(f"at must be 'final', 'first' or 'best', got {at!r}")
        column = [r[name] for r in self.metrics if name in r]
        if not column:
            # No metrics.csv (a run directory made by other tools): the engine's summary has
            # the final and best epochs too.
            row = self.summary.get("best" if at == "best" else "final") or {}
            if at != "first" and isinstance(row.get(name), (int, float)):
                return float(row[name])
            raise ValueError(f"run {self.key}: metrics.csv has no column {name!r}")
        if at == "first":
            return column[0]
        if at == "best":
            return max(column)
        return column[-1]

    @property
    def final_top1(self) -> float:
        return self.metric("test_top1", "final")

    @property
    def wall_time_s(self) -> float:
        value = self.summary.get("wall_time_s")
        if isinstance(value, (int, float)):
            return float(value)
        return math.fsum(r.get("epoch_time_s", 0.0) for r in self.metrics)


def _epochs_agree(rows: Sequence[Mapping[str, Any]], completed: int) -> bool:
    """Whether metric rows end at epoch ``completed`` without repeating or going back.

    Not ``len(rows) == completed``: MAML runs write a row per evaluation, their ``epoch`` is the
    iteration count.
    """
    epochs = [row.get("epoch") for row in rows]
    if not epochs:
        return completed == 0
    return epochs[-1] == completed and all(a < b for a, b in pairwise(epochs))


def _read_metrics(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, float] = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v) if v not in ("", None) else math.nan
            except ValueError:
                continue  # a non-numeric column is not a metric
        out.append(parsed)
    return out


class RunStore:
    """Run directories below ``root``, one per run key (see the module docstring)."""

    SPEC = "spec.json"
    SUMMARY = "summary.json"
    ERROR = "error.json"
    LOCK = ".lock"
    SWEEPS = "sweeps.json"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._verified: dict[tuple[str, int, int], tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def run_dir(self, key: str) -> Path:
        return self.root / check_key(key)

    # ------------------------------------------------------------------ state
    def summary(self, key: str) -> dict[str, Any] | None:
        path = self.run_dir(key) / self.SUMMARY
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as err:
            # Written atomically by the engine, so this is not a half-written file: somebody
            # edited it. Refuse rather than guess whether the run finished.
            raise ValueError(f"{path} is not valid JSON ({err}); delete the run directory to "
                             f"retrain it") from err
        return data if isinstance(data, dict) else None

    def status(self, key: str) -> str:
        """``finished``, ``unfinished`` (started, interrupted or running; or finished with a
        metrics.csv that disagrees with its summary and checkpoint), ``corrupted`` (finished,
        but its checkpoint fails verification: refused, never reused or overwritten), ``failed``
        (the last attempt failed or diverged) or ``pending`` (never started)."""
        summary = self.summary(key)
        if summary is not None:
            engine = summary.get("status")
            if engine == "finished":
                problem = self._checkpoint_problem(key, summary)
                if problem is not None:
                    kind, message = problem
                    logger.warning("run %s is not reused: %s", key, message)
                    # corrupted: refused, never trained over, its files left for the user;
                    # replaced: a valid checkpoint of another state, which the run resumes from.
                    return "corrupted" if kind == "corrupted" else "unfinished"
                # One whose metrics.csv cannot be made whole is resumed or retrained.
                whole = self._finished_metrics(key, summary) is not None
                return "finished" if whole else "unfinished"
            if engine in ("failed", "diverged"):
                return "failed"
            return "unfinished"
        run_dir = self.run_dir(key)
        if (run_dir / self.ERROR).is_file():
            return "failed"
        if (run_dir / "checkpoint.pt").is_file() or (run_dir / "config.yaml").is_file():
            return "unfinished"
        return "pending"

    def is_finished(self, key: str) -> bool:
        return self.status(key) == "finished"

    def _checkpoint_problem(
        self, key: str, summary: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """Why a finished run's checkpoint cannot be reused, as (``"corrupted"`` or
        ``"replaced"``, message); None if it can be, or if the run keeps none. Verified once per
        file version: hashing reads the whole file."""
        from attnact.train.checkpoint import CheckpointError, checkpoint_digest

        path = self.run_dir(key) / "checkpoint.pt"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        version = (str(path), stat.st_size, stat.st_mtime_ns)
        if version not in self._verified:
            try:
                self._verified[version] = ("ok", checkpoint_digest(path, allow_legacy=True))
            except CheckpointError as err:
                self._verified[version] = ("bad", str(err))
        verdict, detail = self._verified[version]
        if verdict == "bad":
            return "corrupted", detail
        recorded = summary.get("checkpoint_sha256")
        if recorded is not None and recorded != detail:
            return "replaced", (
                f"{path} is a valid checkpoint but not the one its summary.json records "
                f"(sha256 {detail[:12]}… not {str(recorded)[:12]}…): the run resumes from it")
        return None

    def detail(self, key: str) -> str:
        """The engine's status and error, or the runner's error, in one line ('' if none)."""
        summary = self.summary(key)
        if summary is not None and summary.get("status") != "finished":
            err = summary.get("error")
            text = err.get("message", "") if isinstance(err, dict) else str(err or "")
            return f"{summary.get('status')}: {text}".strip(": ")
        path = self.run_dir(key) / self.ERROR
        if summary is None and path.is_file():
            data = json.loads(path.read_text())
            return f"failed: {data.get('error', '')}"
        return ""

    def record(self, key: str, coords: Mapping[str, Any] | None = None) -> RunRecord | None:
        """The finished run ``key`` (coordinates from ``coords`` or its spec.json), else None."""
        summary = self.summary(key)
        if summary is None or summary.get("status") != "finished":
            return None
        if self._checkpoint_problem(key, summary) is not None:
            return None
        metrics = self._finished_metrics(key, summary)
        if metrics is None:
            return None
        run_dir = self.run_dir(key)
        if coords is None:
            spec_path = run_dir / self.SPEC
            coords = json.loads(spec_path.read_text()).get("coords", {}) if (
                spec_path.is_file()
            ) else {}
        return RunRecord(key, dict(coords), run_dir, summary, metrics)

    def _finished_metrics(
        self, key: str, summary: Mapping[str, Any]
    ) -> list[dict[str, float]] | None:
        """The metrics.csv rows of the finished run ``key``; None if they cannot be trusted.

        A summary's ``epochs_completed`` must be the CSV's last epoch. Runs of older versions
        could be finished with the CSV an epoch behind the checkpoint (killed between the two
        writes of the last epoch); such a CSV is rebuilt from the checkpoint's history.
        """
        path = self.run_dir(key) / "metrics.csv"
        metrics = _read_metrics(path) if path.is_file() else []
        completed = summary.get("epochs_completed")
        if not isinstance(completed, int) or _epochs_agree(metrics, completed):
            return metrics  # nothing to check against (not the engine's summary), or it agrees
        found = f"its last epoch is {metrics[-1].get('epoch', math.nan):g}" if metrics else (
            "it has no rows"
        )
        if not path.is_file():
            found = "it is missing"
        problem = (f"run {key}: summary.json says finished after epoch {completed} but "
                   f"metrics.csv disagrees ({found})")
        # Lazy: reading the store must not need torch unless a run has to be repaired.
        from attnact.train.checkpoint import load_checkpoint
        from attnact.train.engine import CHECKPOINT_FORMAT, CHECKPOINT_NAME, write_metrics_csv

        ckpt_path = self.run_dir(key) / CHECKPOINT_NAME
        try:
            ckpt = load_checkpoint(ckpt_path)
        except FileNotFoundError:
            reason = f"there is no {CHECKPOINT_NAME} to rebuild it from"
        except Exception as err:  # any unreadable checkpoint: the run cannot be repaired
            reason = f"{ckpt_path} cannot be read ({type(err).__name__}: {err})"
        else:
            history = ckpt.get("history")
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                # Another writer's columns (MAML): its own resume rewrites the CSV.
                reason = f"{CHECKPOINT_NAME} is not the training engine's"
            elif not isinstance(history, list) or not _epochs_agree(history, completed):
                reason = f"{CHECKPOINT_NAME} disagrees too (epoch {ckpt.get('epoch')})"
            else:
                write_metrics_csv(path, history)
                logger.warning("%s; rebuilt it from %s", problem, ckpt_path)
                return _read_metrics(path)
        logger.warning("%s, and %s: the run counts as unfinished", problem, reason)
        return None

    def set_aside(self, key: str) -> Path:
        """Move run ``key``'s directory to ``<root>/.set-aside/<key>.<time>`` (nothing is
        deleted) so that the run counts as pending and trains anew; returns the new place."""
        source = self.run_dir(key)
        target = self.root / ".set-aside" / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}"
        n = 1
        while target.exists():
            target = target.with_name(f"{target.name}-{n}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.lock(key) as acquired:
            if not acquired:
                raise ValueError(f"run {key} is being trained by another process: not moved")
            os.replace(source, target)
        return target

    def keys(self) -> list[str]:
        """Keys of every run directory in the store (those with a spec.json), sorted."""
        if not self.root.is_dir():
            return []
        keys = (p.parent.relative_to(self.root) for p in self.root.rglob(self.SPEC))
        # hidden folders are not runs: .set-aside/ keeps the runs moved out of the grid
        return sorted(k.as_posix() for k in keys if not any(
            part.startswith(".") for part in k.parts))

    # ------------------------------------------------------------------ writing
    def check_config(self, spec: RunSpec) -> None:
        """Raise :class:`StoreConflictError` if ``spec.key``'s directory holds another config."""
        run_dir = self.run_dir(spec.key)
        path = run_dir / "config.yaml"
        if not path.is_file():
            return
        try:
            stored = config_identity(yaml.safe_load(path.read_text()) or {})
        except (ValueError, yaml.YAMLError) as err:
            raise StoreConflictError(
                f"run {spec.key}: cannot read {path} ({err}); delete {run_dir} to retrain it"
            ) from err
        wanted = config_identity(spec.config)
        diff = {k: (stored.get(k), wanted[k]) for k in wanted if stored.get(k) != wanted[k]}
        if diff:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise StoreConflictError(
                f"run {spec.key} in {run_dir} was trained with a different config ({details}); "
                f"it is not reused. Delete {run_dir} to retrain it, or use another store "
                f"directory (--runs)."
            )

    def prepare(self, spec: RunSpec) -> Path:
        """Check ``spec`` against its directory and record its coordinates (spec.json)."""
        self.check_config(spec)
        run_dir = self.run_dir(spec.key)
        payload = {
            "key": spec.key,
            "coords": dict(spec.coords),
            "fit": spec.fit if isinstance(spec.fit, str) else _callable_name(spec.fit),
        }
        path = run_dir / self.SPEC
        if not path.is_file() or json.loads(path.read_text()) != payload:
            atomic_write_json(path, payload)
        return run_dir

    def write_error(self, key: str, error: BaseException) -> None:
        atomic_write_json(
            self.run_dir(key) / self.ERROR,
            {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exception(type(error), error, error.__traceback__)[
                    -8:
                ],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def clear_error(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir(key) / self.ERROR).unlink()

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[bool]:
        """Hold ``<run dir>/.lock`` while a sweep trains the run; yields False if another
        process holds it (see :func:`attnact.fileio.exclusive_lock`)."""
        with exclusive_lock(self.run_dir(key) / self.LOCK) as acquired:
            yield acquired

    # ------------------------------------------------------------------ sweep log
    def sweeps(self) -> list[dict[str, Any]]:
        path = self.root / self.SWEEPS
        if not path.is_file():
            return []
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else []

    def log_sweep(self, entry: Mapping[str, Any]) -> None:
        """Add one sweep's entry to ``sweeps.json`` (rewritten atomically, under a lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._file_lock(self.root / ".sweeps.lock"):
            atomic_write_json(self.root / self.SWEEPS, [*self.sweeps(), dict(entry)])

    @staticmethod
    @contextlib.contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _callable_name(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"


# ====================================================================== results
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


# ====================================================================== running
@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in a sweep: ``finished`` (trained now), ``skipped`` (finished
    before), ``failed`` (error says why) or ``busy`` (another process was training it)."""

    key: str
    status: str
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    outcomes: list[RunOutcome]
    elapsed_s: float

    def _with(self, status: str) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def trained(self) -> list[RunOutcome]:
        return self._with("finished")

    @property
    def skipped(self) -> list[RunOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[RunOutcome]:
        return self._with("failed")

    @property
    def busy(self) -> list[RunOutcome]:
        return self._with("busy")

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy


def available_cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Intra-op threads per worker: the cores shared out, at least one.

    More threads than cores makes OpenMP threads of different workers spin-wait on each other
    (see tests/conftest.py: a step measured 10x slower under that contention).
    """
    return max(1, available_cores() // max(1, workers))


def _dist_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def execute_run(
    spec: RunSpec,
    store_root: str | os.PathLike[str],
    *,
    threads: int | None = None,
    verbose: bool = False,
    progress: bool | None = None,
) -> RunOutcome:
    """Train one run of the store (in whatever process calls this) and say how it went.

    Skips a finished run; resumes an unfinished one from its checkpoint; returns ``failed``
    instead of raising when training raises (the engine's summary or ``error.json`` keeps the
    reason), so one bad run does not end a sweep. ``KeyboardInterrupt`` propagates.
    ``progress`` overrides the config's progress bars (a run-local setting).
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    store = RunStore(store_root)
    with store.lock(spec.key) as acquired:
        if not acquired:
            return RunOutcome(spec.key, "busy", "another process is training this run")
        if store.is_finished(spec.key):
            return RunOutcome(spec.key, "skipped")
        resume = (store.run_dir(spec.key) / "checkpoint.pt").is_file()
        if verbose:
            _say(f"[run] {spec.key}: {'resuming' if resume else 'training'}")
        return _train(spec, store, resume=resume, progress=progress, main=True)


def _train(
    spec: RunSpec, store: RunStore, *, resume: bool, progress: bool | None, main: bool
) -> RunOutcome:
    """Call the run's fit function (the caller holds the lock); ``main``: this process owns
    the files (rank 0 under torchrun)."""
    run_dir = store.run_dir(spec.key)
    t0 = time.perf_counter()
    try:
        store.check_config(spec)
        if main:
            store.clear_error(spec.key)
        config = spec.config.replace(out_dir=str(run_dir), resume=resume)
        if progress is not None:
            config = config.replace(progress=progress)
        _resolve_fit(spec.fit)(config)
    except Exception as err:  # reported, not raised: the sweep goes on with the others
        if main and store.summary(spec.key) is None:
            store.write_error(spec.key, err)
        return RunOutcome(
            spec.key, "failed", f"{type(err).__name__}: {err}", time.perf_counter() - t0
        )
    seconds = time.perf_counter() - t0
    if main and not store.is_finished(spec.key):
        return RunOutcome(
            spec.key, "failed",
            f"fit returned but {run_dir / store.SUMMARY} does not say finished "
            f"({store.status(spec.key)})",
            seconds,
        )
    return RunOutcome(spec.key, "finished", None, seconds)


def run_grid(
    specs: Sequence[RunSpec],
    store: RunStore,
    *,
    workers: int = 1,
    backend: str = "process",
    threads: int | None = None,
    verbose: bool = True,
    log: Callable[[str], None] | None = None,
    tag: str = "sweep",
) -> SweepResult:
    """Train every unfinished run of ``specs`` into ``store``.

    Args:
        specs: the grid (keys must be unique).
        store: where the runs live; finished runs are skipped, unfinished ones resumed.
        workers: runs trained at the same time (processes, or Ray tasks in flight).
        backend: ``"process"`` (spawned worker processes), ``"inline"`` (this process, one
            run after the other; needed under torchrun and for callables as ``fit``) or
            ``"ray"`` (tasks on a Ray cluster; the store must be on a shared filesystem).
        threads: intra-op threads per run; default ``cores // workers`` for processes, this
            process's setting inline, 1 CPU per Ray task.
        verbose: worker processes print a line when a run starts (inline: through ``log``);
            False also turns off the runs' progress bars, as do several workers (their bars
            would overwrite each other).
        log: progress messages (default: one line each on stdout; a no-op in tests).
        tag: prefix of the messages.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    check_positive_int("workers", workers)
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    keys = [s.key for s in specs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"the grid has duplicate run keys: {', '.join(dupes)}")
    if backend != "inline":
        named = [s.key for s in specs if not isinstance(s.fit, str)]
        if named:
            raise ValueError(
                f"backend {backend!r} imports the training function by name in another process: "
                f"give RunSpec.fit as 'module:function' (runs {', '.join(named[:3])}), or use "
                f"backend='inline'"
            )
    rank, world = _dist_rank()
    if world > 1 and backend != "inline":
        raise ValueError(
            f"under torchrun (WORLD_SIZE={world}) every rank trains each run together: use "
            f"backend='inline' (--backend inline), not {backend!r}"
        )
    main = rank == 0
    say: Callable[[str], None] = (log or _say) if main else (lambda _msg: None)
    progress = None if verbose and (workers == 1 or backend == "inline") else False

    t0 = time.perf_counter()
    dist_env = None
    if world > 1:
        # One process group for the whole sweep, made here: the engine reuses it for every
        # run (creating and destroying a group per run in one torchrun session is fragile —
        # the rendezvous store keeps the old group's keys).
        from attnact.train.distributed import setup_distributed

        dist_env = setup_distributed(specs[0].config.device if specs else "auto")
    clean = False
    try:
        outcomes = _sweep(specs, store, workers, backend, threads, verbose, progress, main,
                          world, say, tag)
        clean = True
    finally:
        if dist_env is not None:
            from attnact.train.distributed import teardown_distributed

            teardown_distributed(dist_env, clean=clean)
    return SweepResult([outcomes[s.key] for s in specs], time.perf_counter() - t0)


def _sweep(
    specs: Sequence[RunSpec],
    store: RunStore,
    workers: int,
    backend: str,
    threads: int | None,
    verbose: bool,
    progress: bool | None,
    main: bool,
    world: int,
    say: Callable[[str], None],
    tag: str,
) -> dict[str, RunOutcome]:
    for spec in specs:  # every conflict before anything trains
        if main:
            store.prepare(spec)
        else:
            store.check_config(spec)
    finished = {s.key for s in specs if store.is_finished(s.key)} if main else set()
    if world > 1:
        finished = _broadcast(finished)  # rank 0 decides, so every rank trains the same runs
    outcomes: dict[str, RunOutcome] = {}
    todo = []
    for spec in specs:
        if spec.key in finished:
            outcomes[spec.key] = RunOutcome(spec.key, "skipped")
            say(f"[{tag}] {spec.key}: finished earlier, kept")
        else:
            todo.append(spec)
    total = len(todo)
    if total:
        say(f"[{tag}] {total} of {len(specs)} runs to train ({backend}, {workers} worker(s))")

    done = 0

    def report(outcome: RunOutcome) -> None:
        nonlocal done
        done += 1
        outcomes[outcome.key] = outcome
        what = {"finished": f"finished in {outcome.seconds:.0f} s",
                "skipped": "finished meanwhile (another sweep), kept",
                "busy": "being trained by another process, left to it",
                "failed": f"FAILED: {outcome.error}"}[outcome.status]
        say(f"[{tag}] {outcome.key}: {what} ({done}/{total})")

    if world > 1:
        _run_torchrun(todo, store, progress, main, report, say, tag)
    elif backend == "inline" or not todo:
        for spec in todo:
            resume = (store.run_dir(spec.key) / "checkpoint.pt").is_file()
            say(f"[{tag}] {spec.key}: {'resuming' if resume else 'training'}")
            report(_inline(spec, store, threads, progress))
    elif backend == "process":
        _run_processes(todo, store, workers, threads or default_threads(workers), verbose,
                       progress, report)
    else:
        _run_ray(todo, store, workers, threads, verbose, progress, report)
    return outcomes


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _run_torchrun(
    todo: list[RunSpec],
    store: RunStore,
    progress: bool | None,
    main: bool,
    report: Callable[[RunOutcome], None],
    say: Callable[[str], None],
    tag: str,
) -> None:
    """Every rank trains each run together (the engine's DDP); rank 0 holds the run's lock,
    decides whether to train it, and owns its files."""
    for spec in todo:
        lock = store.lock(spec.key) if main else contextlib.nullcontext(True)
        with lock as acquired:
            decision: tuple[str, bool] = ("train", False)
            if main:
                if not acquired:
                    decision = ("busy", False)
                elif store.is_finished(spec.key):
                    decision = ("skipped", False)
                else:
                    decision = ("train", (store.run_dir(spec.key) / "checkpoint.pt").is_file())
            what, resume = _broadcast(decision)
            if what == "busy":
                report(RunOutcome(spec.key, "busy", "another process is training this run"))
                continue
            if what == "skipped":
                report(RunOutcome(spec.key, "skipped"))
                continue
            say(f"[{tag}] {spec.key}: {'resuming' if resume else 'training'}")
            report(_train(spec, store, resume=resume, progress=progress, main=main))


def _say(message: str) -> None:
    # One write per line: worker processes share the terminal, and print() writes the text and
    # the newline separately, which interleaves lines of different processes.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _inline(
    spec: RunSpec, store: RunStore, threads: int | None, progress: bool | None
) -> RunOutcome:
    import torch

    before = torch.get_num_threads()
    try:
        return execute_run(spec, store.root, threads=threads, progress=progress)
    finally:
        torch.set_num_threads(before)


def _run_processes(
    todo: list[RunSpec],
    store: RunStore,
    workers: int,
    threads: int,
    verbose: bool,
    progress: bool | None,
    report: Callable[[RunOutcome], None],
) -> None:
    # spawn, not fork: a forked child inherits the parent's OpenMP thread pool and locks (torch
    # documents fork after the first parallel op as unsafe), and behaves differently on macOS.
    ctx = multiprocessing.get_context("spawn")
    broken: list[RunSpec] = []
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx)
    try:
        futures: dict[Future[RunOutcome], RunSpec] = {
            pool.submit(execute_run, spec, str(store.root), threads=threads, verbose=verbose,
                        progress=progress): spec
            for spec in todo
        }
        for fut in _as_completed(futures):
            spec = futures[fut]
            try:
                report(fut.result())
            except BrokenProcessPool:
                broken.append(spec)
            except Exception as err:  # pickling errors and the like: this run only
                report(RunOutcome(spec.key, "failed", f"{type(err).__name__}: {err}"))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if broken:
        _quarantine(broken, store, workers, threads, verbose, progress, report, ctx)


def _as_completed(futures: Mapping[Future[RunOutcome], RunSpec]) -> Iterator[Future[RunOutcome]]:
    remaining = set(futures)
    while remaining:
        finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
        yield from finished


def _quarantine(
    specs: list[RunSpec],
    store: RunStore,
    workers: int,
    threads: int,
    verbose: bool,
    progress: bool | None,
    report: Callable[[RunOutcome], None],
    ctx: Any,
) -> None:
    """Retry runs of a broken pool, each in a process of its own (up to ``workers`` at once).

    A worker that dies (killed, out of memory, a crash in native code) breaks its pool and fails
    every run still in it, and which run killed it is unknown. Alone in a process, a run that
    dies again is the culprit and is reported; the others finish (resuming where they were).
    """
    queue = [s for s in specs if not store.is_finished(s.key)]
    for spec in specs:
        if store.is_finished(spec.key):  # finished just before the pool broke
            report(RunOutcome(spec.key, "finished"))
    active: dict[Future[RunOutcome], tuple[ProcessPoolExecutor, RunSpec]] = {}
    try:
        while queue or active:
            while queue and len(active) < workers:
                spec = queue.pop(0)
                pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
                fut = pool.submit(execute_run, spec, str(store.root), threads=threads,
                                  verbose=verbose, progress=progress)
                active[fut] = (pool, spec)
            done, _ = wait(list(active), return_when=FIRST_COMPLETED)
            for fut in done:
                pool, spec = active.pop(fut)
                try:
                    report(fut.result())
                except BrokenProcessPool:
                    report(RunOutcome(
                        spec.key, "failed",
                        "its worker process died while training it (killed, out of memory, or "
                        "a crash in native code)",
                    ))
                except Exception as err:
                    report(RunOutcome(spec.key, "failed", f"{type(err).__name__}: {err}"))
                pool.shutdown(wait=True)
    finally:
        for pool, _spec in active.values():
            pool.shutdown(wait=False, cancel_futures=True)


def _run_ray(
    todo: list[RunSpec],
    store: RunStore,
    workers: int,
    threads: int | None,
    verbose: bool,
    progress: bool | None,
    report: Callable[[RunOutcome], None],
) -> None:
    try:
        import ray
    except ImportError as err:
        raise ValueError(
            "backend 'ray' needs the ray package, which is not installed: pip install "
            "'attnact[ray]' (or pip install ray), then start or join a cluster (RAY_ADDRESS); "
            "or use --backend process"
        ) from err
    if not ray.is_initialized():
        # RAY_ADDRESS (e.g. "auto" on a cluster node) joins a running cluster; unset starts a
        # local one.
        ray.init(address=os.environ.get("RAY_ADDRESS"))
    cpus = threads or 1
    task = ray.remote(num_cpus=cpus)(execute_run)
    queue = list(todo)
    in_flight: dict[Any, RunSpec] = {}
    while queue or in_flight:
        while queue and len(in_flight) < workers:
            spec = queue.pop(0)
            ref = task.remote(spec, str(store.root.resolve()), threads=cpus, verbose=verbose,
                              progress=False)
            in_flight[ref] = spec
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        spec = in_flight.pop(ready[0])
        try:
            report(ray.get(ready[0]))
        except Exception as err:  # the task's node died, or the like
            report(RunOutcome(spec.key, "failed", f"ray task failed: {err}"))


# ====================================================================== commands
def _cli_value(value: Any) -> str:
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)  # JSON is YAML: the train CLI parses it back exactly


def train_command(
    config: TrainConfig, out_dir: str | os.PathLike[str], *, nproc: int | None = None
) -> str:
    """An ``attnact train`` command line that trains ``config`` into ``out_dir`` (resumable);
    with ``nproc``, under ``torchrun --nproc-per-node nproc``. The base preset is the one the
    config differs least from."""
    candidates: list[tuple[int, str | None, dict[str, tuple[Any, Any]]]] = []
    for name in [None, *sorted(PRESETS)]:
        base = TrainConfig() if name is None else TrainConfig.preset(name)
        diff = {k: v for k, v in base.diff(config).items() if k not in RUN_LOCAL_FIELDS}
        candidates.append((len(diff), name, diff))
    _, preset, diff = min(candidates, key=lambda c: c[0])
    head = (["torchrun", "--nproc-per-node", str(nproc), "-m", "attnact"] if nproc
            else ["attnact"])
    args = [*head, "train"]
    if preset is not None:
        args += ["--preset", preset]
    args += ["--out", str(out_dir), "--resume"]
    args += [f"{k}={_cli_value(new)}" for k, (_old, new) in diff.items()]
    return " ".join(shlex.quote(a) for a in args)


# ====================================================================== experiments
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


@dataclass
class ReproduceResult:
    experiment: str
    preset: str
    specs: list[RunSpec]
    sweep: SweepResult | None
    results: Results | None
    files: dict[str, Path]
    out_dir: Path
    store: RunStore

    @property
    def ok(self) -> bool:
        """Every run of the grid finished."""
        return self.results is not None and not self.results.missing


def filter_specs(
    specs: Sequence[RunSpec], where: Mapping[str, Sequence[str]] | None
) -> list[RunSpec]:
    """The runs whose coordinate ``axis`` (as text) is among ``where[axis]``, for every axis."""
    if not where:
        return list(specs)
    axes = sorted({k for s in specs for k in s.coords})
    for axis, allowed in where.items():
        if axis not in axes:
            raise ValueError(
                f"--where {axis}=...: the grid has no coordinate {axis!r} (coordinates: "
                f"{', '.join(axes)})"
            )
        values = sorted({str(s.coords.get(axis)) for s in specs})
        unknown = [v for v in allowed if v not in values]
        if unknown:
            raise ValueError(
                f"--where {axis}={','.join(allowed)}: no run has {axis} in {unknown} (values: "
                f"{', '.join(values)})"
            )
    return [s for s in specs if all(str(s.coords.get(a)) in vs for a, vs in where.items())]


def reproduce(
    experiment: str | Experiment,
    *,
    preset: str = "quick",
    seeds: int | None = None,
    workers: int = 1,
    backend: str = "process",
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    runs: str | os.PathLike[str] | None = None,
    where: Mapping[str, Sequence[str]] | None = None,
    report_only: bool = False,
    verbose: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    retrain_other_code: bool = False,
) -> ReproduceResult:
    """Train an experiment's grid (skipping finished runs) and write its report.

    Args:
        experiment: a registered name (``attnact.experiments.list_experiments()``) or object.
        preset: ``"quick"`` (CPU-sized, Fashion-MNIST) or ``"paper"`` (the paper's datasets
            and recipe), or another preset the experiment declares.
        seeds: runs per grid point (default: the experiment's for the preset).
        workers, backend, threads: see :func:`run_grid`.
        out: the report directory (default ``reports/<experiment>/<preset>``).
        runs: the run store (default ``runs/reproduce/<preset>``, shared by the experiments).
        where: train and report only runs whose coordinates match (``{"b": ["1", "2"]}``).
        report_only: train nothing; report what the store holds.
        command: the command line recorded in the report header (default: this process's).
        retrain_other_code: finished runs made (in any session) by other code than this
            process's, or carrying no provenance, are set aside (``RunStore.set_aside``: moved,
            not deleted) and trained anew, so the report holds this code's runs only.
    """
    from attnact.experiments.registry import get_experiment

    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    exp.check_preset(preset)
    if seeds is None:
        seeds = int(exp.default_seeds.get(preset, 1))
    check_positive_int("seeds", seeds)
    specs = filter_specs(exp.grid(preset, seeds), where)
    out_dir = Path(out) if out is not None else Path("reports") / exp.name / preset
    store = RunStore(runs if runs is not None else Path("runs") / "reproduce" / preset)
    if command is None:
        command = _command_line(exp.name, preset, seeds, workers, backend, threads, out, runs,
                                where, report_only)
    rank, _world = _dist_rank()

    if retrain_other_code and report_only:
        raise ValueError("retrain_other_code trains runs: it excludes report_only")
    sweep = None
    if retrain_other_code and rank == 0:
        from attnact.train.provenance import other_code

        finished = {s.key: store.summary(s.key) or {} for s in specs if store.is_finished(s.key)}
        for key in other_code(finished):
            moved = store.set_aside(key)
            (log or _say)(f"[{exp.name}] {key}: made by other code, set aside in {moved}")
    if not report_only:
        todo = [s for s in specs if not store.is_finished(s.key)]
        _check_data(exp, todo)
        # One batch of the real data through every distinct model of the plain-engine runs
        # before the first trains (MAML and transfer runs read their data their own way).
        from attnact.train.build import preflight

        preflight([s.config for s in todo if s.fit == DEFAULT_FIT])
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        sweep = run_grid(specs, store, workers=workers, backend=backend, threads=threads,
                         verbose=verbose, log=log, tag=exp.name)
        if rank == 0:
            store.log_sweep({
                "experiment": exp.name, "preset": preset, "command": command,
                "started": started, "elapsed_s": round(sweep.elapsed_s, 1),
                "workers": workers, "backend": backend,
                "threads": threads or _threads_used(backend, workers),
                "cores": available_cores(), "trained": len(sweep.trained),
                "skipped": len(sweep.skipped), "failed": len(sweep.failed),
            })
    if rank != 0:  # under torchrun the report is rank 0's job
        return ReproduceResult(exp.name, preset, specs, sweep, None, {}, out_dir, store)
    results = Results(specs, store)
    history = [s for s in store.sweeps()
               if s.get("experiment") == exp.name and s.get("preset") == preset]
    if report_only and history:
        # The header names the command that trained the runs, not the one that re-reported them.
        command = history[-1]["command"]
    context = ReportContext(exp.name, preset, seeds, command, store, history, dict(where or {}))
    files = {"results.csv": results.write_index(out_dir / "results.csv")}
    files.update(exp.report(results, out_dir, context))
    if results.missing:
        (log or _say)(
            f"[{exp.name}] {len(results.missing)} of {len(specs)} runs have not finished; the "
            f"report shows what has (see {out_dir / 'results.csv'})"
        )
    return ReproduceResult(exp.name, preset, specs, sweep, results, files, out_dir, store)


def _threads_used(backend: str, workers: int) -> int:
    if backend == "process":
        return default_threads(workers)
    if backend == "ray":
        return 1
    import torch

    return torch.get_num_threads()


def _command_line(
    name: str,
    preset: str,
    seeds: int,
    workers: int,
    backend: str,
    threads: int | None,
    out: Any,
    runs: Any,
    where: Mapping[str, Sequence[str]] | None,
    report_only: bool,
) -> str:
    """The ``attnact reproduce`` command equivalent to a :func:`reproduce` call."""
    parts = ["attnact", "reproduce", name, "--preset", preset, "--seeds", str(seeds)]
    if workers != 1:
        parts += ["--workers", str(workers)]
    if backend != "process":
        parts += ["--backend", backend]
    for flag, value in (("--threads", threads), ("--out", out), ("--runs", runs)):
        if value is not None:
            parts += [flag, str(value)]
    for axis, values in (where or {}).items():
        parts += ["--where", f"{axis}={','.join(values)}"]
    if report_only:
        parts.append("--report-only")
    return " ".join(shlex.quote(p) for p in parts)


def _check_data(exp: Experiment, todo: Sequence[RunSpec]) -> None:
    """Fail before training if a dataset the runs need is not on this machine."""
    if not todo:
        return
    from attnact.data import is_available

    data_dirs = {s.config.dataset: s.config.data_dir for s in todo}
    missing = [d for d in exp.required_datasets(todo) if not is_available(d, data_dirs.get(d))]
    if missing:
        raise ValueError(
            f"{exp.name}: dataset(s) {', '.join(missing)} not found on this machine (attnact "
            f"data list shows where it looks; attnact data fetch NAME downloads). Run where "
            f"the data is, or report what the store holds with --report-only."
        )
