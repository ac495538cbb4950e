"""Fixtures of the train tests: the fake loaders and tiny model of fakes.py."""

import importlib.util
import sys
from pathlib import Path

import pytest

FAKES_PATH = Path(__file__).with_name("fakes.py")


def _load_fakes():
    name = "attnact_train_test_fakes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAKES_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def fakes():
    return _load_fakes()
