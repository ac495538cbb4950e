"""Paper experiments and comparisons: grids of training runs and the reports they make.

* :mod:`~attnact.experiments.framework`: run specs, the run store, the runner (worker
  processes, Ray, torchrun), :class:`Experiment` and :func:`reproduce`.
* :mod:`~attnact.experiments.reporting`: statistics over seeds, tables, headers, figures.
* :mod:`~attnact.experiments.atac`: the ATAC paper's Table III, Fig. 6, 7, 8, Table IV (and two
  extensions), registered by name in :mod:`~attnact.experiments.registry`.
* :mod:`~attnact.experiments.compare`: ``attnact compare``, the same store and runner for an ad
  hoc comparison of activations.

Quick use::

    from attnact.experiments import list_experiments, reproduce
    result = reproduce("atac-ablation", preset="quick", seeds=2, workers=1)
    print(result.files["table.md"].read_text())
"""

from attnact.experiments.framework import (
    BACKENDS,
    Experiment,
    ReportContext,
    ReproduceResult,
    Results,
    RunOutcome,
    RunRecord,
    RunSpec,
    RunStore,
    StoreConflictError,
    SweepResult,
    execute_run,
    reproduce,
    run_grid,
    run_key,
    train_command,
)
from attnact.experiments.registry import get_experiment, list_experiments, register_experiment

__all__ = [
    "BACKENDS",
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
    "execute_run",
    "get_experiment",
    "list_experiments",
    "register_experiment",
    "reproduce",
    "run_grid",
    "run_key",
    "train_command",
]
