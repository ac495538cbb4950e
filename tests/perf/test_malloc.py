"""attnact.perf.malloc: glibc told to keep freed memory, checked by the page faults that a
freed and reallocated 16 MiB tensor costs (in a subprocess: the policy is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

REALLOCATE = """
import resource, sys
import torch
from attnact.perf.malloc import keep_freed_memory

policy = keep_freed_memory() if sys.argv[1] == "keep" else "defaults"

def touch():
    t = torch.empty(4 * 2**20)  # 16 MiB
    t.fill_(1.0)  # writes every page

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

touch()
before = faults()
touch()
print(policy)
print(faults() - before)
"""


def faults_of_second_allocation(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", REALLOCATE, mode], capture_output=True,
                         text=True, timeout=300, check=True).stdout.splitlines()
    return out[-2], int(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_the_next_tensor():
    pages = 4 * 2**20 * 4 // 4096
    policy, kept = faults_of_second_allocation("keep")
    assert policy.startswith("glibc ") and "M_TRIM_THRESHOLD" in policy
    assert kept < pages // 20, kept
    # with glibc's defaults the block went back to the system and is faulted in again
    _, default = faults_of_second_allocation("default")
    assert default > pages // 2, default
