# `make run` starts xtag on a fresh machine; `make test` runs every test;
# `make check` is the inner loop: lint, import rules and the tests not marked slow.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/python -m xtag.devserver

# The Node server SDKs for their tests, when this machine has npm (else they skip)
NODE_SDKS := tests/system/node/node_modules/.installed
$(NODE_SDKS): tests/system/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/system/node --silent --no-audit --no-fund && touch $@; \
	else echo "npm is missing: the Node SDK tests will skip"; fi

test: $(VENV)/.test-deps $(NODE_SDKS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

check: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	# four processes on two cores: most of these tests wait (retry delays, RQ's burst teardown)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -q -m "not slow" -n 4

format: $(VENV)/.test-deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.test-deps
	$(BIN)/python bench/collector.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
