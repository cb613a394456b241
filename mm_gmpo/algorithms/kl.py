"""KL to a frozen reference policy, off by default (paper recipe): four per-token estimators, as a loss term or
(``algorithm.kl_in_reward``) a penalty on the reward.

With d = log pi_ref - log pi_theta on a token sampled from the policy (``algorithm.kl_estimator``):

- ``k1``: -d (unbiased for KL(pi_theta || pi_ref), can be negative; EasyR1's ``kl``);
- ``k2``: d^2 / 2 (biased, >= 0; EasyR1's ``mse``);
- ``k3``: exp(d) - d - 1 with d clamped to [-10, 10] (unbiased, >= 0, low variance near on-policy; the default);
- ``low_var_kl``: EasyR1's: exp(d) - d - 1 with d clamped to [-20, 20], the result clamped to at most 10.
"""

from __future__ import annotations

import torch

from mm_gmpo.algorithms.aggregate import as_bool_mask, masked_count, masked_mean, masked_sum

KL_LOG_DIFF_LIMIT = 10.0  # k3's clamp on d
LOW_VAR_KL_LOG_DIFF_LIMIT = 20.0  # EasyR1's low_var_kl: clamp on d ...
LOW_VAR_KL_LIMIT = 10.0  # ... and on the estimate
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, response_mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) on tokens sampled from pi_theta, ``[B, T]``; 0 where masked.

    ``estimator`` (module docstring): k3 (default) d = clamp(ref_logprobs - logprobs, -10, 10), exp(d) - d - 1;
    its clamp bounds a token's penalty at e^10 - 11 ~ 2.2e4 and its gradient at e^10: a token the policy now finds
    e^10 times less likely than the reference would otherwise dominate the batch (and overflow at d ~ 89).
    ``ref_logprobs`` is a constant (detached).
    """
    if ref_logprobs.shape != logprobs.shape or response_mask.shape != logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape [B, T]"
        )
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    mask = as_bool_mask(response_mask)
    diff = ref_logprobs.detach().to(dtype) - logprobs.to(dtype)
    diff = torch.where(mask, diff, torch.zeros((), dtype=dtype, device=diff.device))  # every estimate is 0 at d = 0
    if estimator == "k1":
        return -diff
    if estimator == "k2":
        return 0.5 * diff.square()
    if estimator == "low_var_kl":
        diff = diff.clamp(-LOW_VAR_KL_LOG_DIFF_LIMIT, LOW_VAR_KL_LOG_DIFF_LIMIT)
        return (torch.expm1(diff) - diff).clamp(max=LOW_VAR_KL_LIMIT)
    diff = diff.clamp(-KL_LOG_DIFF_LIMIT, KL_LOG_DIFF_LIMIT)
    return torch.expm1(diff) - diff  # exp(d) - 1 - d


@torch.no_grad()
def sequence_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, response_mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """[B]: each response's summed per-token estimate, the KL of the whole response (``algorithm.kl_in_reward``:
    the classic PPO recipe's per-token penalty -kl_coef * kl_t, summed into the outcome reward). No gradient."""
    return masked_sum(kl_penalty(logprobs, ref_logprobs, response_mask, estimator), response_mask, dim=-1)


def add_kl_penalty(
    loss: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    denominator: float | None = None,
    *,
    aggregation: str = "seq_mean",
    estimator: str = "k3",
) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss + kl_coef * sum_i kl_i / denominator`` with kl_i the masked per-sequence mean of the estimate.

    Same unit and ``denominator`` semantics as the policy losses (sequences; None: mean over the B sequences),
    so it can be summed over micro-batches. Returns the new loss and ``{"kl_ref": mean_i kl_i}`` (a float).
    With ``kl_coef == 0`` the loss is returned unchanged (the metric is still computed).
    ``aggregation="token_mean"`` (as the policy loss's, EasyR1's): ``kl_coef * sum_{i,t} kl_it / denominator``
    with the denominator in tokens (None: the tokens of the call); ``kl_ref`` is then the token mean.
    ``estimator``: k1, k2, k3 (default) or low_var_kl (:func:`kl_penalty`).
    """
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be a positive count (sequences; tokens for token_mean), got {denominator}")
    per_token = kl_penalty(logprobs, ref_logprobs, response_mask, estimator)
    if aggregation == "token_mean":
        total, tokens = masked_sum(per_token, response_mask), max(int(masked_count(response_mask)), 1)
        metrics = {"kl_ref": float(total.detach()) / tokens}
        if kl_coef == 0:
            return loss, metrics
        return loss + kl_coef * total / (denominator if denominator is not None else tokens), metrics
    if aggregation != "seq_mean":
        raise ValueError(f"aggregation must be 'seq_mean' or 'token_mean', got {aggregation!r}")
    per_sequence = masked_mean(per_token, response_mask, dim=-1)  # [B]
    num = per_sequence.numel()
    metrics = {"kl_ref": float(per_sequence.detach().mean()) if num else 0.0}
    if kl_coef == 0:
        return loss, metrics
    divisor = denominator if denominator is not None else max(num, 1)
    return loss + kl_coef * per_sequence.sum() / divisor, metrics
