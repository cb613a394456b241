"""Hugging Face ``generate`` backend: batched image+text sampling with the training model itself.

Sampling is done by our own last logits processor (:class:`SampleStep`), with ``generate`` in greedy mode:
the processor applies suppression, temperature, top-k and top-p, draws each row's token from the row's own
generator (seeded by the call's seed and the row's global key, so a row's response does not depend on which
other rows share the batch: one global batch split over 1 or N processes samples the same responses), records
its log-prob under that processed distribution, and returns scores whose argmax is the drawn token. So the
recorded log-probs are exactly those of the distribution that was sampled (whatever warpers the checkpoint's
``generation_config`` would otherwise add), only O(N x V) memory is used per step (no stored
``output_scores``), and the global torch RNG is left alone.
"""

from __future__ import annotations

import logging

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.batching import (
    assemble_batch,
    cut_at_stop,
    encode_prompts,
    model_vocab_size,
    stop_token_ids,
    suppressed_token_ids,
)
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)


def truncate_top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """[N, V] tempered scores with everything outside the top-k and the top-p nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one).
    """
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # the first token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


class SampleStep(LogitsProcessor):
    """Draws the next token itself and records its log-prob; returns one-hot scores for greedy ``generate``."""

    def __init__(self, sampling: SamplingParams, suppressed: torch.Tensor, generators: list[torch.Generator]):
        self.sampling = sampling
        self.suppressed = suppressed
        self.generators = generators  # one per row
        self.logprobs: list[torch.Tensor] = []  # one [N] tensor per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        s = self.sampling
        logits = scores.float()
        if self.suppressed.numel():
            logits = logits.index_fill(-1, self.suppressed.to(logits.device), float("-inf"))
        if s.greedy:
            logp = torch.log_softmax(logits, dim=-1)
            token = logp.argmax(dim=-1, keepdim=True)
        else:
            logits = truncate_top_k_top_p(logits / s.temperature, s.top_k, s.top_p)
            logp = torch.log_softmax(logits, dim=-1)
            probs = logp.exp()
            token = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
            token = token.unsqueeze(-1)
        self.logprobs.append(logp.gather(-1, token).squeeze(-1))
        return torch.full_like(logits, float("-inf")).scatter(-1, token, 0.0)


def row_generators(sampling: SamplingParams, num_prompts: int, n: int, device) -> list[torch.Generator]:
    """One generator per row, seeded by (seed, global prompt index, sample index): independent of the batch."""
    seeds = [
        (sampling.seed * 1_000_003 + (sampling.first_prompt + g) * 9_973 + j) % (2**63 - 1)
        for g in range(num_prompts)
        for j in range(n)
    ]
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def _expand_per_prompt(tensor: torch.Tensor | None, sizes: list[int], n: int) -> torch.Tensor | None:
    """Repeat each prompt's segment (``sizes[g]`` leading rows) n times, keeping prompts in order."""
    if tensor is None or n == 1:
        return tensor
    parts = torch.split(tensor, sizes)
    return torch.cat([p for part in parts for p in [part] * n])


def hf_generate(
    model: torch.nn.Module, processor, prompts: list[Prompt], n: int, sampling: SamplingParams
) -> RolloutBatch:
    """``n`` responses per prompt with ``model.generate``, as a :class:`RolloutBatch` (rows grouped by prompt)."""
    tokenizer = tokenizer_of(processor)
    device = next(model.parameters()).device
    encoded = encode_prompts(processor, prompts)
    stops = stop_token_ids(tokenizer)
    suppressed = suppressed_token_ids(tokenizer, model_vocab_size(model))
    rows = torch.arange(len(prompts)).repeat_interleave(n)
    inputs = {"input_ids": encoded.input_ids[rows], "attention_mask": encoded.attention_mask[rows]}
    if encoded.pixel_values is not None:
        patches = encoded.image_grid_thw.prod(-1)
        image_ends = torch.cumsum(encoded.images_per_prompt, 0).tolist()
        image_starts = [e - int(c) for e, c in zip(image_ends, encoded.images_per_prompt.tolist(), strict=True)]
        patch_sizes = [int(patches[a:b].sum()) for a, b in zip(image_starts, image_ends, strict=True)]
        inputs["pixel_values"] = _expand_per_prompt(encoded.pixel_values, patch_sizes, n)
        inputs["image_grid_thw"] = _expand_per_prompt(encoded.image_grid_thw, encoded.images_per_prompt.tolist(), n)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.image_token_id).long()
    inputs = {k: v.to(device) for k, v in inputs.items()}
    sampler = SampleStep(sampling, suppressed.to(device), row_generators(sampling, len(prompts), n, device))
    config = GenerationConfig(
        do_sample=False,  # SampleStep samples; generate only takes the argmax of its one-hot scores
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[-1],
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        num_beams=1,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sequences = model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler])
            )
    finally:
        model.train(was_training)
    prompt_length = encoded.input_ids.shape[1]
    generated = sequences[:, prompt_length:].cpu()
    step_logprobs = torch.stack(sampler.logprobs, dim=1).cpu() if sampler.logprobs else torch.zeros(len(rows), 0)
    responses, logprobs, reasons = [], [], []
    for i in range(len(rows)):
        tokens, reason = cut_at_stop(generated[i].tolist(), set(stops))
        responses.append(tokens)
        logprobs.append(step_logprobs[i, : len(tokens)].tolist())
        reasons.append(reason)
    return assemble_batch(
        processor, encoded, prompts, n, responses, logprobs, reasons, suppressed=suppressed, sampling=sampling
    )
