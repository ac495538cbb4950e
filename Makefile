# Quickstart: `make demo` runs the main job, `make test` runs the tests. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The pinned CPU wheel is installed before the package: a looser torch requirement resolved in a
# fresh environment would download the CUDA build (several GB).
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: setup data test test-slow test-all lint demo readme docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --disable-pip-version-check $(TORCH_PIN)
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The embedded dataset, Fashion-MNIST: found locally, else Debian's package where apt is usable
# (root), else downloaded from the official host (checksums verified).
data: $(STAMP)
	@if $(PY) -c "import sys; from attnact.data import is_available; \
	sys.exit(0 if is_available('fashion_mnist') else 1)"; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			dataset-fashion-mnist; \
	else \
		$(VENV)/bin/attnact data fetch fashion_mnist; \
	fi

# Fast suite: everything but the slow end-to-end runs.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

# ruff over the repository, then mypy (strict) over src/attnact as [tool.mypy] configures it
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The main job on the embedded default: `attnact compare` with no arguments (mnist_conv on
# Fashion-MNIST, 7 activations x 2 seeds); re-running skips finished runs.
demo: $(STAMP) data
	$(VENV)/bin/attnact compare

# The documentation site (mkdocs.yml, docs/): built with warnings as errors into site/. The
# docs tools are the [docs] extra, installed here on first use so `make setup` stays lean.
$(DOCS_STAMP): $(STAMP)
	$(PIP) install -q --disable-pip-version-check -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Refresh the activation table in README.md from the registry (a test checks it is current).
readme: $(STAMP)
	$(PY) -m attnact.units.catalog README.md

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
