"""Run tracking: one interface (:class:`RunLogger`) and three backends — TensorBoard, Weights &
Biases, MLflow — that the engine drives through :class:`Loggers`.

What is logged, under namespaced names (``TrainConfig.loggers`` picks the backends):

- hyperparameters: the effective config, flattened (``lr``, ``act_kwargs.alpha``,
  ``maml.shots``), and the session's provenance (``provenance.attnact``,
  ``provenance.commit`` …, :mod:`attnact.train.provenance`);
- every ``log_every_steps`` steps: ``train/step_loss`` and ``lr`` (the learning rate of that
  step);
- every epoch: ``epoch``, ``train/loss``, ``train/acc``, ``test/loss``, ``test/top1``,
  ``test/top5``, ``time/epoch_s``, ``time/images_per_s``.

Every scalar has the engine's global step as its step. The engine hands an epoch's scalars over
only after the epoch's checkpoint is written, so a run cut short and resumed logs each step and
each epoch once: what a backend holds never runs ahead of the checkpoint the resume starts from.
W&B and MLflow continue the run whose id the run directory's ``tracking.json`` keeps.

Backends: TensorBoard event files in ``<run>/tensorboard``; W&B in ``<run>/wandb``, offline
unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads it later; project
``$WANDB_PROJECT`` or ``attnact``); MLflow at ``TrainConfig.mlflow_tracking_uri``, else
``$MLFLOW_TRACKING_URI``, else a file store ``<run>/mlruns`` (experiment
``$MLFLOW_EXPERIMENT_NAME`` or ``attnact``). The engine opens them on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from attnact._extras import missing_extra_message
from attnact.train.config import LOGGERS
from attnact.train.rundir import RunDirectory

__all__ = [
    "LOGGERS",
    "Loggers",
    "MLflowLogger",
    "RunLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "check_available",
    "hyperparameters",
    "open_loggers",
]

logger = logging.getLogger("attnact.train")

# the module each backend imports (its package is in attnact's "tracking" extra)
_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
# MLflow caps a parameter value's length (6000 characters since 2.x) and a batch's metrics
_MLFLOW_PARAM_CHARS = 6000
_MLFLOW_BATCH = 1000
_MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED"}  # any other: FAILED


class RunLogger(Protocol):
    """A tracking backend. Called on rank 0 only, in this order: ``log_hyperparams`` once,
    ``log_metrics`` any number of times with non-decreasing steps, ``finish`` once."""

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (flat names; values scalars, lists or None)."""

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, *, walltime: float | None = None
    ) -> None:
        """Record scalars at ``step``; ``walltime`` (seconds since the epoch) is when they
        were measured, where the backend can take it."""

    def finish(self, status: str) -> None:
        """Close the run: ``status`` is the run's ("finished", "failed", "diverged",
        "interrupted")."""


# ---------------------------------------------------------------------- hyperparameters
def hyperparameters(
    config: Mapping[str, Any], provenance: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The flat hyperparameters of a run: ``config`` (a ``TrainConfig.to_dict()``) with nested
    mappings joined by dots, ``provenance.*`` from a provenance record, and ``extra``
    (``run.params=...``) as given."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", dict(config))
    if provenance:
        git = provenance.get("git") or {}
        record = {
            "attnact": provenance.get("attnact"),
            "commit": git.get("commit"),
            "dirty": git.get("dirty"),
            **{k: provenance.get(k) for k in ("python", "torch", "numpy", "device", "cpu",
                                              "threads", "data_sha256", "config_sha256")},
        }
        flat.update({f"provenance.{k}": v for k, v in record.items()})
    flat.update(extra)
    return flat


def _text(value: Any) -> str | int | float | bool:
    """A value as a backend that takes scalars and strings only wants it."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


# ---------------------------------------------------------------------- backends
class TensorBoardLogger:
    """Event files in ``log_dir``; hyperparameters for the HParams dashboard.

    ``purge_step``: events at this step and later, left by a session that was cut short after
    its last checkpoint, are dropped when the first new event is written.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # The dashboard pairs these with the run's scalars of the names in metric_dict.
        exp, ssi, _sei = hparams({k: _text(v) for k, v in params.items()},
                                 {"test/top1": math.nan, "test/loss": math.nan})
        file_writer = self.writer.file_writer
        assert file_writer is not None  # SummaryWriter opens it in __init__
        for summary in (exp, ssi):
            file_writer.add_summary(summary)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, *, walltime: float | None = None
    ) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step, walltime=walltime)

    def finish(self, status: str) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger:
    """A W&B run in ``<run dir>/wandb``, offline unless ``WANDB_MODE`` is set; ``run_id``
    continues that run (a resume)."""

    def __init__(self, run_dir: str | Path, *, run_id: str, name: str) -> None:
        import wandb

        self.run = wandb.init(
            dir=str(run_dir),
            # no network here, often elsewhere; wandb checks the value itself
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            project=os.environ.get("WANDB_PROJECT", "attnact"),
            id=run_id,
            name=name,
            resume="allow",
            # console="off": the engine's own log lines stay on the terminal, unwrapped;
            # no system-metrics sampler in a training process that has its own timings
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self.run_id = run_id

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        # a resumed run may change some (more epochs): the config shows the latest values
        self.run.config.update(dict(params), allow_val_change=True)  # type: ignore[no-untyped-call]  # wandb's Config.update is unannotated

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, *, walltime: float | None = None
    ) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "finished" else 1)


