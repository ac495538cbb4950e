"""Runner backends: train every unfinished run of a grid, and say how each went.

:func:`run_grid` trains in this process (``"inline"``), in K spawned worker processes
(``"process"``: each with ``cores // K`` intra-op threads, a failing run is reported and the
sweep goes on), as Ray tasks (``"ray"``, optional), or, under ``torchrun``, with every rank
together on each run. A run's directory is locked while it trains, so two sweeps sharing a store
never train one run twice; re-running a sweep skips finished runs and resumes the rest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from attnact._checks import check_positive_int
from attnact.experiments.execute import (
    RunOutcome,
    default_threads,
    dist_rank,
    execute_run,
    train_locked,
    write_line,
)
from attnact.experiments.keys import RunSpec
from attnact.experiments.store import RunStore

__all__ = ["BACKENDS", "SweepResult", "run_grid"]

BACKENDS = ("process", "inline", "ray")


@dataclass
class SweepResult:
    """What one :func:`run_grid` call did: each run's outcome in grid order, and its wall time."""

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


def check_run_options(workers: object, backend: object, threads: object) -> None:
    """The execution options of :func:`run_grid`, checked by name (callers check them before
    any data is read or model built)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    check_positive_int("workers", workers)
    if threads is not None:
        check_positive_int("threads", threads)


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
    check_run_options(workers, backend, threads)
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
    rank, world = dist_rank()
    if world > 1 and backend != "inline":
        raise ValueError(
            f"under torchrun (WORLD_SIZE={world}) every rank trains each run together: use "
            f"backend='inline' (--backend inline), not {backend!r}"
        )
    main = rank == 0
    say: Callable[[str], None] = (log or write_line) if main else (lambda _msg: None)
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
            resume = store.files(spec.key).has_checkpoint()
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
                    decision = ("train", store.files(spec.key).has_checkpoint())
            what, resume = _broadcast(decision)
            if what == "busy":
                report(RunOutcome(spec.key, "busy", "another process is training this run"))
                continue
            if what == "skipped":
                report(RunOutcome(spec.key, "skipped"))
                continue
            say(f"[{tag}] {spec.key}: {'resuming' if resume else 'training'}")
            report(train_locked(spec, store, resume=resume, progress=progress, main=main))


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
