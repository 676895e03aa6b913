# Two entry points for people: `make run` and `make test`. Both set everything up first
# (a venv in .venv with the package installed, and a Chromium; for the tests also OpenSSH's
# client and an sshd binary unpacked into the venv, never a service, which the SSH tests
# start on a loopback port), so they work on a fresh machine.

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed
# Third-party CDP clients the tests attach with (puppeteer-core: never downloads a browser).
JS_STAMP    := node_modules/.installed

.PHONY: run test lint typecheck unit browser ssh setup clean soak bench bench-quick

run: setup
	$(BIN)/browserd

test: setup ssh $(JS_STAMP) lint typecheck unit

setup: $(STAMP) browser

$(STAMP): pyproject.toml setup.py
	scripts/ensure-python.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

browser:
	scripts/ensure-browser.sh

ssh:
	scripts/ensure-ssh.sh $(VENV)/openssh

$(JS_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(JS_STAMP)

# Also fails while client/_sync/ is stale: it is generated from client/_async/.
lint: $(STAMP)
	$(BIN)/ruff check daemon client tests scripts setup.py
	$(BIN)/python scripts/unasync.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not slow"

# The reliability suite at length, then its report: ten times the fuzz inputs, more fault
# cycles, and the long load run (BROWSERD_SOAK_S seconds, default 600) instead of the quick one.
soak: setup
	BROWSERD_FUZZ_PROFILE=soak $(BIN)/pytest tests/reliability -k "not load_quick"

# Benchmarks (bench/, results in BENCHMARKS.md): not part of `make test`. bench-quick is the
# CI smoke run; its report goes to /tmp so it never replaces the real numbers.
bench: setup ssh $(BENCH_STAMP)
	$(BIN)/python -m bench

bench-quick: setup ssh $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
