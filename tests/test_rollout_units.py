"""Pure parts of the rollout stage with hand-computed values: truncation, batch slicing, metrics, stop cuts."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.rollout import RolloutBatch, SamplingParams, rollout_metrics
from mm_gmpo.rollout.batching import cut_at_stop
from mm_gmpo.rollout.hf import truncate_top_k_top_p
from mm_gmpo.types import Example

NEG = float("-inf")


def test_top_k_keeps_the_k_largest():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    out = truncate_top_k_top_p(scores, top_k=2, top_p=1.0)
    assert out.tolist() == [[NEG, 3.0, 2.0, NEG]]
    assert torch.equal(truncate_top_k_top_p(scores, top_k=0, top_p=1.0), scores)  # 0: off


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    scores = probs.log()
    # cumulative mass before each token: 0, 0.5, 0.8, 0.95 -> p=0.8 keeps {0.5, 0.3}; p=0.81 adds 0.15
    assert torch.isinf(truncate_top_k_top_p(scores, 0, 0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(truncate_top_k_top_p(scores, 0, 0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(truncate_top_k_top_p(scores, 0, 0.01)).tolist() == [[False, True, True, True]]


def test_cut_at_stop():
    assert cut_at_stop([5, 6, 9, 7, 9], {9}) == ([5, 6, 9], "stop")
    assert cut_at_stop([5, 6, 7], {9}) == ([5, 6, 7], "length")
    assert cut_at_stop([9], {9, 8}) == ([9], "stop")


def _synthetic_batch() -> RolloutBatch:
    """3 prompts x 2 responses; prompt 0 has two images (2 and 1 patches), prompt 1 none, prompt 2 one (3)."""
    grid = torch.tensor([[1, 1, 2], [1, 1, 1], [1, 3, 1]])
    pixel_values = torch.arange(6, dtype=torch.float32).unsqueeze(1).repeat(1, 4)  # patch i holds value i
    n_rows, p_len, r_len = 6, 3, 4
    response_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    return RolloutBatch(
        input_ids=torch.arange(n_rows * (p_len + r_len)).view(n_rows, -1),
        attention_mask=torch.cat([torch.ones(n_rows, p_len, dtype=torch.long), response_mask], dim=1),
        response_mask=response_mask.bool(),
        sampler_logprobs=-torch.rand(n_rows, r_len) * response_mask,
        prompt_length=p_len,
        row_prompt=torch.tensor([0, 0, 1, 1, 2, 2]),
        group_index=torch.tensor([0, 0, 1, 1, 2, 2]),
        pixel_values=pixel_values,
        image_grid_thw=grid,
        images_per_prompt=torch.tensor([2, 0, 1]),
        suppressed_token_ids=torch.tensor([7]),
        finish_reason=["length", "stop", "stop", "length", "stop", "length"],
        response_text=[f"r{i}" for i in range(n_rows)],
        examples=[Example(id=str(i // 2), problem="", answer="") for i in range(n_rows)],
        sampling=SamplingParams(),
    )


def test_select_keeps_only_the_rows_prompts_images():
    batch = _synthetic_batch()
    sub = batch.select([5, 2, 1])
    assert sub.row_prompt.tolist() == [2, 1, 0]  # prompts renumbered 0, 1, 2 in the order of the old table
    assert sub.group_index.tolist() == [2, 1, 0]
    assert sub.images_per_prompt.tolist() == [2, 0, 1]
    assert sub.response_text == ["r5", "r2", "r1"] and [e.id for e in sub.examples] == ["2", "1", "0"]
    only_last = batch.select([4])
    assert only_last.image_grid_thw.tolist() == [[1, 3, 1]]
    assert only_last.pixel_values[:, 0].tolist() == [3.0, 4.0, 5.0]  # patches 3..5 belong to prompt 2's image
    assert only_last.row_image_grid_thw().tolist() == [[1, 3, 1]]
    text_only = batch.select([2, 3])
    assert text_only.pixel_values.shape[0] == 0 and text_only.image_grid_thw.shape[0] == 0
    # the rows' grid list repeats each prompt's images per row (what the 3-D rope positions need)
    assert batch.select([0, 1, 4]).row_image_grid_thw().tolist() == [[1, 1, 2], [1, 1, 1]] * 2 + [[1, 3, 1]]


def test_rollout_metrics_by_hand():
    batch = _synthetic_batch()
    batch.image_token_id = 0  # token 0 is the first prompt token of row 0 only
    metrics = rollout_metrics(batch, seconds=2.0)
    lengths = [4, 2, 1, 4, 3, 4]
    assert metrics["response_length/mean"] == pytest.approx(sum(lengths) / 6)
    assert metrics["response_length/max"] == 4
    assert metrics["response_length/clip_frac"] == pytest.approx(3 / 6)
    assert metrics["rollout/tokens_per_s"] == pytest.approx(sum(lengths) / 2.0)
    assert metrics["rollout/vision_tokens_per_sample"] == pytest.approx(1 / 6)
    assert all(math.isfinite(v) for v in metrics.values())


def test_vllm_sampling_params_end_at_the_configured_tokens_only():
    """rollout.stop_tokens set: vLLM gets the listed ids and ignore_eos (the model's own EOS ends nothing unless
    listed, as in the HF backend); the default list keeps today's request (no ignore_eos). vLLM's SamplingParams
    is replaced by a recorder: only the arguments are checked here."""
    import types

    from mm_gmpo.rollout.vllm_backend import VLLMRollout

    rollout = object.__new__(VLLMRollout)  # no engine: _sampling_params only reads these two attributes
    rollout._vllm = types.SimpleNamespace(SamplingParams=lambda **kwargs: kwargs)
    rollout.allowed_token_ids = None
    official = rollout._sampling_params(8, SamplingParams(stop_tokens=("<|endoftext|>",)), 0, [151643])
    assert official["stop_token_ids"] == [151643] and official["ignore_eos"] is True
    default = rollout._sampling_params(8, SamplingParams(), 0, [151645, 151643])
    assert default["stop_token_ids"] == [151645, 151643] and "ignore_eos" not in default
