"""Micro-batches by token budget, each trimmed to its own rows: the same update as one big batch (issue 15)."""

from __future__ import annotations

import pytest
import torch

from mm_gmpo.models import load_model, load_processor
from mm_gmpo.testing.batches import assert_same_update, run_update_round, sample_train_batch
from mm_gmpo.trainer.plan import padding_stats, plan_round, split_to_count, token_budget_bins
from mm_gmpo.trainer.update import UpdateSettings


def test_token_budget_bins_by_hand():
    prompts, responses = [5, 20, 6, 28, 6, 10], [5, 30, 6, 20, 5, 20]
    # longest first: rows 1 (50) and 3 (48) together cost 2 x (28 + 30) = 116 > 100 (the maxima of prompt and
    # response add up), so 3 opens a bin; 5 joins it (2 x 48); 2, 4 and 0 fill a third (3 x 12)
    assert token_budget_bins(prompts, responses, 100) == [[1], [3, 5], [2, 4, 0]]
    assert token_budget_bins(prompts, responses, 120) == [[1, 3], [5, 2, 4, 0]]
    assert token_budget_bins([500, 2], [10, 3], 100) == [[0], [1]]  # a row over the budget gets a bin of its own
    assert split_to_count([[1, 3], [5, 2, 4], [0]], 4) == [[1, 3], [5], [2, 4], [0]]
    with pytest.raises(ValueError, match="cannot make"):
        split_to_count([[0], [1]], 3)


@pytest.mark.parametrize("kind", ["text", "vl"])
def test_token_budget_update_equals_one_big_batch(kind, tiny_text_dir, tiny_vl_dir):
    folder = tiny_text_dir if kind == "text" else tiny_vl_dir
    processor = load_processor(folder, min_pixels=3136, max_pixels=12544)
    batch = sample_train_batch(processor, with_images=kind == "vl")
    batch = batch.select(list(range(6)) * 2)  # 12 rows of 3 response lengths (and 6 image sizes for vl)
    one = UpdateSettings(
        temperature=1.0, chunk_size=512, micro_batch_size=12, updates_per_round=2, sequences_per_step=6
    )
    widest = max(
        batch.rollout.select([i]).padded_width()[0] + batch.rollout.select([i]).padded_width()[1] for i in range(12)
    )
    budget = UpdateSettings(**{**one.__dict__, "micro_batch_size": 1, "max_tokens_per_micro_batch": 2 * widest})
    results = [run_update_round(load_model(folder, "float32"), batch, settings) for settings in (one, budget)]
    (old_a, params_a, rows_a), (old_b, params_b, rows_b) = results
    assert torch.allclose(old_a, old_b, atol=1e-5)  # trimmed micro-batches, the same log-probs
    assert rows_b[0]["perf/micro_batches"] > rows_a[0]["perf/micro_batches"] == 1
    assert rows_b[0]["perf/padding_frac"] < rows_a[0]["perf/padding_frac"]
    assert_same_update(params_a, params_b)  # AdamW's sign-like first steps: a few near-zero gradients may differ
    assert rows_a[1]["actor/pg_loss"] == pytest.approx(rows_b[1]["actor/pg_loss"], abs=1e-5)


def test_padding_stats_count_each_micro_batch_at_its_own_width(tiny_text_dir):
    batch = sample_train_batch(load_processor(tiny_text_dir), with_images=False).rollout
    real = float(batch.attention_mask.sum())
    computed, counted = padding_stats(batch, [list(range(batch.num_rows))])
    assert counted == real and computed == batch.num_rows * sum(batch.padded_width())
    settings = UpdateSettings(
        temperature=1.0, chunk_size=8, micro_batch_size=1, updates_per_round=1, sequences_per_step=6
    )
    plan = plan_round(batch, settings).steps[0]
    assert padding_stats(batch, plan) == (real, real)  # one row each: no padding at all
