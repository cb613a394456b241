"""Issue 17, scaled down for CI: on the text task chain_sum, `mm-gmpo train` with GMPO raises held-out accuracy
over a supervised warm start.

The same commands as ``scripts/does_it_learn.py --task text`` for its arm ``gmpo_short`` (configs/toy_text_gmpo.yaml
with the script's SHORT overrides: a 400-step warm start, then 25 rounds of 8 prompts and 4 updates, on worked
responses of 45..69 tokens, validated on 300 held-out prompts x 2 samples; the recorded setting's 150 rounds of 16
take about 15 minutes) for seed 1, on one thread, without the greedy validation pass: the recorded run
``gmpo_short-seed1`` of docs/does_it_learn/text/results.json but for that pass. ``val/accuracy`` is the mean over
the samples at the rollout temperature. It asks for a rise of RISE; what it measured is in MEASURED. Over six seeds
the recorded gain was +0.050 +- 0.034 (lowest +0.007): this test is one seed of it, not a bound for every seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_gmpo.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy_text_gmpo.yaml")
RL_STEPS = 100
RISE = 0.04
# alone on an idle 2-core machine 248 s; in the clean-clone CI beside the other worker 281 s
MEASURED = "0.672 -> 0.752 on 300 held-out prompts x 2 samples (seed 1), as the recorded run gmpo-seed1"


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
