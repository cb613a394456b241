"""Under DeepSpeed a step whose gradients are not finite is dropped by ZeRO before the optimizer runs: weights,
AdamW's moments and the schedule stay as they were (issue 19: the old lr=0 step let NaN into the moments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.trainer.dist import free_port

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, torch
from mm_gmpo.trainer.dist import init_distributed
from mm_gmpo.trainer.engine import DeepSpeedUpdater
ctx = init_distributed(True)
original_linear = torch.nn.functional.linear
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
updater = DeepSpeedUpdater(ctx, model, sys.argv[1], lr=1e-2, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=1.0,
                           warmup=0, micro_batches=2)
x = torch.ones(3, 4)
def weights():  # ZeRO-3 holds partitions: gather the full tensors to compare
    import deepspeed
    params = list(updater.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=updater.zero_stage == 3):
        return [p.detach().clone() for p in params]
out = []
for poison in (False, True, False):
    before = weights()
    for micro in range(2):
        updater.begin_micro_batch(last=micro == 1)
        loss = updater.forward(x).pow(2).mean()
        updater.backward(loss * float("nan") if poison else loss, last=micro == 1)
    norm, applied = updater.step(skip=poison)
    moved = any(not torch.equal(a, b) for a, b in zip(before, weights()))
    finite = all(torch.isfinite(w).all() for w in weights())
    out.append({"applied": applied, "moved": moved, "finite": bool(finite), "skipped": updater.engine.skipped_steps})
# the weight sync on the same engine: a bucket per Linear (64 bytes), gathered one at a time
from mm_gmpo.rollout.weight_sync import SyncStats, stream_weights
stats = SyncStats()
full = dict(zip([n for n, _ in updater.module.named_parameters()], weights()))
sent = dict(stream_weights(updater.module, 64, torch.float32, stats))
sync = {"names": sorted(sent) == sorted(full), "equal": all(torch.equal(sent[k], full[k]) for k in full),
        "buckets": stats.buckets, "outside": stats.max_gathered_outside_bucket, "partitioned": stats.partitioned,
        "resident_at_rest": sum(p.data.numel() for p in updater.module.parameters()),
        "linear_is_original": torch.nn.functional.linear is original_linear}
print(json.dumps(sync))
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_drops_a_nan_step_before_applying_it(tmp_path, stage):
    """... and, on the same engine, the weight sync's ZeRO-3 gather: every parameter partitioned (threshold 0), the
    full values sent, one bucket gathered at a time (nothing outside it resident); torch.nn.functional.linear is
    still torch's own after the engine is set up."""
    config = json.loads((REPO / f"configs/deepspeed/zero{stage}.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}
    env["MASTER_PORT"] = str(free_port())
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ds)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    steps, sync = json.loads(lines[-1]), json.loads(lines[-2])
    # the weight sync sends the full weights under ZeRO-3 too, gathering one bucket (one Linear) at a time
    assert sync["names"] and sync["equal"] and sync["buckets"] == 2
    # ZeRO-3's memory_efficient_linear would replace F.linear process-wide, also inside the graphs vLLM compiles
    assert sync["linear_is_original"]
    if stage == 3:
        assert sync["partitioned"] and sync["resident_at_rest"] == 0 and sync["outside"] == 0
    assert [s["applied"] for s in steps] == [True, False, True]
    assert [s["moved"] for s in steps] == [True, False, True]  # the NaN step moved nothing, the next one trains
    assert all(s["finite"] for s in steps) and steps[-1]["skipped"] == 1
