# treesurv — every target is a thin wrapper; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=

# Pipeline stages call `treesurv`; make them find the project's own.
export PATH := $(BIN):$(PATH)

.PHONY: help setup data pipeline serve run test test-fast lint typecheck format bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Prepare .venv with the treesurv command (pinned versions)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==25.3"
	$(BIN)/pip install --quiet --disable-pip-version-check \
	  -c requirements/constraints.txt -e ".[serve,train,dev]"
	@touch $(STAMP)

data: setup ## Pull the study data from the DVC remote
	$(BIN)/dvc pull data/raw/Tree_Data.csv.dvc

pipeline: data ## Run the DVC pipeline (validate, prepare, train, evaluate, package)
	$(BIN)/dvc repro

serve: setup ## Serve the model bundle on http://$(HOST):$(PORT)
	$(BIN)/treesurv serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

run: pipeline serve ## Set up, pull the data, run the pipeline and serve the model

test: setup lint typecheck ## Lint, type-check and run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup ## Only the quick tests (no real pipeline, no servers)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: setup ## Ruff
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: setup ## Mypy (strict)
	$(BIN)/mypy

format: setup ## Format and fix what ruff can
	$(BIN)/ruff check --fix src tests $(wildcard bench)
	$(BIN)/ruff format src tests $(wildcard bench)

bench: setup ## Run the benchmarks in bench/
	$(BIN)/python bench/run.py

clean: ## Remove the venv and caches (not the data or DVC cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
