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
resumed from its last checkpoint. The checkpoint is the source of truth: a finished run whose
metrics.csv disagrees with its summary (edited, or an epoch behind) has the CSV rebuilt from the
checkpoint, or, when that is not possible, counts as unfinished (and is resumed or retrained);
one whose checkpoint fails verification is ``corrupted``: refused, never reused or
overwritten. A key whose stored configuration differs from its spec's is a
:class:`StoreConflictError`, never silently reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
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
from attnact.train.rundir import RunDirectory

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

    def curve(self, name: str = "test_top1") -> list[float]:
        """``name`` per ``metrics.csv`` row, NaN where a row has no value (a learning curve)."""
        return [float(r.get(name, math.nan)) for r in self.metrics]

    @property
    def final_top1(self) -> float:
        return self.metric("test_top1", "final")

    @property
    def mean_epoch_time_s(self) -> float:
        """Mean epoch wall time without the first epoch when there are others: the first
        carries one-off costs (allocator warm-up, lazy initialisation, compilation)."""
        times = self.curve("epoch_time_s")
        return statistics.fmean(times[1:] or times)

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
    epochs: list[Any] = [row.get("epoch") for row in rows]  # numbers, as the rows store them
    if not epochs:
        return completed == 0
    return epochs[-1] == completed and all(a < b for a, b in pairwise(epochs))


