"""Argument checks for the host builders: ValueErrors that name the argument and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check_choice", "check_fraction", "check_int", "check_kwargs"]


def check_int(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    # bool is an int subclass; blocks=True is a mistake, not 1.
    bad = isinstance(value, bool) or not isinstance(value, int)
    if not bad and (value < minimum or (maximum is not None and value > maximum)):
        bad = True
    if bad:
        allowed = f"an integer >= {minimum}" if maximum is None else (
            f"an integer in [{minimum}, {maximum}]"
        )
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value  # type: ignore[return-value]


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_fraction(name: str, value: object) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or math.isnan(value) or not 0.0 <= value <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_kwargs(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name} must be a dict of keyword arguments or None, got {value!r}")
    return dict(value)
