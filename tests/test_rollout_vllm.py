"""The vLLM backend end to end (scripts/check_vllm.sh builds an environment where vLLM imports)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not importable here"),
]


def test_vllm_backend_generates_syncs_and_matches_trainer_logprobs_on_one_and_two_processes():
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mm_gmpo.vllm_check", "--tolerance", "1e-4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "vLLM check: PASSED" and "[FAIL]" not in result.stdout
    multi = [line for line in lines if line.startswith("multi-process: 2 ranks")]
    # Qwen2.5-VL: tensor parallel 1, and 2 with LoRA; then one for Qwen3-VL and one for Qwen3
    assert len(multi) == 4 and all(line.endswith("PASSED") for line in multi), multi
    for label in ("qwen3-vl", "qwen3"):  # each Qwen3 part: single process and the 2-process ZeRO-3 run
        part = [line for line in lines if line.startswith(f"{label}: ")]
        assert len(part) == 1 and "2 processes (ZeRO-3)" in part[0] and part[0].endswith("PASSED"), part
    assert "[ok] GPU runner (V2) accepts our requests" in result.stdout
