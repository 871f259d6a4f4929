# Both main targets bootstrap their own virtual environment (.venv), re-installing when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

RUN ?= demo
TARGET ?= 50
ARGS ?=

.PHONY: generate test test-all lint typecheck format clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

## generate: a Self-Instruct run on the embedded local model (outputs/$(RUN)); re-run to resume
generate: $(STAMP)
	$(BIN)/self-instruct generate --run-name $(RUN) --target $(TARGET) $(ARGS)

## test: the fast test suite (no network, no API key)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## test-all: fast tests plus the slow ones (the real embedded model end to end)
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: mypy on the package (settings in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
