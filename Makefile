# The two commands of the quick start: `make demo` (main job) and `make test` (tests).
# Each sets up what it needs first (scripts/bootstrap.sh: psi4 via apt, .venv, pinned deps).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test files are shared out to one worker per core, at most 4; a file's tests stay together and in order
# (module fixtures, the one SLURM cluster), and each worker makes its own session fixtures and Prefect
# server. XDIST="-n 0" runs everything in one process.
XDIST ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: demo test bench lint setup lock

demo:
	@scripts/bootstrap.sh dev
	$(BIN)/qff demo

test:
	@scripts/bootstrap.sh dev
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

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
