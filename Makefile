# The README's two commands: `make demo` and `make test`. CI runs `make test` with CI=true, then
# `make test-compose` (the Docker tier: an engine, images built offline, the compose stack).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP     = $(VENV)/.installed
DEV_STAMP = $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-compose lint format bench bench-tiny clean install

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
	$(BIN)/pytest -q -m "not compose" $(PYTEST_ARGS)

test-fast: $(DEV_STAMP)
	$(BIN)/pytest -q -m "not slow and not compose" $(PYTEST_ARGS)

# The Docker tier (~20 min the first time on 2 cores, most of it building the torch image once):
# starts an engine if none runs (and stops only that one), builds the images offline, runs the
# compose stack and the docker executor against it.
test-compose: $(DEV_STAMP)
	@PYTHON=$(BIN)/python scripts/ensure-docker.sh start
	@status=0; images=$$(PYTHON=$(BIN)/python scripts/ensure-docker.sh images) || status=$$?; \
	  if [ $$status = 0 ]; then \
	    env $$images $(BIN)/pytest -q -m compose -p no:cacheprovider $(PYTEST_ARGS) || status=$$?; \
	  fi; \
	  scripts/ensure-docker.sh stop; exit $$status

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
