# `make demo` and `make test` work on a fresh machine: they create .venv, install the pinned stack,
# then run. Everything else is a convenience on top.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
DEMO_OUT ?= runs/demo
CORE_VENV ?= build/core-venv

.PHONY: setup test test-fast check-core lint format demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,test]'
	rm -f $(VENV)/.installed-*
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every test, the slow tier (pipeline, sweeps, parity, serving, multi-host) included.
test: lint
	$(BIN)/python -m pytest -n 2

# Day-to-day: the linter and the unit tests, without the tests marked slow.
test-fast: lint
	$(BIN)/python -m pytest -n 2 -m "not slow"

# The numerical core alone: a fresh venv with the package and no extras (from the lock), then the
# README's pure-function example and the core-only checks of tests/core_only_test.py.
check-core:
	rm -rf $(CORE_VENV)
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt .
	$(CORE_VENV)/bin/python tests/core_only_test.py

demo: $(STAMP)
	$(BIN)/flame-jax demo --out $(DEMO_OUT) --overwrite

bench: $(STAMP)
	$(BIN)/python experiments/bench/metrics_bench.py

clean:
	rm -rf $(VENV) runs build *.egg-info
