"""Trainer-side log-probs of the sampled response tokens, computed the way the sampler computed them.

One backbone forward over prompt+response (the vision tower runs once per *prompt* and its embeddings are
copied into the prompt's n rows), then the LM head only at the response positions, in chunks of ``chunk_size``
tokens: the full ``[B, T, V]`` logits (152k vocabulary) are never built, not even for the response. Under
autograd each chunk keeps only its hidden states and its logits are rebuilt in backward: by a hand-written
backward for a plain linear head (one [M, V] buffer, see :class:`_SampledTokenStats`), by a checkpoint otherwise.

The distribution matches the sampler's processed one: logits in fp32, the batch's suppressed tokens at -inf,
divided by the temperature (``temperature <= 0``, greedy, uses 1), and, for a batch sampled with top-k/top-p
(``batch.sampling``), the same truncation (the sampled token always kept): the trainer's old and new log-probs are
then those of the distribution the sampler drew from, so ratios start at 1 and the preflight compares like with
like. The policy gradient is that of the truncated policy (the tokens outside the nucleus are constants).
Rope positions are rebuilt with the model's own ``get_rope_index`` (3-D for Qwen2.5-VL and Qwen3-VL,
padding-aware); Qwen3-VL's DeepStack features (vision blocks added to the first decoder layers' hidden states at the
image tokens) are computed and repeated per row with the image embeddings, in the padded and the packed forward.
A mixture-of-experts model (Qwen3-VL-30B-A3B's decoder) can also return its routers' load-balancing loss over the
real tokens of the same forward (``router_aux``: the training forward of ``algorithm.router_aux_loss_coef``).
No ``torch.distributed`` here: the caller owns the distributed border.
"""

from __future__ import annotations

import inspect
import sys
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mm_gmpo.rollout.batching import truncate_top_k_top_p
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
    """[3, N, T] long: Qwen2.5-VL's / Qwen3-VL's (time, height, width) positions from the model's
    ``get_rope_index``."""
    inner = _hf_model(model).model
    kwargs = {"image_grid_thw": row_grid_thw, "attention_mask": attention_mask}
    if "mm_token_type_ids" in inspect.signature(inner.get_rope_index).parameters:  # transformers >= 5.x
        kwargs["mm_token_type_ids"] = (input_ids == image_token_id).int()
    position_ids, _ = inner.get_rope_index(input_ids, **kwargs)
    return position_ids


def _per_row(per_image, batch: RolloutBatch, dtype: torch.dtype) -> torch.Tensor:
    """[image tokens of all rows, H]: per-image features (a tensor or a tuple of them) repeated for each row of
    their prompt, in row order."""
    per_image = list(per_image) if isinstance(per_image, (tuple, list)) else [per_image]
    starts = torch.cumsum(batch.images_per_prompt, 0) - batch.images_per_prompt
    per_prompt = [
        torch.cat(per_image[int(s) : int(s) + int(c)]) if int(c) else None
        for s, c in zip(starts.tolist(), batch.images_per_prompt.tolist(), strict=True)
    ]
    rows = [per_prompt[int(p)] for p in batch.row_prompt if per_prompt[int(p)] is not None]
    return torch.cat(rows).to(dtype)


def _image_embeddings(model: torch.nn.Module, batch: RolloutBatch, dtype: torch.dtype):
    """(embeddings [image tokens of all rows, H], DeepStack features: one such tensor per tapped vision block, empty
    for models without DeepStack): the vision tower once per prompt, its output repeated for each row."""
    inner = _hf_model(model).model
    features = inner.get_image_features(batch.pixel_values, batch.image_grid_thw)
    per_image = features.pooler_output if hasattr(features, "pooler_output") else features
    deepstack = getattr(features, "deepstack_features", None) or []  # Qwen3-VL
    return _per_row(per_image, batch, dtype), [_per_row(layer, batch, dtype) for layer in deepstack]


def is_moe(model: torch.nn.Module) -> bool:
    """The model's decoder routes tokens to experts (its text config knows ``output_router_logits``, as TRL tests)."""
    config = _hf_model(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "output_router_logits", None) is not None


