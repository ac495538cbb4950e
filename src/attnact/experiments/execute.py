"""Training one run of the store in this process, and the intra-op threads a run gets.

:func:`execute_run` is what every runner backend calls for a run — in this process, in a
spawned worker process or as a Ray task — so it takes plain, picklable arguments (the spec and
the store's root) and reports a :class:`RunOutcome` instead of raising when training fails.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from attnact.experiments.keys import RunSpec, resolve_fit
from attnact.experiments.store import RunStore

__all__ = ["RunOutcome", "available_cores", "default_threads", "execute_run"]


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in a sweep: ``finished`` (trained now), ``skipped`` (finished
    before), ``failed`` (error says why) or ``busy`` (another process was training it)."""

    key: str
    status: str
    error: str | None = None
    seconds: float = 0.0


def available_cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Intra-op threads per worker: the cores shared out, at least one.

    More threads than cores makes OpenMP threads of different workers spin-wait on each other
    (see tests/conftest.py), which slows every worker many times over.
    """
    return max(1, available_cores() // max(1, workers))


def dist_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def write_line(message: str) -> None:
    """``message`` and a newline on stdout, flushed."""
    # One write per line: worker processes share the terminal, and print() writes the text and
    # the newline separately, which interleaves lines of different processes.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


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
        resume = store.files(spec.key).has_checkpoint()
        if verbose:
            write_line(f"[run] {spec.key}: {'resuming' if resume else 'training'}")
        return train_locked(spec, store, resume=resume, progress=progress, main=True)


def train_locked(
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
        resolve_fit(spec.fit)(config)
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
