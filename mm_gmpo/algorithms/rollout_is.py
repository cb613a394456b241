"""Rollout importance sampling: correct every policy loss for the sampler not being pi_old.

The responses are drawn by the sampler mu (vLLM in bf16, another attention kernel; the HF backend in another
precision), while every loss takes the trainer's pi_old as the behaviour policy. The weight of a response's token
is w_t = pi_old(y_t) / mu(y_t), from the trainer's old log-probs and the log-probs the sampler returned, computed
without gradient (``algorithm.rollout_is_level``):

- ``token``: w_t per token; each token's gradient term is multiplied by its own w_t;
- ``sequence``: W_i = prod_t w_t, the exact weight of the whole response (unbiased; variance grows with length);
- ``geometric``: G_i = exp(mean_t log w_t), the geometric mean of the token weights: GMPO's own form.

``algorithm.rollout_is_mode``: ``truncate`` uses min(w, C) (C = ``algorithm.rollout_is_threshold``); ``mask``
drops the units (tokens, or whole responses) whose weight leaves [1/C, C] and weighs the others by w; ``off``
leaves the loss as it is. How the weight enters a loss (derivation in docs/algorithms.md): every registered loss
is linear in the advantages with clipping decided by their sign, so a per-sequence weight (W_i or G_i) scales
A_i; a per-token weight scales each token's gradient through a straight-through copy of the log-probs,
logprobs + (w_t - 1) * (logprobs - detached), which keeps every value (ratios, clipping, metrics) unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mm_gmpo.algorithms.aggregate import as_bool_mask, masked_count, masked_sum
from mm_gmpo.algorithms.diagnostics import LOG_RATIO_LIMIT

ROLLOUT_IS_MODES = ("off", "truncate", "mask")
ROLLOUT_IS_LEVELS = ("token", "sequence", "geometric")


@dataclass(frozen=True)
class RolloutIS:
    """``algorithm.rollout_is_mode``, ``algorithm.rollout_is_level``, ``algorithm.rollout_is_threshold``."""

    mode: str = "off"
    level: str = "token"
    threshold: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in ROLLOUT_IS_MODES:
            raise ValueError(f"rollout_is_mode must be one of {ROLLOUT_IS_MODES}, got {self.mode!r}")
        if self.level not in ROLLOUT_IS_LEVELS:
            raise ValueError(f"rollout_is_level must be one of {ROLLOUT_IS_LEVELS}, got {self.level!r}")
        if not self.threshold > 1.0:  # also nan
            raise ValueError(f"rollout_is_threshold must be > 1, got {self.threshold}")

    @property
    def on(self) -> bool:
        return self.mode != "off"


@torch.no_grad()
def raw_log_weights(
    old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, response_mask: torch.Tensor, level: str
) -> torch.Tensor:
    """log(pi_old / mu): ``[B, T]`` per token (0 where masked) for ``token``, ``[B]`` for ``sequence`` (the sum)
    and ``geometric`` (the mean over the response's tokens; 0 for an empty response)."""
    mask = as_bool_mask(response_mask)
    dtype = torch.promote_types(old_logprobs.dtype, torch.float32)
    diff = old_logprobs.to(dtype) - sampler_logprobs.to(device=old_logprobs.device, dtype=dtype)
    diff = torch.where(mask, diff, torch.zeros((), dtype=dtype, device=diff.device))
    if level == "token":
        return diff
    total = masked_sum(diff, mask, dim=-1)
    return total if level == "sequence" else total / masked_count(mask, dim=-1).clamp(min=1).to(dtype)


@torch.no_grad()
def bounded_weights(log_weights: torch.Tensor, settings: RolloutIS) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weights the loss uses, where the bound acted) for raw log-weights: ``truncate`` min(w, C) (acted:
    w > C); ``mask`` w inside [1/C, C], else 0 (acted: outside). The exponent is clamped to +-20 as the losses'."""
    weight = torch.exp(log_weights.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    c = settings.threshold
    if settings.mode == "mask":
        outside = (weight > c) | (weight < 1.0 / c)
        return torch.where(outside, torch.zeros_like(weight), weight), outside
    over = weight > c
    return weight.clamp(max=c), over


def corrected(loss_fn: Callable, settings: RolloutIS) -> Callable:
    """``loss_fn`` with the rollout importance correction: the same signature plus the keyword
    ``sampler_logprobs`` ([B, T], the sampler's log-probs of the tokens). Values of a token-level correction are
    the loss's own; a sequence-level one scales each response's loss by its weight."""

    def loss_with_rollout_is(
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        *args,
        sampler_logprobs: torch.Tensor,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        old = old_logprobs.detach()
        weights, _ = bounded_weights(raw_log_weights(old, sampler_logprobs, response_mask, settings.level), settings)
        if settings.level == "token":
            mask = as_bool_mask(response_mask)
            scaled = logprobs + (weights.to(logprobs.dtype) - 1.0) * (logprobs - logprobs.detach())
            logprobs = torch.where(mask, scaled, logprobs)  # value unchanged, gradient w_t * d/dlogprobs_t
            return loss_fn(logprobs, old, advantages, response_mask, *args, **kwargs)
        loss, metrics = loss_fn(
            logprobs, old, advantages * weights.to(advantages.dtype), response_mask, *args, **kwargs
        )
        metrics.update(_advantage_metrics(advantages))  # the advantages' own, not the weighted ones
        return loss, metrics

    loss_with_rollout_is.rollout_is = settings  # type: ignore[attr-defined]
    return loss_with_rollout_is


@torch.no_grad()
def _advantage_metrics(advantages: torch.Tensor) -> dict[str, float]:
    adv = advantages.detach().double()
    if not adv.numel():
        return {"advantage_mean": 0.0, "advantage_std": 0.0, "advantage_frac_zero": 0.0}
    mean = adv.mean()
    return {
        "advantage_mean": float(mean),
        "advantage_std": float((adv - mean).square().mean().sqrt()),
        "advantage_frac_zero": float((adv == 0).double().mean()),
    }


@torch.no_grad()
def rollout_is_stats(
    old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, response_mask: torch.Tensor, settings: RolloutIS
) -> dict[str, float]:
    """Sums and extremes of the raw weights at ``settings.level`` over this process's rows, for the trainer to
    reduce over processes: ``weight_sum``, ``units`` (tokens, or responses with a token), ``weight_max``,
    and ``bounded`` (units the bound acts on: over C for ``truncate`` and ``off``, outside [1/C, C] for ``mask``).
    The sequence-level mismatch itself is ``rollout/logprob_diff_seq_mean`` (:mod:`mm_gmpo.rollout.preflight`)."""
    mask = as_bool_mask(response_mask).to(old_logprobs.device)
    log_w = raw_log_weights(old_logprobs, sampler_logprobs, mask, settings.level)
    valid = mask if settings.level == "token" else mask.any(dim=-1)
    weight = torch.exp(log_w.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    as_applied = settings if settings.on else RolloutIS("truncate", settings.level, settings.threshold)
    _, acted = bounded_weights(log_w, as_applied)
    units = int(valid.sum())
    return {
        "weight_sum": float(weight[valid].sum()),
        "units": float(units),
        "weight_max": float(weight[valid].max()) if units else 0.0,
        "bounded": float((acted & valid).sum()),
    }


def rollout_is_metrics(stats: dict[str, float], settings: RolloutIS) -> dict[str, float]:
    """``rollout/is_weight_mean``, ``rollout/is_weight_max`` (of the raw weights pi_old / mu at the configured
    level) and ``rollout/is_clipped_frac`` (``mask`` mode: ``rollout/is_masked_frac``), from (reduced)
    :func:`rollout_is_stats`; ``off`` reports the fraction ``truncate`` would clip."""
    units = stats["units"] or 1.0
    bounded = "rollout/is_masked_frac" if settings.mode == "mask" else "rollout/is_clipped_frac"
    return {
        "rollout/is_weight_mean": stats["weight_sum"] / units,
        "rollout/is_weight_max": stats["weight_max"],
        bounded: stats["bounded"] / units,
    }
