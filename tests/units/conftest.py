"""tests/units on ``sys.path``, so that its test modules import ``atac_helpers`` by name (the
suite runs in importlib mode, without packages); the native operators' switch for their tests."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def native_on() -> Iterator[None]:
    """The native operators switched on for one test, then back to automatic
    (``pytest.mark.usefixtures("native_on")`` in the native operators' test modules)."""
    from attnact.units import native

    native.set_native(True)
    yield
    native.set_native(None)
