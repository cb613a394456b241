"""Trainer bookkeeping as pure pieces: data order across resume, mini-batch split, metric reduction, skips."""

import pytest
import torch

from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError
from mm_gmpo.trainer.dist import DistContext, TorchUpdater
from mm_gmpo.trainer.setup import check_config
from mm_gmpo.trainer.state import TrainState, minibatch_rows, next_prompt_indices, reduce_metric_rows


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
    """algorithm.loss and data.template are typed with exactly the registered names (a typo fails at load)."""
    import typing

    from mm_gmpo.algorithms.registry import LossName
    from mm_gmpo.config import AlgorithmConfig, DataConfig
    from mm_gmpo.data.prompts import TEMPLATES

    assert typing.get_args(typing.get_type_hints(AlgorithmConfig)["loss"]) == tuple(m.value for m in LossName)
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
