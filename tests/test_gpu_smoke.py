"""scripts/gpu_smoke.py on a CPU with tiny models: the script a GPU user runs first works and reports per phase."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _smoke_module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts/gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_failing_phase_is_the_innermost_frame():
    smoke = _smoke_module()
    trace = 'File "trainer.py", in fit\n  update_round(...)\nFile "update.py", in optimizer_step\nRuntimeError: oom'
    assert smoke.failing_phase(trace) == "update"
    assert smoke.failing_phase("in no_grad_logprobs\n  in hf_generate\nboom") == "rollout"
    assert smoke.failing_phase("ImportError: no module") == "setup"


@pytest.mark.slow
def test_gpu_smoke_runs_on_a_cpu_in_bf16_autocast(tmp_path):
    cmd = [
        sys.executable, str(REPO / "scripts/gpu_smoke.py"), "--tiny", "--dtype", "bfloat16", "--steps", "1",
        "--prompts", "2", "--n", "2", "--max-new-tokens", "6", "--micro-batch-size", "2", "--work", str(tmp_path),
        "--only", "vl", "text-zero2", "vl-zero3-launcher",
    ]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "GPU smoke: PASS"
    for case in ("vl", "text-zero2", "vl-zero3-launcher"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{case}: 1 rounds"))
        phases = [line.split()[0] + " " + line.split()[1] for line in lines[start + 1 : start + 4]]
        assert phases == ["rollout peak", "old log-probs", "update peak"]
        assert all(float(line.split()[-2]) > 0 for line in lines[start + 1 : start + 4])  # tokens/s
