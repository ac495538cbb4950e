# Quickstart: `make demo` runs the main job, `make test` runs the tests. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The pinned CPU wheel is installed before the package: a looser torch requirement resolved in a
# fresh environment would download the CUDA build (several GB).
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup test test-all lint demo readme clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --disable-pip-version-check $(TORCH_PIN)
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Fast suite: everything but the slow end-to-end runs.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(VENV)/bin/attnact demo

# Refresh the activation table in README.md from the registry (a test checks it is current).
readme: $(STAMP)
	$(PY) -m attnact.units.catalog README.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
