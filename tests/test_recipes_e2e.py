"""The recipes' new settings end to end on a tiny text model (math_tiny): the text recipe's EOS-only stop,
shuffled mini-batches and advantage epsilon, with EasyR1's GRPO loss (dual clip, token mean, KL): the run
trains, the shuffled order changes the update, and a resumed run equals a straight one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import QUIET_RUN, REPO, assert_same_updates, checkpoint_weights, run_cli, update_rows

pytestmark = pytest.mark.slow

RECIPE_KEYS = [
    'rollout.stop_tokens=["<|endoftext|>"]',
    "algorithm.adv_eps=1e-8",
    "algorithm.loss=grpo",
    "algorithm.clip_low=0.2",
    "algorithm.clip_high=0.3",
    "algorithm.clip_dual=3.0",
    "algorithm.loss_aggregation=token_mean",
    "algorithm.kl_coef=0.05",
    "algorithm.entropy_coef=0.01",  # a gradient on every row even where a random model's rewards are all equal
]


def _train(tmp: Path, run: str, *extra: str) -> Path:
    out = tmp / run
    run_cli("train", str(REPO / "configs/math_tiny.yaml"), f"trainer.output_dir={out}",
            f"model.path={tmp / 'tiny-text'}", "trainer.save_every=2", "rollout.prompts_per_round=2",
            "rollout.max_new_tokens=8", "data.val=", "data.train_limit=20", "reward.workers=1", *QUIET_RUN,
            *RECIPE_KEYS, *extra, cwd=tmp)  # fmt: skip
    return out


def test_recipe_settings_train_and_a_shuffled_run_resumes_exactly(tmp_path):
    straight = _train(tmp_path, "straight", "trainer.max_steps=4", "trainer.minibatch_order=shuffle")
    rows = update_rows(straight)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["actor/loss"]) and math.isfinite(r["actor/kl_ref"]) for r in rows)
    assert all("actor/clip_frac_dual" in r for r in rows)
    first = _train(tmp_path, "resumed", "trainer.max_steps=2", "trainer.minibatch_order=shuffle")
    _train(
        tmp_path, "resumed", "trainer.max_steps=4", "trainer.minibatch_order=shuffle", f"trainer.resume_from={first}"
    )
    a, b = checkpoint_weights(straight, 4), checkpoint_weights(first, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same shuffled mini-batches after the resume
    assert_same_updates(rows, update_rows(first))
    strided = _train(tmp_path, "strided", "trainer.max_steps=4")
    c = checkpoint_weights(strided, 4)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the order is a real setting: another update
