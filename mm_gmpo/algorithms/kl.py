"""KL to a frozen reference policy: the k3 (low-variance, always >= 0) estimator, off by default (paper recipe)."""

from __future__ import annotations

import torch

from mm_gmpo.algorithms.aggregate import as_bool_mask, masked_count, masked_mean, masked_sum

KL_LOG_DIFF_LIMIT = 10.0


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref) on tokens sampled from pi_theta, ``[B, T]``.

    d = clamp(ref_logprobs - logprobs, -10, 10); k3 = exp(d) - d - 1 (>= 0, unbiased for the KL, low variance
    near on-policy); 0 at masked positions. The clamp bounds a token's penalty at e^10 - 11 ~ 2.2e4 and its
    gradient at e^10: a token the policy now finds e^10 times less likely than the reference would otherwise
    dominate the batch (and overflow at d ~ 89). ``ref_logprobs`` is a constant (detached).
    """
    if ref_logprobs.shape != logprobs.shape or response_mask.shape != logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape [B, T]"
        )
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    mask = as_bool_mask(response_mask)
    diff = ref_logprobs.detach().to(dtype) - logprobs.to(dtype)
    diff = torch.where(mask, diff, torch.zeros((), dtype=dtype, device=diff.device))
    diff = diff.clamp(-KL_LOG_DIFF_LIMIT, KL_LOG_DIFF_LIMIT)
    return torch.expm1(diff) - diff  # exp(d) - 1 - d; 0 where masked (d = 0)


def add_kl_penalty(
    loss: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    denominator: float | None = None,
    *,
    aggregation: str = "seq_mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss + kl_coef * sum_i kl_i / denominator`` with kl_i the masked per-sequence mean of k3.

    Same unit and ``denominator`` semantics as the policy losses (sequences; None: mean over the B sequences),
    so it can be summed over micro-batches. Returns the new loss and ``{"kl_ref": mean_i kl_i}`` (a float).
    With ``kl_coef == 0`` the loss is returned unchanged (the metric is still computed).
    ``aggregation="token_mean"`` (as the policy loss's, EasyR1's): ``kl_coef * sum_{i,t} k3_it / denominator``
    with the denominator in tokens (None: the tokens of the call); ``kl_ref`` is then the token mean.
    """
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be a positive count (sequences; tokens for token_mean), got {denominator}")
    if aggregation == "token_mean":
        k3 = kl_penalty(logprobs, ref_logprobs, response_mask)
        total, tokens = masked_sum(k3, response_mask), max(int(masked_count(response_mask)), 1)
        metrics = {"kl_ref": float(total.detach()) / tokens}
        if kl_coef == 0:
            return loss, metrics
        return loss + kl_coef * total / (denominator if denominator is not None else tokens), metrics
    if aggregation != "seq_mean":
        raise ValueError(f"aggregation must be 'seq_mean' or 'token_mean', got {aggregation!r}")
    per_sequence = masked_mean(kl_penalty(logprobs, ref_logprobs, response_mask), response_mask, dim=-1)  # [B]
    num = per_sequence.numel()
    metrics = {"kl_ref": float(per_sequence.detach().mean()) if num else 0.0}
    if kl_coef == 0:
        return loss, metrics
    divisor = denominator if denominator is not None else max(num, 1)
    return loss + kl_coef * per_sequence.sum() / divisor, metrics
