"""Trainer bookkeeping as pure pieces: data order across resume, mini-batch split, metric reduction, skips."""

import pytest
import torch

from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.metrics import reduce_metric_rows
from mm_gmpo.trainer.plan import minibatch_rows
from mm_gmpo.trainer.setup import check_config
from mm_gmpo.trainer.state import TrainState, next_prompt_indices


def test_prompt_order_resumes_without_repeats_or_gaps():
    straight = TrainState()
    seen = [i for _ in range(7) for i in next_prompt_indices(straight, 10, 4, seed=3, shuffle=True)]
    resumed = TrainState()
    first = [i for _ in range(3) for i in next_prompt_indices(resumed, 10, 4, seed=3, shuffle=True)]
    restored = TrainState(**resumed.to_dict())  # what a checkpoint stores
    rest = [i for _ in range(4) for i in next_prompt_indices(restored, 10, 4, seed=3, shuffle=True)]
    assert first + rest == seen
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # each epoch once
    assert seen[:10] != seen[10:20]  # reshuffled per epoch


def test_strided_minibatches_are_the_same_global_rows_on_one_or_two_processes():
    k, rows = 2, 8
    one = [minibatch_rows(rows, k, u) for u in range(k)]
    two = [[r + p * rows // 2 for r in minibatch_rows(rows // 2, k, u)] for p in range(2) for u in range(k)]
    for u in range(k):
        assert sorted(one[u]) == sorted(two[u] + two[k + u])


def test_reduce_metric_rows():
    rows = [
        {"log_ratio_min": -0.5, "log_ratio_max": 0.2, "clip_frac": 0.5, "num_tokens": 10.0},
        {"log_ratio_min": -0.1, "log_ratio_max": 0.9, "clip_frac": 0.0, "num_tokens": 30.0},
        {"log_ratio_min": 0.0, "log_ratio_max": 0.0, "clip_frac": 0.0, "num_tokens": 0.0},  # empty: ignored
    ]
    out = reduce_metric_rows(rows)
    assert out["log_ratio_min"] == -0.5 and out["log_ratio_max"] == 0.9
    assert out["clip_frac"] == pytest.approx(0.125) and out["num_tokens"] == 40.0


def test_skipped_update_leaves_weights_unchanged():
    model = torch.nn.Linear(3, 2)
    updater = TorchUpdater(DistContext(), model, lr=0.1, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=1.0, warmup=0)
    before = [p.detach().clone() for p in model.parameters()]
    updater.backward(model(torch.ones(1, 3)).sum())
    assert updater.step(skip=True)[1] is False
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    updater.backward(model(torch.ones(1, 3)).sum() * float("nan"))
    norm, applied = updater.step(skip=False)  # a non-finite gradient is never applied
    assert norm != norm and not applied
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert updater.optimizer.state == {}  # AdamW's moments never saw the dropped gradients
    assert updater.scheduler.last_epoch == 0  # nor did the schedule move
    updater.backward(model(torch.ones(1, 3)).sum())
    assert updater.step(skip=False)[1] is True
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.prompts_per_round=3"], "divisible by the 2 processes"),
        (["trainer.updates_per_round=3"], "divisible by trainer.updates_per_round=3"),
        (["trainer.max_steps=5"], "multiple of trainer.updates_per_round"),
        (["trainer.save_every=3"], "trainer.save_every=3 must be a multiple"),
        (["algorithm.loss=gmop"], "algorithm.loss='gmop' is not one of.*did you mean gmpo"),
        (["model.tiny.toy_task=count_dots"], "model.tiny.toy_task='count_dots': not a synthetic task"),
    ],
)
def test_cross_field_rules(overrides, message):
    base = ["rollout.prompts_per_round=4", "rollout.n=4", "trainer.updates_per_round=2", "trainer.max_steps=4"]
    with pytest.raises(UserError, match=message):  # at load time (typed choices) or in the cross-field check
        check_config(load_config(None, base + overrides), world_size=2)


def test_choice_fields_are_the_registries():
    """algorithm.loss takes its choices from the loss registry, data.template is typed with the registered
    templates (a typo fails at load)."""
    import dataclasses
    import typing

    from mm_gmpo.algorithms import LossName, loss_names
    from mm_gmpo.config import AlgorithmConfig, DataConfig
    from mm_gmpo.data.prompts import TEMPLATES

    loss_field = next(f for f in dataclasses.fields(AlgorithmConfig) if f.name == "loss")
    assert loss_field.metadata["choices"]() == loss_names() == tuple(m.value for m in LossName)
    with pytest.raises(UserError, match="algorithm.loss='gmpoo'.*did you mean gmpo"):
        load_config(None, ["algorithm.loss=gmpoo"])
    assert load_config(None, ["algorithm.loss=hmpo"]).algorithm.loss == "hmpo"
    assert set(typing.get_args(typing.get_type_hints(DataConfig)["template"])) == set(TEMPLATES)
    with pytest.raises(UserError, match="data.template='qwen_maths'.*did you mean qwen_math"):
        load_config(None, ["data.template=qwen_maths"])


