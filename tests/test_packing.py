"""Padding-free packing: the rows of a micro-batch end to end in one sequence, each with its own positions (rope
(t, h, w) for Qwen2.5-VL and Qwen3-VL, and Qwen3-VL's DeepStack features at the image tokens), give the padded
path's log-probs, entropies and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_dir

import mm_gmpo.trainer.forward as logprobs_module
from mm_gmpo.models import load_model, load_processor
from mm_gmpo.testing.batches import assert_same_update, run_update_round, sample_train_batch
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.trainer.plan import padding_stats, plan_round, token_budget_bins
from mm_gmpo.trainer.update import UpdateSettings

KINDS = {"text": "qwen2", "qwen3": "qwen3", "vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl_moe"}
TEXT_KINDS = ("text", "qwen3")


def _batch(kind, request):
    folder = tiny_dir(request, KINDS[kind])
    processor = load_processor(folder, min_pixels=3136, max_pixels=12544)
    return folder, sample_train_batch(processor, with_images=kind not in TEXT_KINDS)


def _logprobs_and_grads(folder, batch, packed: bool):
    model = load_model(folder, "float32")
    logprobs, entropy = policy_logprobs(model, batch, temperature=0.7, with_entropy=True, packed=packed)
    (logprobs.sum() + entropy.sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logprobs.detach(), entropy.detach(), grads


def _recording(forward, seen):
    def recorded(self, input_ids):
        if self.num_embeddings > 100_000:  # the token embeddings (not Qwen3-VL's vision position table)
            seen.append(tuple(input_ids.shape))
        return forward(self, input_ids)

    return recorded


@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_logprobs_and_gradients_equal_padded(kind, request, monkeypatch):
    folder, batch = _batch(kind, request)
    rollout = batch.rollout
    prompts = rollout.attention_mask[:, : rollout.prompt_length].sum(dim=1)
    assert len(set(prompts.tolist())) > 1 and len(set(rollout.response_mask.sum(dim=1).tolist())) > 1
    if kind not in TEXT_KINDS:
        assert len({tuple(g) for g in rollout.image_grid_thw.tolist()}) > 1  # images of different sizes
    padded_lp, padded_ent, padded_grads = _logprobs_and_grads(folder, rollout, packed=False)
    seen = []  # the token ids the embedding gets: the real tokens only, in one sequence (no padded [N, T, H])
    monkeypatch.setattr(torch.nn.Embedding, "forward", _recording(torch.nn.Embedding.forward, seen))
    packed_lp, packed_ent, packed_grads = _logprobs_and_grads(folder, rollout, packed=True)
    monkeypatch.undo()
    real = int(rollout.attention_mask[:, :-1].sum())
    assert seen and all(shape == (1, real) for shape in seen), (seen, real)
    assert torch.allclose(packed_lp, padded_lp, atol=1e-5)
    assert torch.allclose(packed_ent, padded_ent, atol=1e-4)  # entropies are ~log V: the same relative error
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5), name
    # the check can fail: without the position resets the rows attend to each other and the values move
    monkeypatch.setattr(
        logprobs_module, "packed_text_positions", lambda keep: torch.arange(int(keep.sum())).unsqueeze(0)
    )
    leaked, _, _ = _logprobs_and_grads(folder, rollout, packed=True)
    assert (leaked - padded_lp).abs().max() > 1e-3


def test_packed_bins_sum_real_tokens():
    prompts, responses = [5, 20, 6, 28, 6, 10], [5, 30, 6, 20, 5, 20]  # lengths 10 50 12 48 11 30
    # first fit, longest first: 50 + 48 fill the first bin; 30, 12, 11 and 10 the second
    assert token_budget_bins(prompts, responses, 100, packed=True) == [[1, 3], [5, 2, 4, 0]]
    assert token_budget_bins(prompts, responses, 60, packed=True) == [[1, 0], [3, 2], [5, 4]]
    assert token_budget_bins([500], [10], 100, packed=True) == [[0]]


@pytest.mark.parametrize("kind", ["text", "qwen3", "vl", "qwen3_vl"])
def test_packed_update_equals_one_padded_batch(kind, request):
    folder, batch = _batch(kind, request)
    batch = batch.select(list(range(6)) * 2)  # 12 rows: 3 response lengths, 6 prompts (images of 6 sizes)
    padded = UpdateSettings(
        temperature=1.0, chunk_size=512, micro_batch_size=12, updates_per_round=2, sequences_per_step=6
    )
    real = int(batch.rollout.attention_mask.sum())
    packed = UpdateSettings(
        **{**padded.__dict__, "micro_batch_size": 1, "max_tokens_per_micro_batch": real // 4, "packing": True}
    )
    results = [run_update_round(load_model(folder, "float32"), batch, settings) for settings in (padded, packed)]
    (old_a, params_a, rows_a), (old_b, params_b, rows_b) = results
    assert torch.allclose(old_a, old_b, atol=1e-5)
    assert rows_b[0]["perf/micro_batches"] > 1 and rows_b[0]["perf/padding_frac"] == 0.0
    assert rows_a[0]["perf/padding_frac"] > 0.1
    assert_same_update(params_a, params_b)  # (a few weights may differ: see its docstring; it happened in CI)
    for a, b in zip(rows_a, rows_b, strict=True):  # the gradients themselves, step by step
        assert a["actor/grad_norm"] == pytest.approx(b["actor/grad_norm"], rel=1e-5)
        assert a["actor/pg_loss"] == pytest.approx(b["actor/pg_loss"], abs=1e-5)


def test_no_grad_passes_run_the_update_micro_batches(tiny_text_dir):
    batch = sample_train_batch(load_processor(tiny_text_dir), with_images=False).rollout
    settings = UpdateSettings(
        temperature=1.0, chunk_size=8, micro_batch_size=1, updates_per_round=2, sequences_per_step=3,
        max_tokens_per_micro_batch=400, packing=True,
    )  # fmt: skip
    plan = plan_round(batch, settings).steps
    assert [sorted(r for micro in step for r in micro) for step in plan] == [[0, 2, 4], [1, 3, 5]]
    computed, real = padding_stats(batch, plan[0], packed=True)
    assert computed == real == float(batch.attention_mask[[0, 2, 4]].sum())
