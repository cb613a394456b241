"""Two-step tiny runs with the rollout importance correction, top-p/top-k sampling, the KL estimators (as a loss
term and in the reward), DAPO's overlong penalty and a reward function that reads the response's length: each
logs its metrics. Bad values fail at load or at the start, one line naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError
from mm_gmpo.trainer.setup import check_config

REPO = Path(__file__).resolve().parents[1]
MAX_NEW = 8
BASE = [
    "trainer.max_steps=2",
    "trainer.save_every=0",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "warmstart.steps=0",
    "data.val=",
    "data.train_limit=8",
    "rollout.prompts_per_round=2",
    "rollout.n=2",
    f"rollout.max_new_tokens={MAX_NEW}",
    "rollout.temperature=0.8",
    "trainer.micro_batch_size=4",
    "reward.workers=1",
    "reward.zero_truncated=false",
    "algorithm.allow_zero_advantages=true",  # a random tiny model: its groups may all score the same
]
REWARD_FILE = """
def score(response, answer, example):
    return {"total": float(example["response_length"]) / 8, "length": example["response_length"],
            "cut": float(example["truncated"])}
"""
CASES = {
    # one update per round: pi_old is the policy's own detached pass, the weight pi_old / pi_sampler with it
    "truncate-geometric-top_p-overlong-low_var_kl": [
        "trainer.updates_per_round=1",
        "algorithm.rollout_is_mode=truncate",
        "algorithm.rollout_is_level=geometric",
        "rollout.top_p=0.9",
        "reward.overlong_buffer=4",
        "algorithm.kl_coef=0.01",
        "algorithm.kl_estimator=low_var_kl",
    ],
    # two updates per round: pi_old from the no-grad pass; the KL as a reward penalty; a reward of one's own
    "mask-sequence-top_k-kl_in_reward-own_reward": [
        "trainer.updates_per_round=2",
        "algorithm.rollout_is_mode=mask",
        "algorithm.rollout_is_level=sequence",
        "rollout.top_k=20",
        "algorithm.kl_coef=0.01",
        "algorithm.kl_in_reward=true",
        "algorithm.kl_estimator=k1",
    ],
}


def _run(tmp_path: Path, model_dir: Path, extra: list[str]) -> list[dict]:
    from mm_gmpo.trainer.trainer import Trainer

    out = tmp_path / "run"
    cfg = load_config(REPO / "configs/math_tiny.yaml", [*BASE, f"model.path={model_dir}", f"trainer.output_dir={out}", *extra])  # fmt: skip
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "actor/pg_loss" in row]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_two_step_run_logs_the_metrics_of_each_new_key(tmp_path, tiny_text_dir, case):
    extra = list(CASES[case])
    if "own_reward" in case:
        (tmp_path / "mine.py").write_text(REWARD_FILE)
        extra.append(f"reward.function={tmp_path / 'mine.py'}:score")
    rows = _run(tmp_path, tiny_text_dir, extra)
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
        assert row["rollout/is_weight_mean"] > 0 and row["rollout/is_weight_max"] >= row["rollout/is_weight_mean"]
        assert row["rollout/logprob_diff_seq_mean"] < 1e-3  # fp32 sampler: top-p/top-k scored as sampled
        assert row["rollout/logprob_diff_max"] < 1e-3
        if "truncate" in case:
            assert 0 <= row["rollout/is_clipped_frac"] <= 1 and "rollout/is_masked_frac" not in row
            assert -1.0 <= row["reward/overlong_penalty"] <= 0.0
            assert row["actor/kl_ref"] >= 0.0  # the KL is a loss term: logged by the update
        else:
            assert 0 <= row["rollout/is_masked_frac"] <= 1 and "rollout/is_clipped_frac" not in row
            assert "actor/kl_ref" not in row and math.isfinite(row["reward/kl_penalty"])  # in the reward instead
            assert 1 <= row["reward/custom/length"] <= MAX_NEW and 0 <= row["reward/custom/cut"] <= 1
    if "truncate" in case:
        assert any(row["reward/overlong_penalty"] < 0 for row in rows)  # 8-token responses reach the buffer


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.rollout_is_threshold=1.0"], "algorithm.rollout_is_threshold=1.0 must be > 1"),
        (["algorithm.kl_in_reward=true"], "algorithm.kl_in_reward=true needs algorithm.kl_coef > 0"),
        ([f"reward.overlong_buffer={MAX_NEW}"], f"reward.overlong_buffer={MAX_NEW} must be in \\[0, rollout"),
        (["reward.overlong_buffer=2", "reward.overlong_penalty=-1"], "reward.overlong_penalty=-1.0 must be"),
    ],
)
def test_bad_values_fail_before_any_model_loads_naming_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        check_config(load_config(REPO / "configs/math_tiny.yaml", [*BASE, *overrides]), world_size=1)
