#!/usr/bin/env bash
# The README's test command: set up .venv (CPU torch, no CUDA packages) and run lint + the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
# DeepSpeed builds its CPU ops on first use and loads a build of another DeepSpeed version found in the shared
# ~/.cache/torch_extensions without rebuilding (AttributeError in deepspeed_shm_comm): a folder of this venv's own
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}"
pip install -q -r requirements.txt
ruff check .
ruff format --check .
# Two workers (one per core of the CI machine; PYTEST_WORKERS to change), each test file on one worker so that
# a file's module fixtures (the straight training run that several e2e tests compare with) are built once.
# The slowest tests are listed at the end.
OMP_NUM_THREADS=1 python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile --durations=25 "$@"
