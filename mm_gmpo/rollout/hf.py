"""Hugging Face ``generate`` backend: batched image+text sampling with the training model itself.

Sampling is done by our own last logits processor (:class:`SampleStep`), with ``generate`` in greedy mode:
the processor applies suppression, temperature, top-k and top-p, draws each row's token from the row's own
generator (seeded by the call's seed and the row's global key, so a row's response does not depend on which
other rows share the batch: one global batch split over 1 or N processes samples the same responses), records
its log-prob under that processed distribution, and returns scores whose argmax is the drawn token. So the
recorded log-probs are exactly those of the distribution that was sampled (whatever warpers the checkpoint's
``generation_config`` would otherwise add), only O(N x V) memory is used per step (no stored
``output_scores``), and the global torch RNG is left alone.

Speed (docs/performance.md): the draw is ``torch.multinomial``'s own one-sample algorithm (an exponential race)
written out, which gives the same tokens several times faster; and the vision tower encodes each prompt's
images once, their embeddings shared by the prompt's n rows (``mm_encoder_outputs``), not once per row.
"""

from __future__ import annotations

import inspect
import itertools
import logging

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.batching import (
    encode_prompts,
    model_vocab_size,
    sampled_batch,
    stop_token_ids,
    suppressed_token_ids,
    truncate_top_k_top_p,
)
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams
from mm_gmpo.seeds import derive_seed
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)


class SampleStep(LogitsProcessor):
    """Draws the next token itself and records its log-prob; returns one-hot scores for greedy ``generate``."""

    def __init__(self, sampling: SamplingParams, suppressed: torch.Tensor, generators: list[torch.Generator]):
        self.sampling = sampling
        self.suppressed = suppressed
        self.generators = generators  # one per row
        self.logprobs: list[torch.Tensor] = []  # one [N] tensor per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # [N, V] passes are the cost here (and each is a parallel region that stalls on a busy machine), so the
        # step's own fp32 copy of the logits that generate hands over is edited in place where values allow
        s = self.sampling
        logits = scores.float()
        if self.suppressed.numel():
            logits.index_fill_(-1, self.suppressed.to(logits.device), float("-inf"))
        if s.greedy:
            logp = torch.log_softmax(logits, dim=-1)
            token = logp.argmax(dim=-1, keepdim=True)
            token_logp = logp.gather(-1, token).squeeze(-1)
        else:
            if s.temperature != 1.0:  # dividing by 1 changes no value
                logits.div_(s.temperature)
            logp = torch.log_softmax(truncate_top_k_top_p(logits, s.top_k, s.top_p), dim=-1)
            token = draw_tokens(logp.exp(), self.generators, validate=False).unsqueeze(-1)
            token_logp = logp.gather(-1, token).squeeze(-1)
            # a nan or +inf logit makes its row's log-probs all nan: the drawn token's tells (multinomial's check)
            if not bool(torch.isfinite(token_logp).all()):
                raise RuntimeError("sampling: probability tensor contains either inf, nan or element < 0")
        self.logprobs.append(token_logp)
        return logits.fill_(float("-inf")).scatter_(-1, token, 0.0)


def draw_tokens(probs: torch.Tensor, generators: list[torch.Generator], *, validate: bool = True) -> torch.Tensor:
    """[N] long: one token per row of ``probs`` [N, V], row i drawn with ``generators[i]``.

    The same tokens, and the same generator states afterwards, as ``torch.multinomial(probs[i], 1, generator=g)``
    row by row: that call's one-sample path draws E ~ Exp(1) for every vocabulary entry from the generator and
    takes argmax(p / E) (an exponential race). Writing it out keeps one fill per row (each row has its own
    generator) but does the division and argmax for all rows at once, and skips multinomial's per-call checks,
    which cost several times the draw itself on a 152k vocabulary. A test pins the equality to multinomial.
    ``validate=False`` skips multinomial's check of ``probs`` (the caller checks the result more cheaply).
    """
    if validate:
        lowest, highest = torch.aminmax(probs)  # one pass; nan fails both comparisons
        if not (bool(lowest >= 0) and bool(highest < float("inf"))):
            raise RuntimeError("sampling: probability tensor contains either inf, nan or element < 0")
    race = torch.empty_like(probs)
    for row, generator in zip(race, generators, strict=True):
        row.exponential_(generator=generator)
    return torch.div(probs, race, out=race).argmax(dim=-1)


