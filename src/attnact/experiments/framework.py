"""The old home of the experiment framework, kept so that existing imports keep working.

The framework is split by concept; import from the modules themselves:

* :mod:`~attnact.experiments.keys`: run keys, :class:`RunSpec`, ``filter_specs``;
* :mod:`~attnact.experiments.store`: :class:`RunStore`, :class:`RunRecord`;
* :mod:`~attnact.experiments.results`: :class:`Results` and ``results.csv``;
* :mod:`~attnact.experiments.execute`: :func:`execute_run`, :class:`RunOutcome`, threads;
* :mod:`~attnact.experiments.runners`: :func:`run_grid` and its backends;
* :mod:`~attnact.experiments.commands`: :func:`train_command`;
* :mod:`~attnact.experiments.experiment`: :class:`Experiment`, :class:`ReportContext`;
* :mod:`~attnact.experiments.reproduction`: :func:`reproduce`.

This module only re-exports those modules' public names (nothing in the package imports it).
"""

from attnact.experiments.commands import train_command
from attnact.experiments.execute import RunOutcome, available_cores, default_threads, execute_run
from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.keys import DEFAULT_FIT, RunSpec, check_key, filter_specs, run_key
from attnact.experiments.reproduction import ReproduceResult, reproduce
from attnact.experiments.results import Results
from attnact.experiments.runners import BACKENDS, SweepResult, run_grid
from attnact.experiments.store import RunRecord, RunStore, StoreConflictError
from attnact.train.config import RUN_LOCAL_FIELDS, config_identity

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
    "available_cores",
    "check_key",
    "config_identity",
    "default_threads",
    "execute_run",
    "filter_specs",
    "reproduce",
    "run_grid",
    "run_key",
    "train_command",
]
