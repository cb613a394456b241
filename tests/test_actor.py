"""The actor's rules, each in one place: derived seeds, a round's shares, metric records, the step's p99."""

from __future__ import annotations

import random

import pytest
import torch

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.algorithms.aggregate import masked_quantile
from mm_gmpo.seeds import derive_seed
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.metrics import largest, mean, quantile_from_tails, reduce_metrics, smallest, total, upper_tail
from mm_gmpo.trainer.plan import RoundShape


def test_derive_seed_is_stable_and_separates_streams():
    seed = derive_seed(3, "sampling", 5, 0)
    assert seed == derive_seed(3, "sampling", 5, 0) and 0 <= seed < 2**63  # what a resumed run recomputes
    others = {derive_seed(3, "sampling", 5, 1), derive_seed(3, "sampling", 6, 0), derive_seed(4, "sampling", 5, 0),
              derive_seed(3, "epoch", 5, 0), derive_seed(3, "sampling", 50)}  # fmt: skip
    assert seed not in others and len(others) == 5
    assert all(0 <= derive_seed(7, "prompt", i, bits=31) < 2**31 for i in range(100))


def test_quantile_from_the_processes_upper_tails_is_the_quantile_of_all_values():
    rng = random.Random(0)
    for trial in range(30):
        values = torch.rand(rng.randrange(1, 400), dtype=torch.float64) ** 3
        cuts = sorted(rng.randrange(0, len(values) + 1) for _ in range(rng.randrange(0, 4)))
        parts = [values[a:b] for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True)]  # some may be empty
        q = rng.choice([0.5, 0.9, 0.99, 1.0])
        tails = [upper_tail(p, len(values), q) for p in parts]
        assert sum(len(t) for t in tails) <= len(parts) * (len(values) - int(q * (len(values) - 1)))
        expected = masked_quantile(values, torch.ones_like(values, dtype=torch.bool), q)
        assert quantile_from_tails(tails, len(values), q) == expected, trial
    assert quantile_from_tails([torch.zeros(0)], 0, 0.99) == 0.0


def test_round_shape_is_every_share_of_the_round():
    shapes = [RoundShape(prompts_per_round=8, n=4, updates_per_round=2, world_size=4, rank=r) for r in range(4)]
    assert [s.first_prompt for s in shapes] == [0, 2, 4, 6]
    assert [x for s in shapes for x in s.mine(list(range(8)))] == list(range(8))
    assert shapes[0].rows_per_process == 8 and shapes[0].sequences_per_step == 16
    assert shapes[0].micro_batches_per_step(3) == 2  # 4 rows per step, 3 per micro-batch
    assert RoundShape(8, 4, 2).sequences_per_step == 16  # the same global step on one process


def test_metric_records_reduce_by_their_own_rule():
    out = reduce_metrics(
        DistContext(),
        {
            "a/mean": mean(6.0, 4),
            "a/empty": mean(0.0, 0),
            "a/sum": total(3),
            "a/max": largest(2),
            "a/min": smallest(-1),
        },
    )
    assert out == {"a/mean": 1.5, "a/empty": 0.0, "a/sum": 3.0, "a/max": 2.0, "a/min": -1.0}


def test_log_ratio_p99_is_the_steps_not_a_mean_of_micro_batches(tiny_text_dir):
    from mm_gmpo.models import load_model, load_processor
    from mm_gmpo.testing.batches import sample_train_batch
    from mm_gmpo.trainer.actor import Actor
    from mm_gmpo.trainer.batch import TrainBatch
    from mm_gmpo.trainer.engine import TorchUpdater
    from mm_gmpo.trainer.policy import PolicyLogprobs
    from mm_gmpo.trainer.update import UpdateSettings

    batch = sample_train_batch(load_processor(tiny_text_dir), with_images=False)
    model = load_model(tiny_text_dir, "float32")
    settings = UpdateSettings(
        temperature=1.0, chunk_size=512, micro_batch_size=2, updates_per_round=1, sequences_per_step=6
    )
    updater = TorchUpdater(
        DistContext(), PolicyLogprobs(model), lr=1e-3, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=0.0, warmup=0
    )
    actor = Actor(updater, get_policy_loss("gmpo"), settings)
    now = actor.logprobs(batch.rollout)  # the policy the step's forward sees
    old = now + torch.linspace(-0.5, 0.5, now.numel()).view(now.shape) * batch.response_mask  # a spread of ratios
    mask = batch.response_mask.bool()
    row = actor.update(TrainBatch(batch.rollout, batch.advantages, old, None))[0]
    assert row["perf/micro_batches"] == 3.0
    expected = masked_quantile((now - old).abs(), mask, 0.99)
    assert row["actor/log_ratio_abs_p99"] == pytest.approx(expected, abs=1e-5)
    micro = ([0, 1], [2, 3], [4, 5])
    per_micro = [masked_quantile((now - old).abs()[rows], mask[rows], 0.99) for rows in micro]
    tokens = [float(mask[rows].sum()) for rows in micro]
    before = sum(p * t for p, t in zip(per_micro, tokens, strict=True)) / sum(tokens)  # the token-weighted mean
    assert abs(before - expected) > 1e-3  # of per-micro-batch p99s, as the metric was: another number
