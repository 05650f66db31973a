# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test services-up services-down lint bench

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is not installed: install Python 3.11 and run again."; exit 1; }
	@echo "Installing the Python environment into $(VENV) (first run only)..."
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

## run: Kafka, Redis, the worker, the read API and demo traffic (Ctrl-C stops; services keep running)
run: $(STAMP)
	$(VENV)/bin/python -m worker up

## test: provision Kafka and Redis, then run the whole test suite against them
test: $(STAMP)
	$(VENV)/bin/python -m worker services up
	$(VENV)/bin/python -m pytest -ra --durations=25

## bench: provision Kafka and Redis, run every benchmark at 1M visitors (VISITORS=10000000 for 10M), print one table
bench: $(STAMP)
	$(VENV)/bin/python bench/suite.py $(if $(VISITORS),--visitors $(VISITORS))

services-down: $(STAMP)
	$(VENV)/bin/python -m worker services down

## lint: formatting, lint rules, types, and the layer contracts (pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff format --check worker tests
	$(VENV)/bin/ruff check worker tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo
