# The README's two commands: `make demo` and `make test`. CI runs `make test` with CI=true.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP     = $(VENV)/.installed
DEV_STAMP = $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench bench-tiny clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing gradpilot into $(VENV) (torch is large: a few minutes the first time)…"
	@# PYTHONWARNINGS: setuptools' editable-install notice is a warning block, not a problem
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --progress-bar off -e .
	@touch $@

$(DEV_STAMP): pyproject.toml $(STAMP)
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --progress-bar off -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gradpilot demo
	@echo "gradpilot is installed in $(VENV): run it as $(BIN)/gradpilot, or activate the"
	@echo "environment first (. $(VENV)/bin/activate) and type gradpilot --help"

test: $(DEV_STAMP)
	@scripts/ensure-postgres.sh
	@scripts/ensure-chromium.sh
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: $(DEV_STAMP)
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service worker tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format service worker tests bench
	$(BIN)/ruff check --fix .

bench: $(DEV_STAMP)
	@scripts/ensure-postgres.sh
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev,bench]'  # MLflow, the ingest baseline
	$(BIN)/python -m bench

bench-tiny: $(DEV_STAMP)
	$(BIN)/python -m bench --tiny

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