def test_a_loss_spec_binds_its_settings_and_warns_about_a_mismatch():
    from mm_gmpo.algorithms.registry import policy_loss_for

    fn, warnings = policy_loss_for("drgrpo", max_response_length=64, normalize_std=True)
    assert fn.keywords == {"max_response_length": 64} and "normalize_std=false" in warnings[0]
    fn, warnings = policy_loss_for("gmpo", max_response_length=64, normalize_std=True)
    assert not hasattr(fn, "keywords") and warnings == []


def test_toy_task_builds_the_toy_model(tmp_path):
    """``model.tiny.toy_task`` makes ``tiny_if_missing`` build the small-vocabulary toy model of that task."""
    import json

    from mm_gmpo.trainer.dist import DistContext
    from mm_gmpo.trainer.setup import ensure_model

    path = tmp_path / "toy"
    cfg = load_config(None, [f"model.path={path}", "model.tiny_if_missing=true", "model.tiny.toy_task=count_points"])
    assert ensure_model(cfg, DistContext()) == str(path)
    record = json.loads((path / "toy_model.json").read_text())
    assert record["tasks"] == ["count_points"] and record["hidden"] == cfg.model.tiny.hidden
    assert record["model_vocab_rows"] < 1024  # the toy vocabulary, not Qwen's 151,936 rows


def test_shuffled_minibatches_are_seeded_permutations_of_the_round():
    """trainer.minibatch_order=shuffle: each process's rows permuted (seed, round, process), then split strided:
    every row once per round, a different split each round and process, the same one after a resume."""
    from mm_gmpo.trainer.state import minibatch_permutation

    order = minibatch_permutation(16, seed=3, round_index=5, rank=0)
    assert sorted(order) == list(range(16)) and order != list(range(16))
    assert order == minibatch_permutation(16, seed=3, round_index=5, rank=0)  # what a resumed run recomputes
    assert order != minibatch_permutation(16, seed=3, round_index=6, rank=0)
    assert order != minibatch_permutation(16, seed=3, round_index=5, rank=1)
    assert order != minibatch_permutation(16, seed=4, round_index=5, rank=0)
    k = 4
    minibatches = [[order[i] for i in minibatch_rows(16, k, u)] for u in range(k)]
    assert sorted(r for mb in minibatches for r in mb) == list(range(16))
    strided = [minibatch_rows(16, k, u) for u in range(k)]
    assert [sorted(mb) for mb in minibatches] != strided  # not the strided split


def test_token_mean_micro_batch_losses_sum_to_the_step_token_mean(tiny_text_dir):
    """algorithm.loss_aggregation=token_mean: with the step's token count as every micro-batch's denominator, the
    micro-batch losses (policy loss, token-mean KL, entropy bonus) add up to one token mean over the step, in value
    and gradient: sum over tokens of (l_t + kl_coef k3_t - entropy_coef H_t) / N."""
    from mm_gmpo.algorithms import get_policy_loss, kl_penalty
    from mm_gmpo.models import load_processor
    from mm_gmpo.testing.batches import sample_train_batch
    from mm_gmpo.trainer.update import UpdateSettings, micro_batch_loss

    batch = sample_train_batch(load_processor(tiny_text_dir), with_images=False)
    batch.ref_logprobs = batch.old_logprobs + 0.3 * batch.response_mask  # a reference 0.3 nats away
    mask = batch.response_mask.bool()
    generator = torch.Generator().manual_seed(1)
    start = batch.old_logprobs + 0.2 * torch.randn(batch.old_logprobs.shape, generator=generator)
    entropy = torch.rand(batch.old_logprobs.shape, generator=generator)
    settings = UpdateSettings(temperature=1.0, chunk_size=8, micro_batch_size=2, updates_per_round=1,
                              sequences_per_step=6, clip={"clip_low": 0.2, "clip_high": 0.3}, kl_coef=0.05,
                              entropy_coef=0.01, token_mean=True)  # fmt: skip
    loss_fn = get_policy_loss("grpo", clip_dual=3.0, aggregation="token_mean")
    tokens = float(mask.sum())
    logprobs = start.clone().requires_grad_(True)
    total = 0.0
    for rows in ([0, 1], [2, 3, 4], [5]):
        loss, metrics = micro_batch_loss(loss_fn, logprobs[rows], entropy[rows], batch.select(rows), settings, tokens)
        total = total + loss
    total.backward()
    expected = start.clone().requires_grad_(True)
    pg, _ = loss_fn(expected, batch.old_logprobs, batch.advantages, mask, 0.2, 0.3)
    k3 = kl_penalty(expected, batch.ref_logprobs, mask)[mask].sum() / tokens
    whole = pg + 0.05 * k3 - 0.01 * entropy[mask].sum() / tokens
    whole.backward()
    torch.testing.assert_close(total, whole)
    torch.testing.assert_close(logprobs.grad, expected.grad)
    assert metrics["kl_ref"] == pytest.approx(float(kl_penalty(start[[5]], batch.ref_logprobs[[5]], mask[[5]])[mask[[5]]].mean()))  # fmt: skip