class MLflowLogger:
    """An MLflow run at ``tracking_uri``; ``run_id`` continues that run (a resume)."""

    def __init__(self, tracking_uri: str, *, run_id: str | None, name: str,
                 experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id: str = run_id if run_id is not None and self._continues(run_id) else \
            self._new_run(experiment, name)

    def _continues(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")
            return True
        except Exception as err:  # MlflowException: a store that no longer has that run
            logger.warning("MLflow run %s not found at %s (%s): starting a new one",
                           run_id, self.tracking_uri, type(err).__name__)
            return False

    def _new_run(self, experiment: str, name: str) -> str:
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None
                         else self.client.create_experiment(experiment))
        run_id: str = self.client.create_run(experiment_id, run_name=name).info.run_id
        return run_id

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        # MLflow parameters cannot change once logged: a resume that changes one (more epochs)
        # records the new value as a tag resumed.<name>.
        logged = self.client.get_run(self.run_id).data.params
        new, changed = [], []
        for key, value in params.items():
            text = str(_text(value))[:_MLFLOW_PARAM_CHARS]
            if key not in logged:
                new.append(Param(key, text))
            elif logged[key] != text:
                changed.append(RunTag(f"resumed.{key}", text))
        for i in range(0, max(len(new), len(changed)), 100):  # MLflow: 100 params a batch
            self.client.log_batch(self.run_id, params=new[i:i + 100], tags=changed[i:i + 100])

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, *, walltime: float | None = None
    ) -> None:
        from mlflow.entities import Metric

        ms = int(1000 * (walltime if walltime is not None else time.time()))
        batch = [Metric(k, float(v), ms, step) for k, v in metrics.items()]
        for i in range(0, len(batch), _MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i:i + _MLFLOW_BATCH])

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FAILED"))


# ---------------------------------------------------------------------- the engine's side
class Loggers:
    """The backends of one run, called as one. A backend that fails while logging is reported
    and dropped: tracking never stops a training run."""

    def __init__(self, backends: Mapping[str, RunLogger]) -> None:
        self.backends = dict(backends)

    def __bool__(self) -> bool:
        return bool(self.backends)

    def _each(self, what: str, *args: Any, **kwargs: Any) -> None:
        for name, backend in list(self.backends.items()):
            try:
                getattr(backend, what)(*args, **kwargs)
            except Exception as err:
                logger.warning("%s logger: %s failed (%s: %s); it logs no more in this run",
                               name, what, type(err).__name__, err)
                self.backends.pop(name)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._each("log_hyperparams", params)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, *, walltime: float | None = None
    ) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if values:
            self._each("log_metrics", values, step, walltime=walltime)

    def finish(self, status: str) -> None:
        self._each("finish", status)
        self.backends.clear()


def check_available(names: Sequence[str], command: str = "") -> None:
    """Import each backend's package now, so a missing one fails before training starts.

    Raises:
        ModuleNotFoundError: with the ``pip install 'attnact[tracking]'`` line that fixes it
            (``command`` names the attnact command in it).
    """
    import importlib

    for name in names:
        if name not in _MODULES:
            raise ValueError(f"unknown logger {name!r}; allowed: {', '.join(LOGGERS)}")
        try:
            importlib.import_module(_MODULES[name])
        except ModuleNotFoundError as err:
            message = missing_extra_message(command, err) or str(err)
            raise ModuleNotFoundError(f"the {name} logger: {message}", name=err.name) from None


def open_loggers(
    names: Sequence[str],
    files: RunDirectory,
    *,
    resume_step: int,
    mlflow_tracking_uri: str | None = None,
) -> Loggers:
    """Open the backends ``names`` for the run in ``files``; W&B and MLflow continue the runs
    whose ids ``tracking.json`` holds (and record new ones there).

    Args:
        names: backends, of :data:`LOGGERS`.
        files: the run directory (it must exist).
        resume_step: the global step of the checkpoint the session starts from (0: none).
        mlflow_tracking_uri: MLflow's store (default: ``$MLFLOW_TRACKING_URI``, else a file
            store in the run directory).
    """
    check_available(names)
    ids = files.read_tracking()
    name = files.path.resolve().name
    backends: dict[str, RunLogger] = {}
    try:
        for backend in names:
            if backend == "tensorboard":
                backends[backend] = TensorBoardLogger(files.file(files.TENSORBOARD),
                                                      purge_step=resume_step + 1)
            elif backend == "wandb":
                run_id = (ids.get("wandb") or {}).get("run_id") or _wandb_id()
                backends[backend] = WandbLogger(files.path, run_id=run_id, name=name)
                ids["wandb"] = {"run_id": run_id}
            elif backend == "mlflow":
                uri = _mlflow_uri(files, mlflow_tracking_uri)
                stored = ids.get("mlflow") or {}
                run_id = stored.get("run_id") if stored.get("tracking_uri") == uri else None
                ml = MLflowLogger(uri, run_id=run_id, name=name,
                                  experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME", "attnact"))
                backends[backend] = ml
                ids["mlflow"] = {"run_id": ml.run_id, "tracking_uri": uri}
    except BaseException:
        Loggers(backends).finish("failed")
        raise
    if "wandb" in names or "mlflow" in names:
        files.write_tracking(ids)
    return Loggers(backends)


def _wandb_id() -> str:
    """A new W&B run id: 8 lowercase letters and digits, as W&B makes them."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _mlflow_uri(files: RunDirectory, configured: str | None) -> str:
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # The run directory's own store. MLflow 3 keeps its file store in maintenance mode and
    # refuses it unless MLFLOW_ALLOW_FILE_STORE is set; a plain directory of files is what a
    # run directory holds everywhere else, so it is allowed here (a user's own setting wins).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return files.file(files.MLFLOW).resolve().as_uri()
