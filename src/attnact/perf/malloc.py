"""The C library allocator's policy for measurements: keep freed memory in the process.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc hands multi-MiB blocks back
to the operating system when they are freed (``munmap`` above its mmap threshold, heap
trimming above its trim threshold), so the next step's tensors are fresh pages that fault in
one 4 KiB page at a time on first write. How much of a training step that costs depends on
which other models share the process and on the order of allocations, not on the model
measured: in resnet_cifar b = 3 steps it moved the compiled ReLU network between about 145
and 200 ms per step, with 0 and 40 000 page faults per step, and the interleaved ATAC/ReLU
ratio with it (``benchmarks/atac-overheads-issue14.md``). ``attnact bench`` therefore keeps
freed memory in the process for the whole run (:func:`keep_freed_memory`), which takes the
faults out of every variant alike; ``--default-malloc`` measures with the C library's
defaults instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_TRIM = 2**31 - 1  # the largest value mallopt takes (an int): never trim
_MMAP = 32 * 2**20  # the largest mmap threshold glibc accepts: blocks up to 32 MiB from the heap


def keep_freed_memory() -> str | None:
    """Make glibc keep freed memory for reuse instead of returning it to the operating system
    (``mallopt(M_TRIM_THRESHOLD)`` at 2 GiB - 1: never trim the heap; ``mallopt(
    M_MMAP_THRESHOLD)`` at its maximum, 32 MiB, which also ends glibc's adjusting of it: blocks
    up to that size come from the heap, larger ones are still mapped and unmapped). Returns what
    was set, for the report, or
    None where the C library is not glibc (nothing is changed then). For the rest of the
    process: memory freed is never given back."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
    if libc.mallopt(M_TRIM_THRESHOLD, _TRIM) != 1 or libc.mallopt(M_MMAP_THRESHOLD, _MMAP) != 1:
        return None
    return (f"glibc {version} malloc keeping freed memory (mallopt M_TRIM_THRESHOLD = {_TRIM}, "
            f"M_MMAP_THRESHOLD = {_MMAP})")
