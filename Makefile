# Two entry points for people: `make run` and `make test`. Both set everything up first
# (a venv in .venv with the package installed, and a Chromium), so they work on a fresh machine.

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test lint typecheck unit browser setup clean

run: setup
	$(BIN)/browserd

test: setup lint typecheck unit

setup: $(STAMP) browser

$(STAMP): pyproject.toml
	scripts/ensure-python.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

browser:
	scripts/ensure-browser.sh

lint: $(STAMP)
	$(BIN)/ruff check daemon client tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
