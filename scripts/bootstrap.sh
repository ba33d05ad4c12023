#!/usr/bin/env bash
# Set up everything qff needs on a fresh Debian/Ubuntu machine: Debian's psi4 (where apt
# exists), a virtual environment in .venv, and the package with pinned versions.
# Idempotent: a second run only checks. Usage: scripts/bootstrap.sh [extra,...]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

if ! command -v psi4 >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "[bootstrap] installing Debian's psi4 (reference engine)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends psi4 >/dev/null
  else
    echo "[bootstrap] no apt-get: install psi4 yourself (README: conda install -c conda-forge psi4)" >&2
  fi
fi

stamp="$VENV/.qff-installed-$EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[bootstrap] installing qff[$EXTRAS] with pinned versions (constraints.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
  touch "$stamp"
fi
