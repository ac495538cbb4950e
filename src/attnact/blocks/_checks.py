"""Argument checks shared by the blocks (ValueErrors that name the argument and what is allowed)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_choice", "check_positive_int", "check_positive_number"]


def check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; channels=True is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value
