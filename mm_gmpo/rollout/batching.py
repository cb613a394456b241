"""From prompts and sampled token ids to a :class:`RolloutBatch`; shared by every backend and by the warm start.

Also the two token lists every backend and the trainer must agree on: the stop tokens (end-of-turn and
end-of-text) and the suppressed tokens (image/video placeholders and vision delimiters, which a sampled response
must never contain, plus the padded vocabulary rows that are no token at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from mm_gmpo.errors import UserError
from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.types import FinishReason, RolloutBatch, SamplingParams
from mm_gmpo.types import Prompt

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
# Tokens whose appearance in a response breaks the next forward ("Image features and image tokens do not match").
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def truncate_top_k_top_p(
    scores: torch.Tensor, top_k: int, top_p: float, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, V] tempered scores with everything outside the top-k and the top-p nucleus set to -inf (the sampler's
    truncation: the HF backend samples with it, the trainer scores a truncated batch with it; vLLM's rule is the
    same).

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one).
    ``keep`` [N] (the trainer: the tokens that were sampled) stay whatever the rule says, so a token the sampler
    drew just inside the boundary is never -inf in the trainer's recomputation (fp32 rounding of another kernel).
    Differentiable: the kept scores pass through, the dropped ones are constants.
    """
    if not (0 < top_k < scores.shape[-1]) and top_p >= 1.0:
        return scores
    drop = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores.detach(), top_k, dim=-1).values[..., -1:]
        drop |= scores.detach() < kth
    if top_p < 1.0:
        masked = scores.detach().masked_fill(drop, float("-inf"))
        sorted_scores, order = torch.sort(masked, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p  # the first token always stays (mass_before = 0)
        drop |= torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    if keep is not None:
        drop[torch.arange(drop.shape[0], device=drop.device), keep] = False
    return scores.masked_fill(drop, float("-inf"))


def _known_ids(tokenizer, tokens: tuple[str, ...]) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def stop_token_ids(tokenizer, tokens: tuple[str, ...] | list[str] | None = None) -> list[int]:
    """Ids that end a response: by default end-of-turn and end-of-text (end-of-turn first), those the tokenizer
    has; ``tokens`` (``rollout.stop_tokens``): exactly these, each one a single token of the tokenizer, else a
    :class:`UserError` naming the key."""
    tokenizer = tokenizer_of(tokenizer)
    if tokens is None:
        return _known_ids(tokenizer, STOP_TOKENS)
    ids = _known_ids(tokenizer, tuple(tokens))
    if not tokens or len(ids) != len(tokens):
        unknown = [t for t in tokens if not _known_ids(tokenizer, (t,))]
        raise UserError(
            f"rollout.stop_tokens={list(tokens)}: "
            + (f"{unknown} not single tokens of the tokenizer" if unknown else "name at least one token")
        )
    return ids


def configured_stop_tokens(tokens: list[str]) -> tuple[str, ...] | None:
    """``rollout.stop_tokens`` as :class:`SamplingParams` carries it: None for the default list (end-of-turn or
    end-of-text, whichever the tokenizer has: the behaviour before the key existed), else the tuple."""
    return None if tuple(tokens) == STOP_TOKENS else tuple(tokens)


def suppressed_token_ids(tokenizer, vocab_size: int) -> torch.Tensor:
    """[S] long: vision placeholder/delimiter ids and the ids in ``[len(tokenizer), vocab_size)`` (padding rows)."""
    ids = set(_known_ids(tokenizer, VISION_TOKENS)) | set(range(len(tokenizer), vocab_size))
    return torch.tensor(sorted(i for i in ids if i < vocab_size), dtype=torch.long)


def pad_token_id(processor_or_tokenizer) -> int:
    """The id that pads rows (the tokenizer's pad token, else its end-of-text)."""
    tokenizer = tokenizer_of(processor_or_tokenizer)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids(tokenizer)[-1]


def model_vocab_size(model) -> int:
    """Rows of the LM head (from the config: under ZeRO-3 the weight tensors are empty placeholders)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


def image_token_id_of(processor) -> int | None:
    """<|image_pad|> id when ``processor`` is a vision-language processor, else None."""
    return getattr(processor, "image_token_id", None) if hasattr(processor, "image_processor") else None


@dataclass
class EncodedPrompts:
    """G prompts through the processor (placeholders expanded to the image's token count), left-padded."""

    input_ids: torch.Tensor  # [G, P] long
    attention_mask: torch.Tensor  # [G, P] long
    pixel_values: torch.Tensor | None  # [patches of all images, C*t*p*p]
    image_grid_thw: torch.Tensor | None  # [images, 3] long
    images_per_prompt: torch.Tensor  # [G] long


def encode_prompts(processor, prompts: list[Prompt]) -> EncodedPrompts:
    """Tokenize ``prompts`` (chat template already applied) with their images, left padding."""
    tokenizer = tokenizer_of(processor)
    tokenizer.padding_side = "left"
    texts = [p.text for p in prompts]
    images = [img for p in prompts for img in p.images]
    counts = torch.tensor([len(p.images) for p in prompts], dtype=torch.long)
    if hasattr(processor, "image_processor"):
        out = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    else:
        if images:
            raise ValueError("a text-only model got prompts with images")
        out = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return EncodedPrompts(
        input_ids=out["input_ids"],
        attention_mask=out["attention_mask"],
        pixel_values=out.get("pixel_values") if images else None,
        image_grid_thw=out.get("image_grid_thw") if images else None,
        images_per_prompt=counts,
    )


def cut_at_stop(tokens: list[int], stops: set[int]) -> tuple[list[int], FinishReason]:
    """The response up to and including its first stop token, and whether it stopped or was cut."""
    for i, tok in enumerate(tokens):
        if tok in stops:
            return tokens[: i + 1], "stop"
    return tokens, "length"


def assemble_batch(
    processor,
    encoded: EncodedPrompts,
    prompts: list[Prompt],
    n: int,
    responses: list[list[int]],
    logprobs: list[list[float]],
    finish_reason: list[FinishReason],
    *,
    suppressed: torch.Tensor,
    sampling: SamplingParams,
) -> RolloutBatch:
    """Rows ``g*n .. g*n+n-1`` are the responses of prompt g; each response already ends at its stop token."""
    tokenizer = tokenizer_of(processor)
    num_rows = len(prompts) * n
    if len(responses) != num_rows:
        raise ValueError(f"expected {num_rows} responses ({len(prompts)} prompts x {n}), got {len(responses)}")
    width = max([len(r) for r in responses] + [1])
    pad = pad_token_id(tokenizer)
    response_ids = torch.full((num_rows, width), pad, dtype=torch.long)
    response_mask = torch.zeros((num_rows, width), dtype=torch.bool)
    sampler_logprobs = torch.zeros((num_rows, width), dtype=torch.float32)
    for i, (tokens, lps) in enumerate(zip(responses, logprobs, strict=True)):
        response_ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        response_mask[i, : len(tokens)] = True
        sampler_logprobs[i, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
    row_prompt = torch.arange(len(prompts)).repeat_interleave(n)
    input_ids = torch.cat([encoded.input_ids[row_prompt], response_ids], dim=1)
    attention_mask = torch.cat([encoded.attention_mask[row_prompt], response_mask.long()], dim=1)
    texts = tokenizer.batch_decode([r for r in responses], skip_special_tokens=True)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        sampler_logprobs=sampler_logprobs,
        prompt_length=encoded.input_ids.shape[1],
        row_prompt=row_prompt,
        group_index=row_prompt.clone(),
        pixel_values=encoded.pixel_values,
        image_grid_thw=encoded.image_grid_thw,
        images_per_prompt=encoded.images_per_prompt,
        suppressed_token_ids=suppressed,
        finish_reason=list(finish_reason),
        response_text=texts,
        examples=[prompts[int(g)].example for g in row_prompt],
        image_token_id=image_token_id_of(processor),
        sampling=sampling,
        tokenizer=tokenizer,
    )


def sampled_batch(
    processor,
    encoded: EncodedPrompts,
    prompts: list[Prompt],
    n: int,
    sampled: Iterable[tuple[list[int], list[float]]],
    stops: list[int],
    *,
    suppressed: torch.Tensor,
    sampling: SamplingParams,
) -> RolloutBatch:
    """The batch of a sampler's rows: ``sampled`` yields each row's (tokens, their log-probs) as drawn, rows
    ``g*n .. g*n+n-1`` for prompt g. Each response ends at its first stop token (:func:`cut_at_stop`), its log-probs
    with it; a response without one was cut at the length limit."""
    responses, logprobs, reasons = [], [], []
    stop_set = set(stops)
    for tokens, token_logprobs in sampled:
        kept, reason = cut_at_stop(tokens, stop_set)
        responses.append(kept)
        logprobs.append(token_logprobs[: len(kept)])
        reasons.append(reason)
    return assemble_batch(
        processor, encoded, prompts, n, responses, logprobs, reasons, suppressed=suppressed, sampling=sampling
    )


def teacher_forced_batch(processor, prompts: list[Prompt], responses: list[str], vocab_size: int | None = None):
    """A batch of given responses (one per prompt, end-of-turn appended) for supervised log-likelihoods.

    ``sampler_logprobs`` are zeros (nothing was sampled). ``vocab_size`` sets the suppressed padding rows;
    by default only the vision tokens are suppressed (enough for teacher forcing, whose targets are text).
    """
    tokenizer = tokenizer_of(processor)
    encoded = encode_prompts(processor, prompts)
    end_of_turn = stop_token_ids(tokenizer)[0]
    token_lists = [tokenizer(r, add_special_tokens=False)["input_ids"] + [end_of_turn] for r in responses]
    suppressed = suppressed_token_ids(tokenizer, vocab_size or len(tokenizer))
    return assemble_batch(
        processor,
        encoded,
        prompts,
        1,
        token_lists,
        [[0.0] * len(t) for t in token_lists],
        ["stop"] * len(prompts),
        suppressed=suppressed,
        sampling=SamplingParams(temperature=1.0),
    )