def router_aux_loss(model: torch.nn.Module, router_logits, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The load-balancing loss of ``router_logits`` (one [tokens, experts] tensor per MoE layer): Switch
    Transformer's, with the expert loads and router probabilities pooled over the layers (top-k at perfect balance,
    at most ``num_experts``), by the model's own transformers function with its ``num_experts`` and
    ``num_experts_per_tok``, as its stock forward computes ``aux_loss``. ``attention_mask`` [N, T]: the padding it
    marks does not count; None: every token is real."""
    hf = _hf_model(model)
    text = hf.config.get_text_config()
    balance = sys.modules[type(hf).__module__].load_balancing_loss_func
    return balance(tuple(router_logits), text.num_experts, text.num_experts_per_tok, attention_mask)


def packed_text_positions(keep: torch.Tensor) -> torch.Tensor:
    """[1, M] long: the kept tokens of all rows in one sequence, each row's positions starting again at 0 (the reset
    is how attention tells the rows apart: a block-diagonal causal mask for sdpa/eager, varlen for flash-attention)."""
    return text_position_ids(keep.long())[keep].unsqueeze(0)


def response_hidden_states(
    model: torch.nn.Module, batch: RolloutBatch, packed: bool = False, router_aux: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([M, H]: the last hidden state at the position that predicts each response token (``response_mask``'s real
    tokens, in row-major order), the routers' load-balancing loss or None).

    ``router_aux`` (a mixture-of-experts model): the backbone also returns its router logits and the second value
    is :func:`router_aux_loss` over the real tokens the backbone ran on (prompt and response, padding excluded).

    ``packed``: the rows' real tokens are laid end to end in one sequence of M' tokens with no padding; each row
    keeps its own positions (for Qwen2.5-VL its rope (time, height, width) positions, with the plain text
    positions in front that tell transformers where each row starts). The attention implementation must support
    packed sequences: flash-attention 2 (variable lengths), or sdpa/eager (transformers builds the block-diagonal
    mask from the position resets; M' x M' booleans).
    """
    hf = _hf_model(model)
    input_ids = batch.input_ids[:, :-1]  # the last token predicts nothing we score
    attention_mask = batch.attention_mask[:, :-1]
    keep = attention_mask.bool()
    # packed: only the real tokens are embedded (a padded [N, T, H] would cost rows x the longest row, here as well)
    tokens = input_ids[keep].unsqueeze(0) if packed else input_ids  # [1, M'] or [N, T-1]
    embeds = hf.get_input_embeddings()(tokens)
    deepstack = {}  # Qwen3-VL: the tower's tapped features, added to the first decoder layers at the image tokens
    if _is_vision(hf):
        grid = batch.row_image_grid_thw()
        if batch.pixel_values is not None and grid is not None and grid.numel():
            image_embeds, deepstack_embeds = _image_embeddings(hf, batch, embeds.dtype)
            image_mask = (tokens == batch.image_token_id).unsqueeze(-1)  # row-major either way: the same order
            if int(image_mask.sum()) != image_embeds.shape[0]:
                raise ValueError(
                    f"image placeholders ({int(image_mask.sum())}) and image embeddings ({image_embeds.shape[0]}) "
                    "do not match: a prompt was truncated or a response contains <|image_pad|>"
                )
            embeds = embeds.masked_scatter(image_mask, image_embeds)
            if deepstack_embeds:
                deepstack = {"visual_pos_masks": image_mask[..., 0], "deepstack_visual_embeds": deepstack_embeds}
        position_ids = rope_position_ids(hf, input_ids, attention_mask, grid, batch.image_token_id)
        backbone = hf.model.language_model
    else:
        position_ids = text_position_ids(attention_mask)
        backbone = hf.model
    predictors = slice(batch.prompt_length - 1, None)  # the column before each response token
    routers = {"output_router_logits": True} if router_aux else {}  # off: no recording hooks, no extra work
    if not packed:
        out = backbone(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **deepstack,
            **routers,
        )
        aux = router_aux_loss(hf, out.router_logits, attention_mask) if router_aux else None
        return out.last_hidden_state[:, predictors][batch.response_mask], aux
    text = packed_text_positions(keep)
    positions = torch.cat([text[None], position_ids[:, keep].unsqueeze(1)]) if position_ids.ndim == 3 else text
    out = backbone(
        inputs_embeds=embeds, attention_mask=None, position_ids=positions, use_cache=False, **deepstack, **routers
    )
    aux = router_aux_loss(hf, out.router_logits, None) if router_aux else None  # packed: every token is real
    index = keep.flatten().cumsum(0).view(keep.shape) - 1  # [N, T-1]: each kept token's place in the sequence
    return out.last_hidden_state[0, index[:, predictors][batch.response_mask]], aux


def _tempered_logp(hidden: torch.Tensor, weight, bias, suppressed: torch.Tensor, temperature: float) -> torch.Tensor:
    """[M, V] fp32 log-probs of the tempered, suppressed distribution at ``hidden`` [M, H] (no autograd use)."""
    logits = F.linear(hidden, weight, bias).float()
    if suppressed.numel():
        logits.index_fill_(-1, suppressed, float("-inf"))
    if temperature != 1.0:  # dividing by 1 changes no value: skip the [M, V] pass
        logits.div_(temperature)
    return F.log_softmax(logits, dim=-1)


def _entropy_of(logp: torch.Tensor, rows_per_block: int = 64) -> torch.Tensor:
    """[M] -sum p log p of [M, V] log-probs, suppressed entries (p = 0, log p = -inf) counting 0, not nan.

    Overwrites ``logp``. Row blocks keep the temporaries at ``rows_per_block`` x V (each row's sum is the same).
    """
    out = []
    for block in logp.split(rows_per_block):
        probs = block.exp()
        out.append(-probs.mul_(block.masked_fill_(torch.isinf(block), 0.0)).sum(-1))
    return torch.cat(out) if out else logp.new_zeros(0)


def _fused_stats(hidden, weight, bias, tokens, suppressed, temperature: float, with_entropy: bool):
    """(log p(token) [M], entropy [M] or empty), no autograd: one [M, V] buffer, edited in place."""
    logp = _tempered_logp(hidden, weight, bias, suppressed, temperature)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return token_logp, _entropy_of(logp) if with_entropy else token_logp.new_zeros(0)


class _SampledTokenStats(torch.autograd.Function):
    """(log p(token) [M], entropy [M] as a value without gradient) of one chunk of response positions.

    The values and gradient of ``log_softmax(lm_head(hidden).float(), suppressed -> -inf, / T)[token]``, with the
    backward written out: the logits are rebuilt from the saved hidden states (only [M, H] is kept per chunk, as
    a checkpoint would) and d logits = g * (onehot(token) - softmax) / T is formed in place in one [M, V] buffer,
    where autograd would build zeros + scatter, the log-softmax backward and a masked copy, one [M, V] tensor
    each. The element-wise operations are those autograd performs, so the gradients are the same numbers.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, suppressed, temperature: float, with_entropy: bool):
        token_logp, entropy = _fused_stats(hidden, weight, bias, tokens, suppressed, temperature, with_entropy)
        ctx.mark_non_differentiable(entropy)
        ctx.save_for_backward(hidden, weight, bias, tokens, suppressed)
        ctx.temperature = temperature
        return token_logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, tokens, suppressed = ctx.saved_tensors
        with torch.no_grad():
            logp = _tempered_logp(hidden, weight, bias, suppressed, ctx.temperature)
            d_logp = torch.zeros_like(logp).scatter_(-1, tokens.unsqueeze(-1), grad_logp.float().unsqueeze(-1))
            d_logits = torch._log_softmax_backward_data(d_logp, logp, -1, logp.dtype)  # autograd's own kernel
            del logp, d_logp
            if suppressed.numel():
                d_logits.index_fill_(-1, suppressed, 0.0)
            if ctx.temperature != 1.0:
                d_logits.div_(ctx.temperature)
            d_logits = d_logits.to(weight.dtype)
            d_hidden = d_logits.mm(weight) if ctx.needs_input_grad[0] else None
            d_weight = hidden.t().mm(d_logits).t() if ctx.needs_input_grad[1] else None  # linear's backward GEMM
            d_bias = d_logits.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        return d_hidden, d_weight, d_bias, None, None, None, None


def _fused_head_ok(lm_head: torch.nn.Module) -> bool:
    """A plain linear head with full weights that may be used without calling the module: not a ZeRO-3
    partition, not an adapter-wrapped layer, and no forward hooks (they would be skipped)."""
    from torch.nn.modules import module as nn_module

    hooks = (lm_head._forward_hooks, lm_head._forward_pre_hooks)
    global_hooks = (nn_module._global_forward_hooks, nn_module._global_forward_pre_hooks)
    return (
        type(lm_head) is torch.nn.Linear
        and not hasattr(lm_head.weight, "ds_id")
        and not any(hooks)
        and not any(global_hooks)
    )


def _token_stats(
    hidden: torch.Tensor,  # [M, H]
    tokens: torch.Tensor,  # [M] long
    lm_head: torch.nn.Module,
    suppressed: torch.Tensor,  # [S] long
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool = True,
    truncation: tuple[int, float] | None = None,  # the sampler's (top_k, top_p)
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob [M], entropy [M] or empty) of ``tokens`` under the tempered, suppressed distribution (autograd).

    ``entropy_grad=False``: the entropy is a metric only; it is computed outside autograd, so it keeps no
    [M, V] tensors for backward and the checkpoint's recomputation stops before it (same values).
    """
    logits = lm_head(hidden).float()
    if suppressed.numel():
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    if temperature != 1.0:  # dividing by 1 changes no value: skip the [M, V] pass (and its backward)
        logits = logits / temperature
    if truncation is not None:
        logits = truncate_top_k_top_p(logits, *truncation, keep=tokens)
    logp = F.log_softmax(logits, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return token_logp, token_logp.new_zeros(0)
    with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
        # -sum p log p with the suppressed entries (p = 0, log p = -inf) contributing 0 instead of nan
        entropy = -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)
    return token_logp, entropy


