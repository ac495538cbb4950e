"""``reproduce``: train an experiment's grid for a preset (skipping finished runs) and write its
report, with the sweep logged in the store and the command that redoes it in the header.

Issue #4: users come to reproduce and extend the papers' comparisons, and every comparison is
reported with its uncertainty over seeds. This is the top of the experiments package: it uses
the registry, the store, the runners and the report of an :class:`Experiment`; none of them
imports it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from attnact._checks import check_directory_argument, check_positive_int
from attnact.experiments.commands import reproduce_command
from attnact.experiments.execute import available_cores, default_threads, dist_rank, write_line
from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.keys import DEFAULT_FIT, RunSpec, filter_specs
from attnact.experiments.registry import get_experiment
from attnact.experiments.results import Results
from attnact.experiments.runners import SweepResult, check_run_options, run_grid
from attnact.experiments.store import RunStore

__all__ = ["ReproduceResult", "reproduce"]


@dataclass
class ReproduceResult:
    """What one :func:`reproduce` call did: its grid, the sweep (None with ``report_only``), the
    runs read back from the store (None on ranks other than 0) and the report's files."""

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
    loggers: Sequence[str] | str | None = None,
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
        loggers: tracking backends for the runs trained now (``TrainConfig.loggers``: a
            run-local setting, so finished runs and the store's config checks are unaffected).
    """
    if not isinstance(experiment, (str, Experiment)):
        raise ValueError(f"experiment must be a registered name or an Experiment, got "
                         f"{experiment!r}")
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    exp.check_preset(preset)
    if seeds is None:
        seeds = int(exp.default_seeds.get(preset, 1))
    check_positive_int("seeds", seeds)
    check_run_options(workers, backend, threads)
    check_directory_argument("out", out)
    check_directory_argument("runs", runs)
    specs = filter_specs(exp.design(preset, seeds), where)
    if loggers:
        specs = [dataclasses.replace(s, config=s.config.replace(loggers=loggers)) for s in specs]
    out_dir = Path(out) if out is not None else Path("reports") / exp.name / preset
    store = RunStore(runs if runs is not None else Path("runs") / "reproduce" / preset)
    if command is None:
        command = reproduce_command(exp.name, preset, seeds, workers, backend, threads, out, runs,
                                where, report_only)
    rank, _world = dist_rank()

    if retrain_other_code and report_only:
        raise ValueError("retrain_other_code trains runs: it excludes report_only")
    sweep = None
    if retrain_other_code and rank == 0:
        from attnact.train.provenance import other_code

        finished = {s.key: store.summary(s.key) or {} for s in specs if store.is_finished(s.key)}
        for key in other_code(finished):
            moved = store.set_aside(key)
            (log or write_line)(f"[{exp.name}] {key}: made by other code, set aside in {moved}")
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
        (log or write_line)(
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
