# latchkey task runner. Every routine action is a target here; CI (.ci/run) calls `make test`.
# `make help` lists the targets: the text after `##` on each target's line.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install node-deps consul postgres-bin schemas dev test lint fmt typecheck proto \
	check unasync unasync-check bench clean

help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Both distributions, editable, with their dev extras. Re-runs only when a pyproject changes;
# an interrupted run is resumed (the stamp is written only once pip has finished).
$(STAMP): pyproject.toml clients/python/pyproject.toml scripts/install-venv.sh
	@bash scripts/install-venv.sh $(PYTHON) $(VENV)
	@touch $@

install: $(STAMP) ## create .venv and install both distributions with their dev extras (incl. OpenBao's bao)

# The Node SDK's packages (clients/node), exactly as package-lock.json pins them. Re-runs only
# when the manifest or the lockfile changes; fails with instructions when Node.js 20+ is missing.
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@bash $(NODE_DIR)/scripts/ensure-node.sh
	@echo "==> installing the Node SDK's packages (npm ci in $(NODE_DIR))" >&2
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(NODE_STAMP) ## install the Node SDK's packages (npm ci from the committed lockfile)

consul: ## provision the real consul binary (LATCHKEY_CONSUL_BIN, PATH, or Debian's package into .cache/)
	@bash scripts/provision-consul.sh >/dev/null

postgres-bin: ## make sure PostgreSQL's server binaries exist (installs Debian's package as root)
	@bash scripts/ensure-postgres.sh

schemas: install ## fetch the schemas the deploy tests validate against into .cache/schemas/
	@bash scripts/fetch-schemas.sh >/dev/null

dev: install consul postgres-bin ## set everything up and run the local stack in the foreground
	$(VENV)/bin/latchkey-server dev $(if $(filter file,$(TRACING)),--trace-file .latchkey/traces.jsonl,)

test: install node-deps consul postgres-bin schemas ## set everything up and run the whole test suite (PYTEST_ARGS=...)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install ## mypy --strict on server/, clients/python/ and bench/
	$(VENV)/bin/mypy

proto: install node-deps ## regenerate the latchkey.v1 stubs (Python and Node) from proto/ (never by hand)
	bash scripts/gen-proto.sh
	bash scripts/gen-proto-node.sh

unasync: install ## regenerate the SDK's blocking client (_sync/) from the asyncio one (_async/)
	$(PY) scripts/unasync.py

unasync-check: install ## fail when _sync/ is not what unasync makes of _async/
	$(PY) scripts/unasync.py --check

check: lint unasync-check ## lint, the proto drift test and the sync/async drift check
	$(VENV)/bin/pytest -q tests/test_proto_drift.py

bench: install consul postgres-bin ## run the benchmarks, print a table, write .latchkey/bench.json (QUICK=1: short)
	$(PY) -m bench $(if $(QUICK),--quick,)

clean: ## remove .venv, caches and .latchkey/
	rm -rf $(VENV) .cache .latchkey .mypy_cache .ruff_cache .pytest_cache
