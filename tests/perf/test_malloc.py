"""attnact.perf.malloc: what keep_freed_memory asks of the C library, against a recording fake
of it, and that the real call succeeds on glibc (in a subprocess: the policy is process-wide).
Its effect on page faults is measured in benchmarks/atac-overheads-issue14.md; a fault count in
a test depends on the process's heap layout and is not stable enough to assert."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnact.perf import malloc


class FakeLibc:
    def __init__(self, glibc: bool = True, accepts: bool = True):
        self.calls: list[tuple[int, int]] = []
        self.accepts = accepts
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.99"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1 if self.accepts else 0


def keep_with(monkeypatch, lib: FakeLibc) -> str | None:
    monkeypatch.setattr(malloc.ctypes.util, "find_library", lambda name: "libc.so.6")
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: lib)
    return malloc.keep_freed_memory()


def test_never_trim_and_heap_blocks_up_to_32_mib(monkeypatch):
    lib = FakeLibc()
    policy = keep_with(monkeypatch, lib)
    # glibc's malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3; 32 MiB is the largest mmap
    # threshold glibc takes, 2^31 - 1 the largest int
    assert lib.calls == [(-1, 2**31 - 1), (-3, 32 * 2**20)]
    assert policy == ("glibc 2.99 malloc keeping freed memory (mallopt M_TRIM_THRESHOLD = "
                      "2147483647, M_MMAP_THRESHOLD = 33554432)")


def test_other_c_libraries_are_left_alone(monkeypatch):
    lib = FakeLibc(glibc=False)
    assert keep_with(monkeypatch, lib) is None
    assert lib.calls == []
    assert keep_with(monkeypatch, FakeLibc(accepts=False)) is None  # a refused value: not kept
    monkeypatch.setattr(malloc.ctypes.util, "find_library", lambda name: None)
    assert malloc.keep_freed_memory() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_takes_the_policy():
    code = "from attnact.perf.malloc import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.startswith("glibc ") and "M_MMAP_THRESHOLD = 33554432" in out, out
