"""Issue 17, scaled down for CI: on the text task chain_sum, `mm-gmpo train` with GMPO raises held-out accuracy
over a supervised warm start.

The same commands as ``scripts/does_it_learn.py --task text`` for its arm ``gmpo_short`` (configs/toy_text_gmpo.yaml
with the script's SHORT overrides: a 400-step warm start, then 25 rounds of 8 prompts and 4 updates, on worked
responses of 45..69 tokens, validated on 300 held-out prompts x 2 samples; the recorded setting's 150 rounds of 16
take about 15 minutes) for seed 1, on one thread, without the greedy validation pass: the setting of the recorded run
``gmpo_short-seed1`` of docs/does_it_learn/text/results.json (whose random streams predate derive_seed). ``val/accuracy`` is the mean over
the samples at the rollout temperature. It asks for a rise of RISE; what it measured is in MEASURED. Over six seeds
the recorded gain was +0.050 +- 0.034 (lowest +0.007): this test is one seed of it, not a bound for every seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy_text_gmpo.yaml")
RL_STEPS = 100
RISE = 0.04
# 358 s on a 2-core CPU beside other work. Since every seed is derived by one rule (mm_gmpo.seeds.derive_seed) the
# random streams differ from the recorded runs' (which measured 0.672 -> 0.752 for seed 1): this is seed 1 now
MEASURED = "0.555 -> 0.608 on 300 held-out prompts x 2 samples (seed 1, kernels pinned to AVX2)"

# The 400-step warm start at lr 2e-3 ends on a steep part of its learning curve, so the CPU's vector width alone
# moves where it lands: on the same seed, AVX-512 kernels gave nll 0.060 and held-out accuracy 0.37, AVX2 kernels
# nll 0.007 and 0.72 (the recorded runs). Both commands run with the kernels pinned to AVX2 (ATen's dispatch, MKL
# and oneDNN), so the test is the recorded run on any x86 CPU, not a different one per machine.
PINNED_ISA = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def main(argv: list[str]) -> int:
    """``mm-gmpo ARGV`` in a fresh process with the kernels pinned (a process picks them once, at first use)."""
    env = {**os.environ, **PINNED_ISA, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mm_gmpo", *argv], env=env, cwd=REPO, timeout=3000).returncode


def _val(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val/accuracy" in r]


@pytest.mark.slow
def test_gmpo_raises_held_out_accuracy_on_the_text_task(tmp_path):
    common = [
        f"model.path={tmp_path / 'base'}",  # the toy Qwen2 is built there from its config (tiny_if_missing)
        "rollout.val_also_greedy=false",
        "trainer.seed=1",
        "trainer.num_threads=1",  # beside the other CI worker: two threads would share its core
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    warm = tmp_path / "warm"
    assert main(["sft", CONFIG, *common, "--out", str(warm)]) == 0
    run = tmp_path / "gmpo"
    rl = [
        f"model.path={warm}",
        "warmstart.steps=0",
        "rollout.prompts_per_round=8",  # the SHORT overrides of scripts/does_it_learn.py
        f"trainer.max_steps={RL_STEPS}",
        "trainer.val_every=0",
    ]
    assert main(["train", CONFIG, *common, *rl, f"trainer.output_dir={run}"]) == 0

    val = _val(run)
    assert [r["step"] for r in val] == [0, RL_STEPS]  # after the warm start, and at the end
    start, end = val[0]["val/accuracy"], val[-1]["val/accuracy"]
    assert 0.1 < start < 0.8, f"the warm start should leave room both ways, got {start:.3f}"
    assert end >= start + RISE, f"GMPO should raise held-out accuracy: {start:.3f} -> {end:.3f}"
    assert val[-1]["val/format"] > 0.9
    assert val[-1]["val/response_length"] > 40  # the worked responses stay long
