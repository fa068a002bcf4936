# Developer entry point; CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-unit services-up services-down services-status clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required; found " + sys.version.split()[0] + ". Set PYTHON=/path/to/python3.11.")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

services-up: install
	$(BIN)/python -m infra up

services-down:
	$(BIN)/python -m infra down

services-status:
	$(BIN)/python -m infra status

test: install lint services-up
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m 'not integration'

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The one-command demo: `make demo` on a generated site, `make demo CORPUS=/path/to/html`
# on a folder of HTML files (for example /usr/share/doc/python3.11/html).
.PHONY: demo demo-down
CORPUS ?=
PAGES ?= 2000
SPACE_KEYS ?=
TIMEOUT ?= 1800

demo: install
	$(BIN)/python -m demo up --pages $(PAGES) --timeout $(TIMEOUT) \
		$(if $(CORPUS),--corpus $(CORPUS)) $(if $(SPACE_KEYS),--space-keys $(SPACE_KEYS))

demo-down:
	$(BIN)/python -m demo down

# Benchmarks: write docs/benchmarks.md and docs/benchmarks.json. The peer loaders are
# installed on first use into their own virtual environment, .services/bench-venv.
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench bench-quick

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick
