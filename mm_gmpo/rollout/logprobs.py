"""Trainer-side log-probs of the sampled response tokens, computed the way the sampler computed them.

One backbone forward over prompt+response (the vision tower runs once per *prompt* and its embeddings are
copied into the prompt's n rows), then the LM head only at the response positions, in chunks of ``chunk_size``
tokens: the full ``[B, T, V]`` logits (152k vocabulary) are never built, not even for the response. Under
autograd each chunk is checkpointed, so only its hidden states are kept and its logits are rebuilt in backward.

The distribution matches the sampler's processed one: logits in fp32, the batch's suppressed tokens at -inf,
divided by the temperature (``temperature <= 0``, greedy, uses 1). Top-k/top-p truncation is *not* applied: the
trainer's policy is the full tempered distribution (the preflight says so when a batch was sampled truncated).
Rope positions are rebuilt with the model's own ``get_rope_index`` (3-D for Qwen2.5-VL, padding-aware).
No ``torch.distributed`` here: the caller owns the distributed border.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mm_gmpo.rollout.types import RolloutBatch


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a PEFT wrapper (LoRA layers are injected in place, so they still run)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _is_vision(model: torch.nn.Module) -> bool:
    return hasattr(getattr(model, "model", None), "visual")


def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, T] long: 0, 1, 2, ... over the attended tokens of each row (left padding skipped, pads get 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def rope_position_ids(model: torch.nn.Module, input_ids, attention_mask, row_grid_thw, image_token_id) -> torch.Tensor:
    """[3, N, T] long: Qwen2.5-VL's (time, height, width) positions from the model's ``get_rope_index``."""
    inner = _hf_model(model).model
    kwargs = {"image_grid_thw": row_grid_thw, "attention_mask": attention_mask}
    if "mm_token_type_ids" in inspect.signature(inner.get_rope_index).parameters:  # transformers >= 5.x
        kwargs["mm_token_type_ids"] = (input_ids == image_token_id).int()
    position_ids, _ = inner.get_rope_index(input_ids, **kwargs)
    return position_ids


def _image_embeddings(model: torch.nn.Module, batch: RolloutBatch, dtype: torch.dtype) -> torch.Tensor:
    """[image tokens of all rows, H]: the vision tower once per prompt, its output repeated for each row."""
    inner = _hf_model(model).model
    features = inner.get_image_features(batch.pixel_values, batch.image_grid_thw)
    per_image = features.pooler_output if hasattr(features, "pooler_output") else features
    per_image = list(per_image) if isinstance(per_image, (tuple, list)) else [per_image]
    starts = torch.cumsum(batch.images_per_prompt, 0) - batch.images_per_prompt
    per_prompt = [
        torch.cat(per_image[int(s) : int(s) + int(c)]) if int(c) else None
        for s, c in zip(starts.tolist(), batch.images_per_prompt.tolist(), strict=True)
    ]
    rows = [per_prompt[int(p)] for p in batch.row_prompt if per_prompt[int(p)] is not None]
    return torch.cat(rows).to(dtype)


def response_hidden_states(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """[N, R, H]: the last hidden state at the positions that predict each response token."""
    hf = _hf_model(model)
    input_ids = batch.input_ids[:, :-1]  # the last token predicts nothing we score
    attention_mask = batch.attention_mask[:, :-1]
    embeds = hf.get_input_embeddings()(input_ids)
    if _is_vision(hf):
        grid = batch.row_image_grid_thw()
        if batch.pixel_values is not None and grid is not None and grid.numel():
            image_embeds = _image_embeddings(hf, batch, embeds.dtype)
            image_mask = (input_ids == batch.image_token_id).unsqueeze(-1)
            if int(image_mask.sum()) != image_embeds.shape[0]:
                raise ValueError(
                    f"image placeholders ({int(image_mask.sum())}) and image embeddings ({image_embeds.shape[0]}) "
                    "do not match: a prompt was truncated or a response contains <|image_pad|>"
                )
            embeds = embeds.masked_scatter(image_mask, image_embeds)
        position_ids = rope_position_ids(hf, input_ids, attention_mask, grid, batch.image_token_id)
        backbone = hf.model.language_model
    else:
        position_ids = text_position_ids(attention_mask)
        backbone = hf.model
    out = backbone(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[:, batch.prompt_length - 1 :]


def _token_stats(
    hidden: torch.Tensor,  # [M, H]
    tokens: torch.Tensor,  # [M] long
    lm_head: torch.nn.Module,
    suppressed: torch.Tensor,  # [S] long
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob [M], entropy [M] or empty) of ``tokens`` under the tempered, suppressed distribution.

    ``entropy_grad=False``: the entropy is a metric only; it is computed outside autograd, so it keeps no
    [M, V] tensors for backward and the checkpoint's recomputation stops before it (same values).
    """
    logits = lm_head(hidden).float()
    if suppressed.numel():
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    if temperature != 1.0:  # dividing by 1 changes no value: skip the [M, V] pass (and its backward)
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return token_logp, token_logp.new_zeros(0)
    with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
        # -sum p log p with the suppressed entries (p = 0, log p = -inf) contributing 0 instead of nan
        entropy = -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)
    return token_logp, entropy


def policy_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    chunk_size: int = 512,
    with_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs [N, R], entropy [N, R] or None) of the batch's response tokens under ``model``.

    Values at positions outside ``response_mask`` are 0. Differentiable (the trainer backprops through it).
    ``chunk_size``: response tokens per LM-head call (peak logits memory: chunk_size x vocab x 4 bytes).
    ``entropy_grad=False``: the entropy is returned detached (a metric; cheaper backward, less memory).
    """
    hf = _hf_model(model)
    device = next(hf.parameters()).device
    batch = batch.to(device)
    temperature = temperature if temperature > 0 else 1.0
    hidden = response_hidden_states(hf, batch)  # [N, R, H]
    mask = batch.response_mask
    selected = hidden[mask]  # [M, H]: only real response tokens reach the LM head
    tokens = batch.response_ids[mask]  # [M]
    lm_head = hf.get_output_embeddings()
    suppressed = batch.suppressed_token_ids
    use_checkpoint = torch.is_grad_enabled() and selected.requires_grad
    logps, entropies = [], []
    for start in range(0, selected.shape[0], max(chunk_size, 1)):
        args = (selected[start : start + chunk_size], tokens[start : start + chunk_size], lm_head, suppressed)
        if use_checkpoint:
            lp, ent = checkpoint(_token_stats, *args, temperature, with_entropy, entropy_grad, use_reentrant=False)
        else:
            lp, ent = _token_stats(*args, temperature, with_entropy, entropy_grad)
        logps.append(lp)
        entropies.append(ent)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    flat_logp = torch.cat(logps) if logps else zeros[mask]
    logprobs = zeros.masked_scatter(mask, flat_logp)
    entropy = None
    if with_entropy:
        flat_entropy = torch.cat(entropies) if entropies else zeros[mask]
        entropy = zeros.masked_scatter(mask, flat_entropy)
    return logprobs, entropy
