#!/usr/bin/env bash
# GPU smoke test: a few training steps of the Geometry3K and text-math recipes' shapes with random models
# of realistic size (Qwen2.5-VL-3B and Qwen2.5-Math-1.5B configs), bf16, gradient checkpointing, HF rollouts, one
# process, plus ZeRO-2 when DeepSpeed imports. Needs a CUDA machine with a CUDA torch and this project installed
# (pip install -e .). Prints peak GPU memory and tokens/s per phase, then "GPU smoke: PASS" or FAIL with the phase.
# Options go to scripts/gpu_smoke.py (--max-new-tokens 3000 for the text recipe's full length, --only vl, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gpu_smoke.py "$@"