def _chunk_stats(hidden, tokens, lm_head, suppressed, temperature, with_entropy, entropy_grad, truncation=None):
    """One chunk's (log-prob [M], entropy [M] or empty), by the cheapest path that gives the same numbers
    (a truncated batch: always :func:`_token_stats`, the one path that truncates)."""
    if truncation is not None:
        args = (hidden, tokens, lm_head, suppressed, temperature, with_entropy, entropy_grad, truncation)
        grad = torch.is_grad_enabled() and hidden.requires_grad
        return checkpoint(_token_stats, *args, use_reentrant=False) if grad else _token_stats(*args)
    fused_ok = _fused_head_ok(lm_head)
    if not (torch.is_grad_enabled() and hidden.requires_grad):
        if not fused_ok:
            return _token_stats(hidden, tokens, lm_head, suppressed, temperature, with_entropy, entropy_grad)
        with torch.no_grad():  # in place where _token_stats copies: the same values, fewer [M, V] passes
            return _fused_stats(hidden, lm_head.weight, lm_head.bias, tokens, suppressed, temperature, with_entropy)
    if (entropy_grad and with_entropy) or not fused_ok:
        args = (hidden, tokens, lm_head, suppressed, temperature, with_entropy, entropy_grad)
        return checkpoint(_token_stats, *args, use_reentrant=False)
    return _SampledTokenStats.apply(
        hidden, lm_head.weight, lm_head.bias, tokens, suppressed, temperature, with_entropy
    )


class PolicyOutputs(NamedTuple):
    """What one forward of the policy gives (:func:`policy_outputs`)."""

    logprobs: torch.Tensor  # [N, R] float32, 0 outside response_mask
    entropy: torch.Tensor | None  # [N, R] float32 when asked
    router_aux: torch.Tensor | None  # scalar: the routers' load-balancing loss over the real tokens, when asked


def policy_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, **options
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs [N, R], entropy [N, R] or None): :func:`policy_outputs` without the router loss."""
    out = policy_outputs(model, batch, **options)
    return out.logprobs, out.entropy


def policy_outputs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    chunk_size: int = 512,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    min_chunks: int = 0,
    packed: bool = False,
    router_aux: bool = False,
) -> PolicyOutputs:
    """(log-probs [N, R], entropy [N, R] or None, router loss or None) of the batch's response tokens under ``model``.

    Values at positions outside ``response_mask`` are 0. Differentiable (the trainer backprops through it).
    ``chunk_size``: response tokens per LM-head call (peak logits memory: chunk_size x vocab x 4 bytes).
    ``entropy_grad=False``: the entropy is returned detached (a metric; cheaper backward, less memory).
    ``min_chunks``: call the LM head at least this often (empty chunks after the real ones). Under ZeRO-3 each call
    gathers the head's weight in a collective, so every process must make the same number of calls.
    ``packed``: the backbone runs on the rows laid end to end without padding (see :func:`response_hidden_states`).
    ``router_aux``: a mixture-of-experts model also returns its routers' load-balancing loss (a scalar with
    gradients) over the forward's real tokens; False: None, and the forward does nothing more.
    """
    hf = _hf_model(model)
    device = next(hf.parameters()).device
    batch = batch.to(device)
    temperature = temperature if temperature > 0 else 1.0
    # [M, H]: only real response tokens reach the LM head
    selected, aux = response_hidden_states(hf, batch, packed, router_aux)
    mask = batch.response_mask
    tokens = batch.response_ids[mask]  # [M]
    lm_head = hf.get_output_embeddings()
    suppressed = batch.suppressed_token_ids
    sampling = batch.sampling
    truncation = (sampling.top_k, sampling.top_p) if sampling.truncates else None
    logps, entropies = [], []
    chunk_size = max(chunk_size, 1)
    num_chunks = max(-(-selected.shape[0] // chunk_size), min_chunks)
    for start in range(0, num_chunks * chunk_size, chunk_size):
        chunk = slice(start, start + chunk_size)
        lp, ent = _chunk_stats(
            selected[chunk], tokens[chunk], lm_head, suppressed, temperature, with_entropy, entropy_grad, truncation
        )
        logps.append(lp)
        entropies.append(ent)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    flat_logp = torch.cat(logps) if logps else zeros[mask]
    logprobs = zeros.masked_scatter(mask, flat_logp)
    entropy = None
    if with_entropy:
        flat_entropy = torch.cat(entropies) if entropies else zeros[mask]
        entropy = zeros.masked_scatter(mask, flat_entropy)
    return PolicyOutputs(logprobs, entropy, aux)
