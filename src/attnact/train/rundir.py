"""The run directory: the one module that knows its files.

A run directory holds one training run::

    config.yaml      the config (written at start, rewritten on resume)
    metrics.csv      one row per completed epoch or evaluation, rewritten whole after each
    checkpoint.pt    the checkpointed state, behind its own SHA-256 (attnact.train.checkpoint)
    summary.json     status, final and best metrics, provenance; when it says finished, the
                     SHA-256 of the checkpoint and of metrics.csv it describes
    spec.json        a sweep's record of the run's grid coordinates (experiments' RunStore)
    error.json       a sweep's record of a failure that left no summary
    tracking.json    the run ids of the W&B and MLflow loggers, so that a resume continues them
    tensorboard/     the TensorBoard logger's event files
    wandb/           W&B's run folders (offline unless WANDB_MODE says otherwise)
    mlruns/          the MLflow logger's file store (when no other tracking URI is given)
    .writer.lock     held (flock) by the one process writing the directory
    .lock            held by the sweep that claimed the run

A finished run's *record* is config.yaml, metrics.csv, summary.json and spec.json: a few KiB
that every report is made from. :meth:`RunDirectory.copy_record` copies it alone (no checkpoint,
no logger files), and a run directory holding only its record still counts as finished, so an
archive of records can be committed beside the reports and later sweeps skip its runs.

Every file is written atomically. The checkpoint is the source of truth: metrics.csv is
derived from its history, so a CSV that disagrees with the summary's recorded digest (an edit,
a kill between two writes) is rebuilt from the checkpoint, never trusted. The engine, MAML,
transfer learning and the experiments' store read and write run files only through
:class:`RunDirectory`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from attnact.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    exclusive_lock,
    remove_stale_temporaries,
)
from attnact.train.checkpoint import checkpoint_digest, load_checkpoint, save_checkpoint

__all__ = ["RunDirectory", "RunDirectoryBusyError"]

logger = logging.getLogger("attnact.train")


class RunDirectoryBusyError(ValueError):
    """Another process is writing the run directory."""


class RunDirectory:
    """The files of one run (see the module docstring); ``path`` need not exist yet."""

    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    CHECKPOINT = "checkpoint.pt"
    SUMMARY = "summary.json"
    SPEC = "spec.json"
    ERROR = "error.json"
    TRACKING = "tracking.json"
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"  # wandb.init(dir=<run directory>) makes this folder below it
    MLFLOW = "mlruns"
    WRITER_LOCK = ".writer.lock"
    SWEEP_LOCK = ".lock"
    RECORD = (CONFIG, METRICS, SUMMARY, SPEC)  # what a finished run is read back from

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def has_started(self) -> bool:
        """Whether a run has written anything here (a checkpoint or its config)."""
        return self.has_checkpoint() or (self.path / self.CONFIG).is_file()

    # ------------------------------------------------------------------ the writer
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Be the one process writing this directory for the block: take ``.writer.lock``,
        then remove the temporaries an interrupted writer left.

        Raises:
            RunDirectoryBusyError: another process holds the lock.
            ValueError: the directory cannot be created or written.
        """
        lock_path = self.path / self.WRITER_LOCK
        with contextlib.ExitStack() as stack:
            try:
                acquired = stack.enter_context(exclusive_lock(lock_path))
            except OSError as err:
                raise ValueError(f"cannot write the run directory {self.path}: {err.strerror} "
                                 f"({err.filename}); choose another out_dir") from None
            if not acquired:
                raise RunDirectoryBusyError(
                    f"{self.path} is being written by another process (it holds {lock_path}); "
                    "wait for it to end, or choose another out_dir"
                )
            for tmp in remove_stale_temporaries(self.path):
                logger.info("removed %s, left by an interrupted write", tmp)
            yield

    # ------------------------------------------------------------------ config
    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / self.CONFIG, yaml_text)

    def read_config_text(self) -> str | None:
        path = self.path / self.CONFIG
        return path.read_text() if path.is_file() else None

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> str:
        """Write the checkpoint (atomically, checksummed); returns its SHA-256."""
        return save_checkpoint(self.checkpoint_path, state)

    def load_checkpoint(self) -> dict[str, Any]:
        """The verified checkpoint (:func:`attnact.train.checkpoint.load_checkpoint`)."""
        return load_checkpoint(self.checkpoint_path)

    def checkpoint_digest(self) -> str:
        """The checkpoint's verified SHA-256 (an older unchecksummed one: computed, warned)."""
        return checkpoint_digest(self.checkpoint_path, allow_legacy=True)

    # ------------------------------------------------------------------ metrics
    def write_metrics(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
        """Replace metrics.csv with ``rows`` (``columns`` in order; None as an empty cell);
        returns the SHA-256 of what was written."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
        text = buf.getvalue()
        atomic_write_text(self.path / self.METRICS, text)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def metrics_digest(self) -> str | None:
        """SHA-256 of metrics.csv as it is now (None if there is none)."""
        path = self.path / self.METRICS
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def read_metrics(self) -> list[dict[str, float]]:
        """metrics.csv rows with numeric cells as floats (empty: NaN); [] if there is none."""
        path = self.path / self.METRICS
        if not path.is_file():
            return []
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = []
        for row in rows:
            parsed: dict[str, float] = {}
            for k, v in row.items():
                try:
                    parsed[k] = float(v) if v not in ("", None) else math.nan
                except (TypeError, ValueError):
                    continue  # a non-numeric column is not a metric
            out.append(parsed)
        return out

    # ------------------------------------------------------------------ summary
    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / self.SUMMARY, dict(summary))

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None if there is none (or it is not a JSON object).

        Raises:
            ValueError: the file is not valid JSON. It is written atomically, so this is not a
                half-written file but an edited one: refused rather than guessed at.
        """
        path = self.path / self.SUMMARY
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); move the run directory aside "
                             "to retrain it") from err
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ tracking
    def read_tracking(self) -> dict[str, Any]:
        """tracking.json: ``{backend: {"run_id": ..., ...}}``; {} if there is none.

        Raises:
            ValueError: the file is not a JSON object (edited by hand).
        """
        path = self.path / self.TRACKING
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete it to start new "
                             "tracking runs") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of run ids; delete it to start "
                             "new tracking runs")
        return data

    def write_tracking(self, data: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / self.TRACKING, dict(data))

    # ------------------------------------------------------------------ sweep records
    def write_json(self, name: str, data: Any) -> None:
        """A sweep's own record (``SPEC``, ``ERROR``) in the run directory."""
        if name not in (self.SPEC, self.ERROR):
            raise ValueError(f"{name!r} is not a sweep record of a run directory")
        atomic_write_json(self.path / name, data)

    def read_json(self, name: str) -> Any:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()

    def copy_record(self, dest: str | Path) -> list[str]:
        """Copy this run's record files (:attr:`RECORD`, those present) into the run directory
        ``dest``, each written atomically, the summary last so that an interrupted copy never
        looks finished; returns the names copied."""
        target = RunDirectory(dest)
        target.path.mkdir(parents=True, exist_ok=True)
        names = [n for n in self.RECORD if n != self.SUMMARY] + [self.SUMMARY]
        copied = []
        for name in names:
            source = self.path / name
            if source.is_file():
                atomic_write_bytes(target.path / name, source.read_bytes())
                copied.append(name)
        return copied
