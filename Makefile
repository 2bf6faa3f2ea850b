# treesurv — every target is a thin wrapper; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
PROMTOOL := $(VENV)/bin/promtool
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
# The bundle the service runs: the production version, materialised by `make production`.
MODEL_DIR ?= models/production
# Where `make serve` logs every prediction (`treesurv monitor drift --log` reads it); empty: off.
PREDICTION_LOG_DIR ?= logs/predictions

# Pipeline stages call `treesurv`; make them find the project's own.
export PATH := $(BIN):$(PATH)

.PHONY: help setup data pipeline serve run test test-e2e test-fast browser lint typecheck security audit format bench clean \
	production retrain lint-workflows remote-from-env shared-mirror publish image redeploy

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) $(PROMTOOL) ## Prepare .venv with the treesurv command (pinned versions)

# uv installs the pinned set in seconds where pip takes minutes (same pins, same
# resolution); pip stays in the venv for the tools that call it. Bytecode is compiled
# at install (pip's default, not uv's), as is the project's own: with
# PYTHONDONTWRITEBYTECODE set, as on this machine, nothing else ever writes it, and
# every `treesurv` or `dvc` process would compile its imports again (about 0.5 s each).
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==25.3" "uv==0.13.9"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	  -c requirements/constraints.txt -e ".[serve,train,dev]"
	$(BIN)/python -m compileall -q -j 0 src
	@touch $(STAMP)

# promtool checks the Prometheus config and alert rules in the tests: the binary is
# unpacked from Debian's prometheus package into .venv (nothing installed system-wide).
$(PROMTOOL): | $(STAMP)
	@tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } && \
	  dpkg-deb -x prometheus_*.deb pkg && install -m 0755 pkg/usr/bin/promtool $(abspath $(PROMTOOL)) && \
	  rm -rf $$tmp

data: setup ## Pull the study data from the DVC remote
	$(BIN)/dvc pull data/raw/Tree_Data.csv.dvc

pipeline: data ## Run the DVC pipeline (validate, prepare, train, evaluate, package)
	$(BIN)/dvc repro

serve: setup ## Serve the model bundle $(MODEL_DIR) on http://$(HOST):$(PORT)
	TREESURV_PREDICTION_LOG_DIR=$(PREDICTION_LOG_DIR) \
	  $(BIN)/treesurv serve --host $(HOST) --port $(PORT) --workers $(WORKERS) --model $(MODEL_DIR)

production: setup ## Put the production model at $(MODEL_DIR) (the pipeline's until a first promotion)
	$(BIN)/treesurv registry checkout --out $(MODEL_DIR)

run: pipeline production serve ## Set up, pull the data, run the pipeline and serve the champion

retrain: setup ## Continuous training: retrain, compare with production, promote if as good (DATA=new.csv adds rows first)
	$(BIN)/treesurv retrain $(if $(DATA),--data $(DATA))

# Two xdist workers (the machine's two cores), each test file on one worker so that
# a module's fixtures are built once, in collection order (not biggest first): the
# files that need the trained project come last, while it builds in the background
# (tests/conftest.py). Random order: pytest-randomly prints its seed; replay an order
# with PYTEST_ARGS=--randomly-seed=N, or PYTEST_ARGS="-p no:randomly".
XDIST ?= -n 2 --dist loadfile --no-loadscope-reorder
test: setup browser checks ## Lint, type-check, security checks, the docs build and the tests (all but e2e)
	$(BIN)/pytest $(XDIST) -m "not e2e" --durations=15 $(PYTEST_ARGS)

# The static checks, two at a time (each is single-threaded).
.PHONY: checks
checks: setup ## Lint, type-check, security checks and the docs build, two at a time
	$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck security docs

# The end-to-end runs that take minutes each: the continuous-training loop, the
# crash-injection matrices, the soak runs and the long fuzz. CI runs them after `make test`.
test-e2e: setup browser ## The end-to-end tests (minutes each; CI runs them after make test)
	$(BIN)/pytest $(XDIST) -m e2e --durations=15 $(PYTEST_ARGS)

