"""The run store: one directory per run key, and a finished run read back as a :class:`RunRecord`.

Each run directory is the engine's own (``config.yaml``, ``metrics.csv``, ``checkpoint.pt``,
``summary.json``) plus what the store adds::

    <root>/<key>/spec.json    key, grid coordinates, fit target (written before training)
    <root>/<key>/error.json   why the last attempt failed before the engine wrote a summary
    <root>/<key>/.lock        held (flock) by the process training the run
    <root>/sweeps.json        one entry per sweep: experiment, command, wall time, counts

A run is finished when its ``summary.json`` says ``"status": "finished"``. The engine writes
that file atomically (temp file, fsync, rename) after the last epoch's checkpoint and metrics,
so a run killed at any instant is either finished — with all its files — or not, and is then
resumed from its last checkpoint. Older versions could finish a run with metrics.csv an epoch
behind its checkpoint: a finished run whose metrics.csv disagrees with its summary has the CSV
rebuilt from the checkpoint, or, when that is not possible, counts as unfinished (and is resumed
or retrained). A key whose stored configuration differs from its spec's is a
:class:`StoreConflictError`, never silently reused.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from attnact.experiments.keys import RunSpec, check_key, fit_name
from attnact.fileio import atomic_write_json, exclusive_lock
from attnact.train.config import config_identity

__all__ = ["RunRecord", "RunStore", "StoreConflictError"]

logger = logging.getLogger("attnact.experiments")


class StoreConflictError(ValueError):
    """A run directory holds a different configuration than the grid's run of the same key."""


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
            "fit": fit_name(spec.fit),
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
