"""Resumable checkpoints (and, re-exported from :mod:`attnact.fileio`, the atomic writers every
file of a run directory goes through).

A checkpoint is a ``torch.save``d dict holding only tensors, containers and Python scalars, so it
loads with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code. The
numpy RNG state is stored as a tensor for that reason.

The file carries its own checksum: a one-line header ``attnact-checkpoint sha256 <hex>`` followed
by the ``torch.save`` bytes. One atomic write holds both, so there is no moment at which a kill
leaves a checkpoint and a checksum that disagree, and :func:`load_checkpoint` refuses a file
whose bytes changed afterwards (a flipped bit, a truncated copy) before torch reads any of it.
Files written before the header existed load with a warning that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnact.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "capture_rng_state",
    "checkpoint_digest",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


_MAGIC = b"attnact-checkpoint sha256 "
_HEADER_LEN = len(_MAGIC) + 64 + 1  # magic, hex digest, newline


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted or read; the message names it and what to do."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> str:
    """``torch.save(state)`` to ``path`` atomically, behind its SHA-256; returns the digest.

    Serialised to memory first: torch.save then never sees the temporary file, and a failure
    while pickling leaves no partial file behind.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    atomic_write_bytes(path, _MAGIC + digest.encode("ascii") + b"\n" + payload)
    return digest


def checkpoint_digest(path: str | Path, *, allow_legacy: bool = False) -> str:
    """The SHA-256 of a checkpoint's contents, verified against the one it carries.

    Args:
        path: the checkpoint file.
        allow_legacy: accept a checkpoint of an older attnact that carries no checksum (with a
            warning; its digest is computed, not verified).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a checkpoint, was written without a checksum (unless
            ``allow_legacy``), or its bytes do not match the checksum (corrupted since).
    """
    digest, _payload = _verified_payload(Path(path), allow_legacy=allow_legacy)
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (verified, ``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is corrupted, truncated or not a checkpoint.
    """
    path = Path(path)
    _digest, payload = _verified_payload(path, allow_legacy=True)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except (EOFError, OSError, RuntimeError, ValueError, zipfile.BadZipFile,
            pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); {_WHAT_TO_DO}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint; "
                              f"{_WHAT_TO_DO}")
    return state


_WHAT_TO_DO = ("move the run directory aside and train the run again (its metrics.csv and "
               "summary.json are kept)")


def _verified_payload(path: Path, *, allow_legacy: bool) -> tuple[str, bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        if not data:
            raise CheckpointError(f"{path}: empty file, not a checkpoint; {_WHAT_TO_DO}")
        if allow_legacy and data.startswith(b"PK"):  # a bare torch.save zip: older attnact
            warnings.warn(f"{path} has no checksum (written by an older attnact): it is loaded "
                          "unverified", stacklevel=3)
            return hashlib.sha256(data).hexdigest(), data
        raise CheckpointError(
            f"{path}: no attnact checkpoint header" + (
                " (an older checkpoint without a checksum)" if data.startswith(b"PK") else
                " (not a checkpoint, or its first bytes are corrupted)") + f"; {_WHAT_TO_DO}")
    header, payload = data[:_HEADER_LEN], data[_HEADER_LEN:]
    recorded = header[len(_MAGIC):-1].decode("ascii", errors="replace")
    actual = hashlib.sha256(payload).hexdigest()
    if header[-1:] != b"\n" or recorded != actual:
        raise CheckpointError(
            f"{path}: corrupted (its contents do not match the SHA-256 recorded when it was "
            f"written: {len(payload)} bytes, sha256 {actual[:12]}… not {recorded[:12]}…); "
            f"{_WHAT_TO_DO}"
        )
    return actual, payload


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG a training step may draw from.

    torch CPU, every CUDA device (if CUDA is initialised), numpy's legacy global generator and
    Python's ``random``.
    """
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the legacy global MT19937 state (legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state[0],
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["bit_generator"],
            npst["key"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    # weights_only loading may turn the inner tuple into a list; random.setstate needs tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
