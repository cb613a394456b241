"""rollout.top_p / rollout.top_k: the trainer scores a truncated batch on the truncated distribution, so its log-probs
and the sampler's are of the same distribution and the first-round preflight passes (the vLLM side is in
mm_gmpo.vllm_check, run by tests/test_rollout_vllm.py where vLLM imports)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mm_gmpo.models import load_model, load_processor
from mm_gmpo.rollout import RolloutEngine, SamplingParams
from mm_gmpo.rollout.batching import truncate_top_k_top_p
from mm_gmpo.testing.batches import sample_prompts
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.trainer.parity import check_logprob_parity


@pytest.fixture(scope="module")
def vl(tiny_vl_dir):
    return load_model(tiny_vl_dir, "float32"), load_processor(tiny_vl_dir)


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (20, 1.0), (20, 0.9)])
def test_a_truncated_batch_passes_the_fp32_preflight_and_differs_from_the_full_distribution(vl, top_k, top_p):
    model, processor = vl
    sampling = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p, max_new_tokens=6, seed=2)
    batch = RolloutEngine("hf", model, processor).generate(sample_prompts(processor, 2, with_images=True), 2, sampling)
    report = check_logprob_parity(model, batch, temperature=0.7, tolerance=1e-5)  # raises over the fp32 gates
    assert report.ok and report.num_tokens == int(batch.response_mask.sum()) > 0
    full = dataclasses.replace(batch, sampling=dataclasses.replace(sampling, top_k=0, top_p=1.0))
    with torch.no_grad():
        untruncated, _ = policy_logprobs(model, full, temperature=0.7)
    gap = (batch.sampler_logprobs - untruncated)[batch.response_mask]
    assert float(gap.min()) > 1e-3  # the nucleus renormalises: every sampled token is likelier than untruncated


def test_truncated_logprobs_have_gradients_only_through_kept_tokens():
    scores = torch.tensor([[3.0, 2.0, 1.0, -4.0]], requires_grad=True)
    kept = truncate_top_k_top_p(scores, 0, 0.8)
    assert torch.isinf(kept).tolist() == [[False, False, True, True]]
    forced = truncate_top_k_top_p(scores, 0, 0.8, keep=torch.tensor([3]))  # the sampled token always stays
    assert torch.isinf(forced).tolist() == [[False, False, True, False]]
    logp = torch.log_softmax(forced, -1)[0, 3]
    (grad,) = torch.autograd.grad(logp, scores)
    assert grad[0, 2] == 0 and grad[0, 3] > 0 and torch.isfinite(grad).all()
