"""Diagnostics every policy loss returns: python floats over the masked (response) tokens of one call.

The names are the contract with the trainer, which prefixes them with ``actor/`` and reduces micro-batches by
suffix: ``*_min`` by min, ``*_max`` by max, ``num_*`` by sum, the means over sequences (:data:`SEQUENCE_MEANS`)
weighted by ``num_sequences`` and every other mean by ``num_tokens`` (``mm_gmpo.trainer.metrics`` applies this rule). All values are finite when the mask is empty (0.0; ``num_tokens`` = 0 tells the reducer).

- ``clip_frac``, ``clip_frac_low``, ``clip_frac_high``: fraction of response tokens whose clipped branch was
  selected (their gradient is zero): ``low`` on the lower bound (only A < 0 clips there), ``high`` on the upper
  bound (only A > 0). For sequence-level clipping a token counts when its sequence was clipped.
- ``log_ratio_min/max/mean/std`` and ``log_ratio_abs_p99``: of x = log pi_theta - log pi_old per token, raw
  (before any clipping or clamping); std is the population std.
- ``approx_kl``: KL(pi_old || pi_theta) by the k3 estimator on tokens sampled from pi_old:
  exp(x) - 1 - x, with x clamped to [-20, 20] as in the losses.
- ``advantage_mean``, ``advantage_std`` (population), ``advantage_frac_zero`` (A == 0 exactly): over the B
  sequences of the call.
- ``seq_ratio_min/max`` (GMPO family and GSPO only): the per-sequence ratio the loss uses (after clipping and
  the exponent clamp), over sequences with at least one response token.
- ``pg_loss``: the mean per-sequence loss of the call (equals ``loss`` when ``denominator`` is None).
- ``num_tokens``, ``num_sequences``: response tokens and sequences (rows, B) in the call.
"""

from __future__ import annotations

import torch

from mm_gmpo.algorithms.aggregate import masked_count, masked_mean, masked_quantile

# The diagnostics that are means over the call's sequences, not its tokens (``loss`` and ``kl_ref`` are added by the
# trainer's micro-batch loss, with the same unit; ``router_aux_loss``, a mixture-of-experts policy's router
# load-balancing loss, one value per micro-batch, is weighted in the loss by the micro-batch's sequences, as here):
# combined across micro-batches and processes weighted by sequences.
SEQUENCE_MEANS = frozenset(
    {"pg_loss", "loss", "kl_ref", "advantage_mean", "advantage_std", "advantage_frac_zero", "router_aux_loss"}
)

LOG_RATIO_LIMIT = 20.0  # shared with the losses: exp(20) ~ 4.9e8, exp(-20) ~ 2.1e-9


@torch.no_grad()
def loss_metrics(
    log_ratio: torch.Tensor,  # [B, T] raw log pi_theta - log pi_old (masked positions hold anything finite)
    mask: torch.Tensor,  # [B, T] bool
    advantages: torch.Tensor,  # [B]
    clipped_low: torch.Tensor,  # [B, T] bool, subset of mask
    clipped_high: torch.Tensor,  # [B, T] bool, subset of mask
    per_sequence_loss: torch.Tensor,  # [B]
    seq_ratio: torch.Tensor | None = None,  # [B] the per-sequence ratio used by the loss, if the loss has one
    seq_valid: torch.Tensor | None = None,  # [B] bool, sequences with at least one response token
) -> dict[str, float]:
    x = log_ratio.detach()
    num_tokens = masked_count(mask)
    denom = num_tokens.clamp(min=1).to(x.dtype)
    low_frac = clipped_low.sum().to(x.dtype) / denom
    high_frac = clipped_high.sum().to(x.dtype) / denom
    has_tokens = num_tokens > 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    big = torch.finfo(x.dtype).max
    x_min = torch.where(has_tokens, torch.where(mask, x, big).min(), zero)
    x_max = torch.where(has_tokens, torch.where(mask, x, -big).max(), zero)
    x_mean = masked_mean(x, mask)
    x_std = masked_mean((x - x_mean).square(), mask).sqrt()
    x_safe = x.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    approx_kl = masked_mean(torch.expm1(x_safe) - x_safe, mask)
    adv = advantages.detach().to(x.dtype)
    b = adv.numel()
    adv_mean = adv.mean() if b else zero
    adv_std = (adv - adv_mean).square().mean().sqrt() if b else zero
    adv_zero = (adv == 0).to(x.dtype).mean() if b else zero
    pg_loss = per_sequence_loss.detach().to(x.dtype).mean() if b else zero
    names = ["clip_frac", "clip_frac_low", "clip_frac_high", "log_ratio_min", "log_ratio_max", "log_ratio_mean"]
    names += ["log_ratio_std", "approx_kl", "advantage_mean", "advantage_std", "advantage_frac_zero", "pg_loss"]
    values = [low_frac + high_frac, low_frac, high_frac, x_min, x_max, x_mean, x_std, approx_kl]
    values += [adv_mean, adv_std, adv_zero, pg_loss]
    if seq_ratio is not None:
        ratio = seq_ratio.detach().to(x.dtype)
        any_valid = seq_valid.any()
        names += ["seq_ratio_min", "seq_ratio_max"]
        values += [
            torch.where(any_valid, torch.where(seq_valid, ratio, big).min(), zero) if b else zero,
            torch.where(any_valid, torch.where(seq_valid, ratio, -big).max(), zero) if b else zero,
        ]
    # One device-to-host transfer for all scalars (one sync per call on GPU), then the sort-based p99.
    metrics = dict(zip(names, torch.stack(values).double().tolist(), strict=True))
    metrics["log_ratio_abs_p99"] = masked_quantile(x.abs(), mask, 0.99)
    metrics["num_tokens"] = float(num_tokens)
    metrics["num_sequences"] = float(b)
    return metrics