# The web page's test drives a real headless browser: Debian's chromium and its
# WebDriver (system packages; selenium itself is a dev dependency). A Chrome and
# chromedriver already there (GitHub's Ubuntu runners have them) are used as they are.
browser: node_modules/.installed ## Install chromium and chromium-driver (Debian packages) and axe-core (npm) for the browser test
	@{ command -v chromium || command -v google-chrome; } >/dev/null && \
	  { command -v chromedriver || test -x "$$CHROMEWEBDRIVER/chromedriver"; } >/dev/null || { \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium chromium-driver; }

# axe-core, pinned in package-lock.json, injected into the page by the browser test.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

# Hermetic: tiny in-memory frames, no ../shared, no DVC, no git (tests/conftest.py
# fails a fast test that reaches for them). Two workers, tests dealt one by one
# (their fixtures are cheap enough to build in both).
test-fast: setup ## Only the quick, hermetic tests (no data remote, no pipeline, no servers, no git)
	$(BIN)/pytest -n 2 -m "not slow" $(PYTEST_ARGS)

.PHONY: docs
docs: setup ## Build the docs site into site/ (mkdocs build --strict; tables generated from the code)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: setup ## Ruff and the layers' import contracts (import-linter)
	$(BIN)/ruff check src tests bench notebooks docs/hooks.py
	$(BIN)/ruff format --check src tests bench notebooks docs/hooks.py
	$(BIN)/lint-imports

typecheck: setup ## Mypy (strict)
	$(BIN)/mypy

security: setup audit ## Bandit on src/ (skips justified in pyproject.toml) and the dependency audit
	$(BIN)/bandit -q -c pyproject.toml -r src

audit: setup ## Known vulnerabilities in the pins (pip-audit; warns when the database is unreachable, AUDIT_STRICT=1 fails then)
	$(BIN)/python bin/audit-deps.py

lint-workflows: setup ## actionlint (with shellcheck) over .github/workflows
	$(BIN)/actionlint -shellcheck $(BIN)/shellcheck

# --- what the GitHub workflows call (each runs locally too) ---
remote-from-env: setup ## Make $$DVC_REMOTE_URL (s3://, gs://, gdrive://, ...) the default DVC remote
	@test -n "$$DVC_REMOTE_URL" || { echo "error: DVC_REMOTE_URL is not set" >&2; exit 2; }
	@scheme="$${DVC_REMOTE_URL%%://*}"; case "$$scheme" in \
	  s3|gs|gdrive|azure|ssh|http|https|webdav|oss|hdfs) \
	    $(BIN)/pip install --quiet -c requirements/constraints.txt "dvc-$${scheme/https/http}";; \
	esac
	$(BIN)/dvc remote add --local --force --default ci "$$DVC_REMOTE_URL"

shared-mirror: setup ## CI: copy the data from the default remote to ../shared/dvc-remote, where the tests expect it
	$(BIN)/dvc pull data/raw/Tree_Data.csv.dvc
	$(BIN)/dvc push --remote shared data/raw/Tree_Data.csv.dvc

publish: ## Push the commit and registry tags that `make retrain` made (with their commit)
	git push --atomic --follow-tags origin HEAD

IMAGE ?= treesurv:dev
image: ## Build the service image with the bundle at $(MODEL_DIR) (needs Docker)
	docker build -f deploy/Dockerfile --build-arg MODEL_DIR=$(MODEL_DIR) -t $(IMAGE) .

redeploy: ## Tell the platform to deploy IMAGE: POST to $$DEPLOY_HOOK_URL or run $$DEPLOY_HOOK_COMMAND
	@IMAGE="$(IMAGE)" bash .github/scripts/redeploy.sh

format: setup ## Format and fix what ruff can
	$(BIN)/ruff check --fix src tests bench notebooks docs/hooks.py
	$(BIN)/ruff format src tests bench notebooks docs/hooks.py

bench: pipeline ## Run the benchmarks in bench/ (HTTP load with wrk, in-process, 1M-row file)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq wrk; }
	$(BIN)/python bench/run.py

clean: ## Remove the venv and caches (not the data or DVC cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
