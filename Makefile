# The two commands of the quick start: `make demo` (main job) and `make test` (tests).
# Each sets up what it needs first (scripts/bootstrap.sh: psi4 via apt, .venv, pinned deps).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test bench lint setup lock

demo:
	@scripts/bootstrap.sh dev
	$(BIN)/qff demo

test:
	@scripts/bootstrap.sh dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench:
	@scripts/bootstrap.sh dev,bench
	$(BIN)/python benchmarks/bench_exact.py

lint:
	@scripts/bootstrap.sh dev
	$(BIN)/ruff check qff_core flows tests benchmarks
	$(BIN)/lint-imports

setup:
	@scripts/bootstrap.sh dev,bench

# Re-pin: resolve the newest allowed versions in a scratch venv and write constraints.txt.
lock:
	rm -rf /tmp/qff-lock && python3 -m venv /tmp/qff-lock
	/tmp/qff-lock/bin/pip install -q ".[dev,bench]"
	/tmp/qff-lock/bin/pip freeze --exclude qff > constraints.txt
