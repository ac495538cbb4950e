"""Placeholder: native operators (filled in below)."""
from collections.abc import Callable
from typing import Any

TRAFFIC: dict[str, Callable[[Any, Any], int]] = {}
