"""Paper experiments and comparisons: grids of training runs and the reports they make.

* the framework, one concept a module, each depending only on those listed before it:
  :mod:`~attnact.experiments.keys` (run keys, :class:`RunSpec`),
  :mod:`~attnact.experiments.store` (:class:`RunStore`, :class:`RunRecord`),
  :mod:`~attnact.experiments.results` (:class:`Results`, ``results.csv``),
  :mod:`~attnact.experiments.execute` (:func:`execute_run`: one run in this process),
  :mod:`~attnact.experiments.runners` (:func:`run_grid`: worker processes, Ray, torchrun),
  :mod:`~attnact.experiments.commands` (``attnact train``/``reproduce`` command lines),
  :mod:`~attnact.experiments.experiment` (:class:`Experiment`),
  :mod:`~attnact.experiments.registry` (experiments by name) and
  :mod:`~attnact.experiments.reproduction` (:func:`reproduce`). The old
  ``attnact.experiments.framework`` re-exports their public names.
* :mod:`~attnact.experiments.reporting`: statistics over seeds, tables, headers, figures.
* :mod:`~attnact.experiments.atac`: the ATAC paper's Table III, Fig. 6, 7, 8, Table IV (and two
  extensions), registered by name in :mod:`~attnact.experiments.registry`.
* :mod:`~attnact.experiments.compare`: ``attnact compare``, the same store and runner for an ad
  hoc comparison of activations.

What each type is, from what to run to what was found:

* :class:`RunSpec` — what to run: one run's key, grid coordinates, configuration and training
  function (before anything is trained).
* :class:`RunOutcome` — what happened to one run in a sweep: ``finished``, ``skipped``,
  ``failed`` or ``busy``, with the error and the seconds spent (what :func:`execute_run`
  returns; it holds no results).
* :class:`SweepResult` — one :func:`run_grid` call: each run's :class:`RunOutcome` in grid
  order and the sweep's wall time. Not folded into :class:`RunOutcome`: it is the list of them.
* :class:`RunRecord` — a finished run read back from its directory by the store: coordinates,
  ``summary.json`` and the per-epoch ``metrics.csv`` rows. Every report reads runs as this type
  (``attnact compare`` too).
* :class:`Results` — the aggregate: a grid's specs with the records of those that finished,
  selected by coordinates, and the ``results.csv`` index.
* :class:`ReproduceResult` — what one :func:`reproduce` call did: its grid, the
  :class:`SweepResult`, the :class:`Results` and the report's files.
* :class:`~attnact.experiments.compare.CompareReport` — what one
  :func:`~attnact.experiments.compare.compare` call wrote: its table rows, the runs (as
  :class:`RunRecord`) and the report's files.
* Below this package, :class:`attnact.train.engine.RunResult` is what ``fit`` returns in the
  process that trained (the trained module included); the store's :class:`RunRecord` is the
  same run read back from disk by any later process.

Quick use::

    from attnact.experiments import list_experiments, reproduce
    result = reproduce("atac-ablation", preset="quick", seeds=2, workers=1)
    print(result.files["table.md"].read_text())
"""

from attnact.experiments.commands import train_command
from attnact.experiments.execute import RunOutcome, execute_run
from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.keys import RunSpec, run_key
from attnact.experiments.registry import get_experiment, list_experiments, register_experiment
from attnact.experiments.reproduction import ReproduceResult, reproduce
from attnact.experiments.results import Results
from attnact.experiments.runners import BACKENDS, SweepResult, run_grid
from attnact.experiments.store import RunRecord, RunStore, StoreConflictError

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
