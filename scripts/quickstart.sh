#!/usr/bin/env bash
# The README's main command: set up .venv and train GMPO on the Geometry3K samples with a tiny Qwen2.5-VL.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
mm-gmpo train configs/geo3k_tiny.yaml "$@"
mm-gmpo plot runs/geo3k_tiny
