"""Atomic file writes shared by every layer (run directories, checkpoints, reports).

A write goes to a temporary file in the destination directory, is flushed and fsynced, and is then
moved over the destination with ``os.replace``: a crash (or a kill from a job scheduler) leaves
either the old or the new file, never half of one. The directory is fsynced too, so the rename
itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "exclusive_lock",
    "remove_stale_temporaries",
]


def _fsync_dir(directory: Path) -> None:
    # Not possible on every platform (e.g. Windows); the rename is still atomic there.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries of atomic writes that a killed process left in ``directory``
    (``.<name>.<random>.tmp``); returns them. Call it only while holding the directory's
    writer lock: another writer's temporary is not stale."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for tmp in directory.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (temp file in the same dir, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory: os.replace is atomic only within one filesystem.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp makes the file 0600; the result gets what open() would give it (the umask)
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    # JSON has no NaN/Infinity; strict parsers reject Python's extension, so write null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _json_safe(obj.item())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; non-finite floats become ``null``."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; yields False
    at once, without waiting, if another open file (any process) holds it.

    ``flock`` locks die with their process, so a killed writer leaves no stale lock. On systems
    without ``fcntl`` (Windows) there are no advisory locks and this always yields True.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
