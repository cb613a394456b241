"""Issue 17, scaled down for CI: on the text task chain_sum, `mm-gmpo train` with GMPO raises held-out accuracy
over a supervised warm start.

The same commands and config as ``scripts/does_it_learn.py --task text`` (configs/toy_text_gmpo.yaml, worked
responses of 45..69 tokens) for one seed, with fewer rounds (RL_STEPS), 100 held-out prompts instead of 300 (4
samples each, no greedy pass) and two threads. ``val/accuracy`` is the mean over the samples at the rollout
temperature. What this test measured is in MEASURED; it asks for a rise of RISE.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_gmpo.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy_text_gmpo.yaml")
RL_STEPS = 80
RISE = 0.05
# The full setting (100 steps, 300 prompts x 2 samples) measured 0.710 -> 0.868 on seed 1
# (docs/does_it_learn/text/results.json). This test measured 0.660 -> 0.8075 (+0.148) and passed, in 43m52s on a
# 2-core machine with a load average of about 5 (its warm start ran at 3.3 s per step with 2 threads, against 0.9 s
# with 1 thread on the same machine). Its time on an idle 2-core machine has not been measured.
MEASURED = "0.660 -> 0.8075 on 100 held-out prompts x 4 samples (seed 1)"


def _val(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val/accuracy" in r]


@pytest.mark.slow
@pytest.mark.long  # not in CI until its time is measured: python -m pytest -m long tests/test_does_it_learn_text.py
def test_gmpo_raises_held_out_accuracy_on_the_text_task(tmp_path):
    common = [
        f"model.path={tmp_path / 'base'}",  # the toy Qwen2 is built there from its config (tiny_if_missing)
        "data.val=synthetic:chain_sum:test:100",
        "rollout.val_n=4",
        "rollout.val_also_greedy=false",
        "trainer.seed=1",
        "trainer.num_threads=2",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    warm = tmp_path / "warm"
    assert main(["sft", CONFIG, *common, "--out", str(warm)]) == 0
    run = tmp_path / "gmpo"
    rl = [f"model.path={warm}", "warmstart.steps=0", f"trainer.max_steps={RL_STEPS}", "trainer.val_every=0"]
    assert main(["train", CONFIG, *common, *rl, f"trainer.output_dir={run}"]) == 0

    val = _val(run)
    assert [r["step"] for r in val] == [0, RL_STEPS]  # after the warm start, and at the end
    start, end = val[0]["val/accuracy"], val[-1]["val/accuracy"]
    assert 0.1 < start < 0.8, f"the warm start should leave room both ways, got {start:.3f}"
    assert end >= start + RISE, f"GMPO should raise held-out accuracy: {start:.3f} -> {end:.3f}"
    assert val[-1]["val/format"] > 0.9
    assert val[-1]["val/response_length"] > 40  # the worked responses stay long
