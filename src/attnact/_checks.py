"""Argument checks shared by the whole package: each raises a ValueError that names the argument,
what is allowed and what it got. ``bool`` is rejected where a number is expected: it is an
``int`` subclass, and ``channels=True`` is a mistake, not 1."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

__all__ = [
    "check_bool",
    "check_choice",
    "check_directory_argument",
    "check_fraction",
    "check_int",
    "check_kwargs",
    "check_positive_int",
    "check_positive_number",
]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_int(
    name: str, value: object, minimum: int = 1, maximum: int | None = None, *, why: str = ""
) -> int:
    """An integer in [minimum, maximum]; ``why`` explains the bound in the message."""
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f"an integer >= {minimum}" if maximum is None else (
            f"an integer in [{minimum}, {maximum}]"
        )
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be {allowed}{reason}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False`` only: a string such as ``"no"`` is truthy and would mean the
    opposite of what was written."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    if not _is_real(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_fraction(name: str, value: object) -> float:
    if not _is_real(value) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_kwargs(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name} must be a dict of keyword arguments or None, got {value!r}")
    return dict(value)


def check_known_keys(keys: Iterable[str], allowed: Sequence[str], *, what: str) -> None:
    """``ValueError`` for the first key not in ``allowed``, with close matches and the list:
    ``unknown TrainConfig field 'lrr'; did you mean lr? (allowed: ...)``."""
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown {what} {key!r}{hint} (allowed: {', '.join(allowed)})")


def check_directory_argument(name: str, value: str | os.PathLike[str] | None) -> None:
    """``value`` names a directory that exists or can be made: not ``""`` (``Path("")`` is the
    working directory) and not an existing file."""
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or not str(os.fspath(value)).strip():
        raise ValueError(f"{name} must name a directory, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {path} is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {path}: {parent} is a file, not a directory")
            break
