"""One intra-op thread per test process (the suite runs under `pytest -n 2` on 2 cores), and
AReLU/ELSA kernels eager unless a test turns compilation on.

Their tensors are tiny, so threads buy nothing, and on a shared 2-core machine (or under
``pytest -n 2``) two OpenMP threads per process spin-wait on each other: a batch-2 ResNet-50
forward/backward measured 0.2 s with one thread and 2-3 s with two under load.

The fused kernels compile on first use (about 18 s cold on this machine); the eager path computes
the same values, so tests (and the subprocesses they start) run it, and only tests marked ``slow``
compile (``attnact.set_fused(True)`` inside the test).
"""

import os

import pytest
import torch

os.environ.setdefault("ATTNACT_NO_COMPILE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so neither the engine nor a sweep's runner
    handles it, and no failed/interrupted summary is written."""


@pytest.fixture
def kill_before_last_csv(monkeypatch):
    """Make the engine die (raise :class:`Killed`) after its last epoch's checkpoint, before that
    epoch's metrics.csv rewrite. Yields the exception class; the test's ``monkeypatch.undo()``
    lets the next run write normally."""
    import attnact.train.engine as engine

    write_csv = engine._Run._write_metrics_csv

    def killed(self):
        if len(self.history) == self.config.epochs:
            raise Killed
        write_csv(self)

    monkeypatch.setattr(engine._Run, "_write_metrics_csv", killed)
    yield Killed
