"""tests/units on ``sys.path``, so that its test modules import ``atac_helpers`` by name (the
suite runs in importlib mode, without packages)."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