def row_generators(sampling: SamplingParams, num_prompts: int, n: int, device) -> list[torch.Generator]:
    """One generator per row, seeded by (seed, global prompt index, sample index): independent of the batch."""
    seeds = [
        derive_seed(sampling.seed, "row", sampling.first_prompt + g, j) for g in range(num_prompts) for j in range(n)
    ]
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def _expand_per_prompt(tensor: torch.Tensor | None, sizes: list[int], n: int) -> torch.Tensor | None:
    """Repeat each prompt's segment (``sizes[g]`` leading rows) n times, keeping prompts in order."""
    if tensor is None or n == 1:
        return tensor
    parts = torch.split(tensor, sizes)
    return torch.cat([p for part in parts for p in [part] * n])


def _image_inputs(model: torch.nn.Module, encoded, n: int, device) -> dict:
    """``generate``'s image inputs for n rows per prompt, the vision tower run once per prompt when possible.

    Where the model's forward takes pre-encoded images (``mm_encoder_outputs``, transformers 5.x), each image is
    encoded once and its embeddings are shared by its prompt's n rows; otherwise the pixels are copied to every
    row and the tower encodes each image n times. Either way the rows get the same embeddings.
    """
    images_per_prompt = encoded.images_per_prompt.tolist()
    pixel_values, grid = encoded.pixel_values.to(device), encoded.image_grid_thw.to(device)
    inputs = {"image_grid_thw": _expand_per_prompt(grid, images_per_prompt, n)}
    ends = list(itertools.accumulate(images_per_prompt))  # one past each prompt's last image
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers run in place
    if "mm_encoder_outputs" not in inspect.signature(base.forward).parameters:
        patches = grid.prod(-1).tolist()
        patch_sizes = [sum(patches[end - count : end]) for end, count in zip(ends, images_per_prompt, strict=True)]
        inputs["pixel_values"] = _expand_per_prompt(pixel_values, patch_sizes, n)
        return inputs
    features = base.get_image_features(pixel_values, grid, return_dict=True)
    order = [
        i for end, count in zip(ends, images_per_prompt, strict=True) for _ in range(n)
        for i in range(end - count, end)
    ]  # fmt: skip
    outputs = {"pooler_output": tuple(features.pooler_output[i] for i in order)}
    if getattr(features, "deepstack_features", None) is not None:  # Qwen3-VL: per tapped block, per image
        outputs["deepstack_features"] = [tuple(layer[i] for i in order) for layer in features.deepstack_features]
    inputs["mm_encoder_outputs"] = {"image": type(features)(**outputs)}
    return inputs


def hf_generate(
    model: torch.nn.Module,
    processor,
    prompts: list[Prompt],
    n: int,
    sampling: SamplingParams,
    *,
    synced: bool = False,
) -> RolloutBatch:
    """``n`` responses per prompt with ``model.generate``, as a :class:`RolloutBatch` (rows grouped by prompt).

    ``synced``: the parameters are partitioned over processes (ZeRO-3), so every decode step's forward is a
    collective; a process whose rows have all stopped keeps stepping (``synced_gpus``) until every process's have,
    or its next collective would meet another process's all-gathers. Every process must call this equally often.
    """
    tokenizer = tokenizer_of(processor)
    device = next(model.parameters()).device
    encoded = encode_prompts(processor, prompts)
    stops = stop_token_ids(tokenizer, sampling.stop_tokens)
    suppressed = suppressed_token_ids(tokenizer, model_vocab_size(model))
    rows = torch.arange(len(prompts)).repeat_interleave(n)
    num_rows = len(rows)
    inputs = {"input_ids": encoded.input_ids[rows], "attention_mask": encoded.attention_mask[rows]}
    if encoded.pixel_values is not None:
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
            if encoded.pixel_values is not None:
                inputs.update(_image_inputs(model, encoded, n, device))
            sequences = model.generate(
                **inputs,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                synced_gpus=synced,
            )
    finally:
        model.train(was_training)
    prompt_length = encoded.input_ids.shape[1]
    generated = sequences[:, prompt_length:].cpu()
    step_logprobs = torch.stack(sampler.logprobs, dim=1).cpu() if sampler.logprobs else torch.zeros(num_rows, 0)
    sampled = zip(generated.tolist(), step_logprobs.tolist(), strict=True)
    return sampled_batch(processor, encoded, prompts, n, sampled, stops, suppressed=suppressed, sampling=sampling)
