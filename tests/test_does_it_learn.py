"""Issue 8, scaled down for CI: after `mm-gmpo sft`, `mm-gmpo train` with GMPO raises held-out accuracy.

The same commands and config as scripts/does_it_learn.py (configs/toy_gmpo.yaml, count_points, chance 1/6) for one
seed, on 200 held-out prompts instead of 300, validating only before and after RL, and with two threads: about 6
minutes alone on an idle machine, 613 s beside the rest of the suite, over 20 minutes on a loaded one, so it is
marked ``long`` and left out of CI (``python -m pytest -m long tests/test_does_it_learn.py``). ``val/accuracy`` is the mean over 8 samples per prompt at the rollout temperature, measured to about
+-0.02 here. Over the six seeds of the README's table GMPO gained +0.036 to +0.218 (seed 1: +0.207), and this test
measured 0.667 -> 0.810 on seed 1; it asks for +0.04.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_gmpo.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy_gmpo.yaml")
CHANCE = 1 / 6


def _val(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val/accuracy" in r]


@pytest.mark.long  # 613 s of a 1378 s CI run (2 workers), far more on a busy machine: run with -m long
def test_gmpo_raises_held_out_accuracy_above_the_warm_start(tmp_path):
    common = [
        f"model.path={tmp_path / 'base'}",  # the toy model is built there from its config (tiny_if_missing)
        "data.val=synthetic:count_points:test:200",
        "trainer.seed=1",
        "trainer.num_threads=2",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    warm = tmp_path / "warm"
    assert main(["sft", CONFIG, *common, "--out", str(warm)]) == 0
    run = tmp_path / "gmpo"
    rl = [f"model.path={warm}", "warmstart.steps=0", "trainer.max_steps=600", "trainer.val_every=0"]
    assert main(["train", CONFIG, *common, *rl, f"trainer.output_dir={run}"]) == 0

    val = _val(run)
    assert [r["step"] for r in val] == [0, 600]  # after the warm start, and at the end
    start, end = val[0]["val/accuracy"], val[-1]["val/accuracy"]
    assert start > CHANCE + 0.15, f"the warm start should be well above chance, got {start:.3f}"
    assert end >= start + 0.04, f"GMPO should raise held-out accuracy: {start:.3f} -> {end:.3f}"
    assert val[-1]["val/format"] > 0.9
    # rollout.val_also_greedy: one greedy answer per prompt as well, from the same model (well above chance too)
    assert all(r["val/accuracy_greedy"] > CHANCE + 0.15 for r in val)
