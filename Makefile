# The two commands that matter: `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.setup-stamp
NODE_STAMP := node_modules/.setup-stamp

.PHONY: setup run test lint format clean infra-check cosmos-server

NODE_DEPS := $(if $(wildcard package.json),$(NODE_STAMP))
# The Web Chat bundle the app serves (no CDN), copied out of node_modules so that the Azure
# package can leave node_modules (dev tools) out: azure.yaml's prepackage hook runs this too.
WEBCHAT_BUNDLE := webchat/vendor/webchat.js

setup: $(PY_STAMP) $(NODE_DEPS) $(WEBCHAT_BUNDLE)

# Re-installs only when the pinned requirements change: a second `make setup` is instant.
$(PY_STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=/path/to/python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: webchat-bundle
webchat-bundle: $(WEBCHAT_BUNDLE)

$(WEBCHAT_BUNDLE): $(NODE_STAMP)
	mkdir -p $(@D)
	cp node_modules/botframework-webchat/dist/webchat.js $@

run: setup
	$(BIN)/python app.py

# Tests run in parallel processes (pytest-xdist): they wait on sockets, subprocesses and Chromium
# more than they compute, so 4 processes on 2 cores take well under half the time of one.
# `make test TEST_WORKERS=0` runs them in this one process.
TEST_WORKERS ?= 4
test: setup lint infra-check
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# A local Cosmos DB protocol server for `COSMOS_ENDPOINT=https://127.0.0.1:8081 make run`; on
# another port when 8081 is taken: make cosmos-server COSMOS_SERVER_PORT=8082.
COSMOS_SERVER_PORT ?= 8081
cosmos-server: setup
	node tests/cosmos_server.js $(COSMOS_SERVER_PORT)

# checkov on the Bicep (pinned, offline, its own venv: its dependencies clash with the app's).
infra-check:
	bash infra/check.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) node_modules webchat/vendor .pytest_cache .mypy_cache .ruff_cache

# The Microsoft Teams app package (manifest + icons) for MicrosoftAppId and PUBLIC_BASE_URL from
# the environment or .env; see infra/teams/build_package.py.
.PHONY: teams-package
teams-package: setup
	$(BIN)/python -m infra.teams.build_package

# Load benchmark of the full turn against stock botbuilder (a few minutes on 2 cores); figures
# and chart in bench/results/latest.{json,png}. Bigger runs: make bench BENCH_ARGS="--turns 50".
.PHONY: bench
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

# Ten minutes of mixed load with injected faults (store, model, channel) on loopback; prints and
# writes bench/results/soak.json (attempted, answered, notices, lost, duplicates, errors by kind)
# and fails when anything was lost or answered twice. Shorter: make soak SOAK_SECONDS=60.
.PHONY: soak
SOAK_SECONDS ?= 600
soak: setup
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m bench.soak