class RunStore:
    """Run directories below ``root``, one per run key (see the module docstring)."""

    # the run files are RunDirectory's; the sweep log is the store's own
    SPEC = RunDirectory.SPEC
    SUMMARY = RunDirectory.SUMMARY
    ERROR = RunDirectory.ERROR
    LOCK = RunDirectory.SWEEP_LOCK
    SWEEPS = "sweeps.json"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._verified: dict[tuple[str, int, int], tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def run_dir(self, key: str) -> Path:
        return self.root / check_key(key)

    def files(self, key: str) -> RunDirectory:
        """The run directory of ``key`` (the owner of its files)."""
        return RunDirectory(self.run_dir(key))

    # ------------------------------------------------------------------ state
    def summary(self, key: str) -> dict[str, Any] | None:
        return self.files(key).read_summary()

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
        files = self.files(key)
        if files.file(self.ERROR).is_file():
            return "failed"
        return "unfinished" if files.has_started() else "pending"

    def is_finished(self, key: str) -> bool:
        return self.status(key) == "finished"

    def _checkpoint_problem(
        self, key: str, summary: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """Why a finished run's checkpoint cannot be reused, as (``"corrupted"`` or
        ``"replaced"``, message); None if it can be, or if the run keeps none. Verified once per
        file version: hashing reads the whole file."""
        from attnact.train.checkpoint import CheckpointError

        files = self.files(key)
        path = files.checkpoint_path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        version = (str(path), stat.st_size, stat.st_mtime_ns)
        if version not in self._verified:
            try:
                self._verified[version] = ("ok", files.checkpoint_digest())
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
        error = self.files(key).read_json(self.ERROR) if summary is None else None
        if isinstance(error, dict):
            return f"failed: {error.get('error', '')}"
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
        if coords is None:
            spec = self.files(key).read_json(self.SPEC)
            coords = spec.get("coords", {}) if isinstance(spec, dict) else {}
        return RunRecord(key, dict(coords), self.run_dir(key), summary, metrics)

    def _finished_metrics(
        self, key: str, summary: Mapping[str, Any]
    ) -> list[dict[str, float]] | None:
        """The metrics.csv rows of the finished run ``key``; None if they cannot be trusted.

        The checkpoint is the source of truth. A CSV whose SHA-256 is not the one the summary
        recorded (edited by hand), or whose last epoch is not the summary's
        ``epochs_completed`` (killed between the two writes of the last epoch), is rebuilt
        from the checkpoint's history when that agrees with the summary; otherwise the run
        counts as unfinished.
        """
        files = self.files(key)
        metrics = files.read_metrics()
        completed = summary.get("epochs_completed")
        recorded = summary.get("metrics_sha256")
        edited = recorded is not None and files.metrics_digest() != recorded
        if not edited and (not isinstance(completed, int) or _epochs_agree(metrics, completed)):
            return metrics  # nothing to check against (not the engine's summary), or it agrees
        if edited:
            found = "its contents are not those the summary recorded: edited since"
        elif not files.file(RunDirectory.METRICS).is_file():
            found = "it is missing"
        else:
            found = (f"its last epoch is {metrics[-1].get('epoch', math.nan):g}" if metrics
                     else "it has no rows")
        problem = (f"run {key}: summary.json says finished after epoch {completed} but "
                   f"metrics.csv disagrees ({found})")
        # Lazy: reading the store must not need torch unless a run has to be repaired.
        from attnact.train.engine import CHECKPOINT_FORMAT, METRIC_COLUMNS

        ckpt_path = files.checkpoint_path
        try:
            ckpt = files.load_checkpoint()
        except FileNotFoundError:
            reason = f"there is no {ckpt_path.name} to rebuild it from"
        except Exception as err:  # any unreadable checkpoint: the run cannot be repaired
            reason = f"{ckpt_path} cannot be read ({type(err).__name__}: {err})"
        else:
            history = ckpt.get("history")
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                # Another writer's columns (MAML): its own resume rewrites the CSV.
                reason = f"{ckpt_path.name} is not the training engine's"
            elif not isinstance(history, list) or not (
                    isinstance(completed, int) and _epochs_agree(history, completed)):
                reason = f"{ckpt_path.name} disagrees too (epoch {ckpt.get('epoch')})"
            else:
                files.write_metrics(history, METRIC_COLUMNS)
                logger.warning("%s; rebuilt it from %s", problem, ckpt_path)
                return files.read_metrics()
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
        path = self.files(spec.key).file(RunDirectory.CONFIG)
        text = self.files(spec.key).read_config_text()
        if text is None:
            return
        try:
            stored = config_identity(yaml.safe_load(text) or {})
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
        files = self.files(spec.key)
        if files.read_json(self.SPEC) != payload:
            files.write_json(self.SPEC, payload)
        return run_dir

    def write_error(self, key: str, error: BaseException) -> None:
        self.files(key).write_json(
            self.ERROR,
            {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exception(type(error), error, error.__traceback__)[
                    -8:
                ],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def clear_error(self, key: str) -> None:
        self.files(key).remove(self.ERROR)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[bool]:
        """Hold ``<run dir>/.lock`` while a sweep trains the run; yields False if another
        process holds it (see :func:`attnact.fileio.exclusive_lock`)."""
        with exclusive_lock(self.files(key).file(self.LOCK)) as acquired:
            yield acquired

    # ------------------------------------------------------------------ archive
    def archive(self, key: str, into: RunStore) -> str:
        """Copy the finished run ``key``'s record (no checkpoint) into the store ``into``:
        ``"copied"``, or ``"present"`` when ``into`` already holds the same finished run.
        Raises ValueError if the run is not finished here, and :class:`StoreConflictError` if
        ``into`` holds the key with another result or configuration (nothing is overwritten).
        """
        if not self.is_finished(key):
            raise ValueError(f"run {key} in {self.root} is {self.status(key)}: only finished "
                             "runs are archived")
        ours, theirs = self.files(key), into.files(key)
        if theirs.has_started():
            same = (theirs.read_summary() == ours.read_summary()
                    and theirs.read_config_text() == ours.read_config_text())
            if same and into.is_finished(key):
                return "present"
            raise StoreConflictError(
                f"run {key}: {into.run_dir(key)} already holds another run of that key; it is "
                f"not overwritten (move it away to archive this one)")
        ours.copy_record(into.run_dir(key))
        return "copied"

    def archive_sweeps(self, into: RunStore, experiment: str) -> int:
        """Add the sweep-log entries of ``experiment`` that ``into`` lacks to its
        ``sweeps.json`` (the machine time of each sweep travels with its runs); returns how
        many were added."""
        have = {json.dumps(e, sort_keys=True) for e in into.sweeps()}
        new = [e for e in self.sweeps() if e.get("experiment") == experiment
               and json.dumps(e, sort_keys=True) not in have]
        for entry in new:
            into.log_sweep(entry)
        return len(new)

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
