#!/usr/bin/env bash
# The README's test command: set up .venv (CPU torch, no CUDA packages) and run lint + the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
ruff check .
ruff format --check .
OMP_NUM_THREADS=1 python -m pytest -q "$@"
