"""Policy losses: GMPO (and the paper's ablations), HMPO, GSPO, GRPO and Dr.GRPO, as pure functions over tensors.

Every loss has the same signature and is registered where it is defined (``@register_loss``, see
:mod:`mm_gmpo.algorithms.registry`; the paper's ablations are partials of :func:`gmpo_loss`), so the trainer can
call any of them by name::

    loss, metrics = fn(logprobs, old_logprobs, advantages, response_mask,
                       clip_low=..., clip_high=..., denominator=None)

Shapes: ``logprobs``, ``old_logprobs``, ``response_mask`` ``[B, T]``; ``advantages`` ``[B]`` (one per
sequence). ``response_mask`` (bool or 0/1) marks the response's text tokens; everything else (prompt, image,
padding, after EOS) is selected away before any arithmetic, so its values never reach the loss or a gradient.
``old_logprobs`` is treated as a constant (detached). Computation is in float32 (float64 stays float64).

Unit of normalisation: every loss here is a **per-sequence** loss ``l_i`` (one scalar per response) and the
result is ``sum_i l_i / denominator``, or the mean over the ``B`` sequences of the call when ``denominator`` is
None. The trainer passes the number of sequences in the global mini-batch (all micro-batches, all processes),
so summing micro-batch losses equals one call on the whole batch, value and gradient. A row whose mask is empty
contributes 0 and still counts in ``B``; a sequence with A = 0 contributes 0 (with a zero, finite gradient).

Numerics: the exponent of every exponentiated (log-)ratio is clamped to [-20, 20] (``LOG_RATIO_LIMIT``).
exp(20) ~ 4.9e8 keeps the loss, its gradient and the *squared* gradient norm that grad-norm clipping computes
representable in float32/bf16 (exp(50)^2 already overflows float32); a sequence or token that far off-policy
carries no trustworthy signal, and the clamp gives it zero gradient instead of an inf/NaN step. One exception:
``gmpo_nonorm`` exponentiates the sum as the official code does, clamped only from above at
``NONORM_EXP_LIMIT`` = 88 (exp(88.7) overflows float32), so that a sequence with A = 0 never makes 0 * inf = NaN.

Token-mean aggregation (``grpo_loss(..., aggregation="token_mean")``, EasyR1's ``loss_avg_mode: token``) changes
the unit to *tokens*: ``loss = sum_{i,t} l_it / denominator`` with the number of response tokens of the global
mini-batch as the denominator (None: the tokens of the call).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from mm_gmpo.algorithms.aggregate import as_bool_mask, masked_count, masked_mean, masked_sum
from mm_gmpo.algorithms.diagnostics import LOG_RATIO_LIMIT, loss_metrics
from mm_gmpo.algorithms.registry import LossSpec, register_loss

ClipMode = Literal["token", "sequence", "sequence_sum", "none"]

GMPO_CLIP = 0.4  # log space: token log-ratios clipped to [-0.4, 0.4], i.e. ratios in [e^-0.4, e^0.4]
GRPO_CLIP = 0.2  # ratio space: [1 - 0.2, 1 + 0.2]
GSPO_CLIP_LOW, GSPO_CLIP_HIGH = 3e-4, 4e-4  # ratio space, the GSPO paper's values for its sequence ratio
DRGRPO_MAX_RESPONSE_LENGTH = 3000  # Dr.GRPO's constant normaliser: the response-length limit of the recipe
NONORM_EXP_LIMIT = 88.0  # gmpo_nonorm's only clamp: exp(88) ~ 1.65e38 < float32's max (exp(88.72))
Aggregation = Literal["seq_mean", "token_mean"]
AGGREGATIONS = ("seq_mean", "token_mean")


def _prepare(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    denominator: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes; return (log_ratio [B, T] with 0 at masked positions, mask [B, T] bool, A [B], |o| [B])."""
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    for name, tensor in (("old_logprobs", old_logprobs), ("response_mask", response_mask)):
        if tensor.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logprobs {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logprobs.shape[0]}], got shape {tuple(advantages.shape)}")
    if denominator is not None and not denominator > 0:
        raise ValueError(f"denominator must be a positive count (sequences; tokens for token_mean), got {denominator}")
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    mask = as_bool_mask(response_mask)
    raw = logprobs.to(dtype) - old_logprobs.detach().to(dtype)
    log_ratio = torch.where(mask, raw, torch.zeros((), dtype=dtype, device=raw.device))  # [B, T]
    return log_ratio, mask, advantages.detach().to(dtype), masked_count(mask, dim=-1)


def _reduce(per_sequence_loss: torch.Tensor, denominator: float | None) -> torch.Tensor:
    """sum_i l_i / denominator, or the mean over the B sequences (0 for B = 0)."""
    divisor = denominator if denominator is not None else max(per_sequence_loss.numel(), 1)
    return per_sequence_loss.sum() / divisor


def _check_clip(clip_low: float, clip_high: float, upper_low: float = math.inf) -> None:
    if not (0.0 <= clip_low <= upper_low) or not clip_high >= 0.0:
        raise ValueError(f"clip_low must be in [0, {upper_low}] and clip_high >= 0, got {clip_low}, {clip_high}")


def _token_clip(
    log_ratio: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GMPO's sign-aware token clip in log space: (c [B, T], clipped_low [B, T], clipped_high [B, T]).

    A_i > 0: c_t = min(x_t, clamp(x_t, -clip_low, clip_high)) (only x_t > clip_high clips); A_i < 0:
    c_t = max(x_t, clamp(...)) (only x_t < -clip_low clips). A clipped token holds the constant bound.
    """
    clipped_high = mask & (adv > 0)[:, None] & (log_ratio > clip_high)  # [B, T]
    clipped_low = mask & (adv < 0)[:, None] & (log_ratio < -clip_low)
    used = torch.where(clipped_high, clip_high, torch.where(clipped_low, -clip_low, log_ratio))
    return used, clipped_low, clipped_high


def _sequence_ratio_loss(
    seq_ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    adv: torch.Tensor,
    lengths: torch.Tensor,
    clipped_low: torch.Tensor,
    clipped_high: torch.Tensor,
    denominator: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a sequence-ratio objective (GMPO, HMPO) and its metrics: l_i = -A_i * ratio_i (0 for an empty
    response), reduced by :func:`_reduce`."""
    valid = lengths > 0
    per_sequence = torch.where(valid, -adv * seq_ratio, torch.zeros((), dtype=adv.dtype, device=adv.device))
    loss = _reduce(per_sequence, denominator)
    return loss, loss_metrics(log_ratio, mask, adv, clipped_low, clipped_high, per_sequence, seq_ratio, valid)


@register_loss("gmpo")
def gmpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = GMPO_CLIP,
    clip_high: float = GMPO_CLIP,
    denominator: float | None = None,
    *,
    clip_mode: ClipMode = "token",
    length_norm: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Geometric-Mean Policy Optimization (arXiv 2507.20673), in log space. Unit: sequences.

    With x_t = log pi_theta(o_t) - log pi_old(o_t) over the response tokens of sequence i and the clip range
    [-clip_low, clip_high] in *log* space (default 0.4 each, i.e. ratios in [e^-0.4, e^0.4]):

    - ``clip_mode="token"`` (the paper's GMPO), sign-aware:
      A_i > 0: c_t = min(x_t, clamp(x_t, -clip_low, clip_high));  A_i < 0: c_t = max(x_t, clamp(...)).
      So only x_t > clip_high clips when A_i > 0, and only x_t < -clip_low when A_i < 0; a clipped token's
      log-ratio is replaced by the constant bound (zero gradient).
    - ``clip_mode="sequence_sum"`` (the paper's sequence-clip ablation, as its code does it): c_t = x_t, and the
      same sign-aware clip is applied to the sequence's log-ratio *sum* S_i = sum_t x_t, before the division by
      |o_i| below.
    - ``clip_mode="sequence"`` (GSPO's): c_t = x_t, and the clip is applied to the exponent m_i (the mean).
    - ``clip_mode="none"`` (ablation): c_t = x_t.

    m_i = sum_t c_t / |o_i| (``length_norm=False``, ablation: sum_t c_t), clamped to [-20, 20] (without the
    length norm only from above, at 88: the official code exponentiates the sum as it is);
    ratio_i = exp(m_i), the geometric mean of the clipped token ratios; l_i = -A_i * ratio_i;
    loss = sum_i l_i / denominator (default: mean over the B sequences). A_i = 0 or |o_i| = 0 gives l_i = 0.

    Gradient (token clip, length-normalised): d l_i / d logprobs_t = -A_i * ratio_i / |o_i| for unclipped
    tokens and 0 for clipped ones; on-policy (ratio 1) that is -A_i / |o_i|, GRPO's direction.
    """
    if clip_mode not in ("token", "sequence", "sequence_sum", "none"):
        raise ValueError(f"clip_mode must be 'token', 'sequence', 'sequence_sum' or 'none', got {clip_mode!r}")
    _check_clip(clip_low, clip_high)
    log_ratio, mask, adv, lengths = _prepare(logprobs, old_logprobs, advantages, response_mask, denominator)
    positive, negative = adv > 0, adv < 0  # [B]
    no_clip = torch.zeros_like(mask)
    clipped_low, clipped_high = no_clip, no_clip
    if clip_mode == "token":
        log_ratio_used, clipped_low, clipped_high = _token_clip(log_ratio, mask, adv, clip_low, clip_high)
    else:
        log_ratio_used = log_ratio
    exponent = masked_sum(log_ratio_used, mask, dim=-1)  # [B]

    def clip_sequences(value: torch.Tensor) -> torch.Tensor:
        nonlocal clipped_low, clipped_high
        seq_high, seq_low = positive & (value > clip_high), negative & (value < -clip_low)
        clipped_high, clipped_low = mask & seq_high[:, None], mask & seq_low[:, None]
        return torch.where(seq_high, clip_high, torch.where(seq_low, -clip_low, value))

    if clip_mode == "sequence_sum":  # callsys/GMPO clips the sum of the sequence's log-ratios, then divides
        exponent = clip_sequences(exponent)
    if length_norm:
        exponent = exponent / lengths.clamp(min=1).to(exponent.dtype)
    if clip_mode == "sequence":
        exponent = clip_sequences(exponent)
    if length_norm:
        exponent = exponent.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    else:  # the official nonorm: no clamp but where float32's exp overflows (see the module docstring)
        exponent = exponent.clamp(max=NONORM_EXP_LIMIT)
    seq_ratio = torch.exp(exponent)  # [B]
    return _sequence_ratio_loss(seq_ratio, log_ratio, mask, adv, lengths, clipped_low, clipped_high, denominator)


# The paper's ablations: GMPO with one option changed (registered partials of gmpo_loss, same signature).
# gmpo_noclip: no clipping, l_i = -A_i * exp(mean_t x_t); the clip arguments are ignored.
gmpo_noclip_loss = register_loss("gmpo_noclip", clip_mode="none")(gmpo_loss)
# gmpo_seqclip: the sequence-level clip of the paper's code: S_i = sum_t x_t, sign-aware clip of S_i to
# [-clip_low, clip_high] (A > 0: min(S, clamp(S)); A < 0: max), m_i = S_i / |o_i|, l_i = -A_i * exp(m_i).
gmpo_seqclip_loss = register_loss("gmpo_seqclip", clip_mode="sequence_sum")(gmpo_loss)
# gmpo_nonorm: no 1/|o| (the product of clipped token ratios, not their geometric mean), l_i = -A_i * exp(sum_t c_t).
# As the official code (callsys/GMPO ``gmpo_without_norm``) the sum is exponentiated unclamped, except from above
# at NONORM_EXP_LIMIT = 88, where float32's exp would overflow (beyond it: the ratio exp(88) and zero gradient for
# that sequence). Exponents near 88 still give gradients near 1e38, whose squared norm overflows: grad-norm
# clipping then sees an infinite norm and the trainer skips the step (the official code would apply NaN).
gmpo_nonorm_loss = register_loss("gmpo_nonorm", length_norm=False)(gmpo_loss)


@register_loss("hmpo")
def hmpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = GMPO_CLIP,
    clip_high: float = GMPO_CLIP,
    denominator: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Harmonic-Mean Policy Optimization (callsys/GMPO ``train_zero_math_hmpo.py``, not in the paper's tables).

    GMPO's sign-aware token clip in log space (c_t, default +-0.4), then the *harmonic* mean of the clipped
    token ratios r_t = exp(c_t) instead of their geometric mean:

        h_i = |o_i| / sum_t (1 / r_t) = exp(-log(mean_t exp(-c_t))),    l_i = -A_i * h_i

    computed in log space (a log-sum-exp of -c_t, so 1 / r_t never overflows), exponent clamped to [-20, 20].
    Unit: sequences (loss = sum_i l_i / denominator). h_i <= the geometric mean <= the arithmetic mean. The
    gradient of an unclipped token is d l_i / d logprobs_t = -A_i * h_i * w_t with w_t = (1 / r_t) /
    sum_s (1 / r_s) (on-policy: -A_i / |o_i|, as GMPO and GRPO), so tokens whose ratio fell get the larger share.
    """
    _check_clip(clip_low, clip_high)
    log_ratio, mask, adv, lengths = _prepare(logprobs, old_logprobs, advantages, response_mask, denominator)
    used, clipped_low, clipped_high = _token_clip(log_ratio, mask, adv, clip_low, clip_high)
    neg = torch.where(mask, -used, torch.full((), -math.inf, dtype=used.dtype, device=used.device))  # [B, T]
    valid = lengths > 0
    zero = torch.zeros((), dtype=used.dtype, device=used.device)
    peak = torch.where(valid, neg.amax(dim=-1), zero).detach()  # [B] the log-sum-exp shift (any constant works)
    shifted = torch.where(mask, neg - peak[:, None], zero)
    total = masked_sum(torch.exp(shifted), mask, dim=-1)  # >= 1 where valid: the peak's own term is 1
    total = torch.where(valid, total, torch.ones((), dtype=used.dtype, device=used.device))
    log_mean_inverse = peak + torch.log(total) - torch.log(lengths.clamp(min=1).to(used.dtype))
    seq_ratio = torch.exp((-log_mean_inverse).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))  # [B]
    return _sequence_ratio_loss(seq_ratio, log_ratio, mask, adv, lengths, clipped_low, clipped_high, denominator)


@register_loss("gspo")
def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = GSPO_CLIP_LOW,
    clip_high: float = GSPO_CLIP_HIGH,
    denominator: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (Group Sequence Policy Optimization, arXiv 2507.18071): a sequence-level ratio. Unit: sequences.

    s_i = exp(mean_t x_t) (the length-normalised sequence ratio), clip range in *ratio* space,
    l_i = -min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i). Defaults 3e-4 / 4e-4 (the GSPO paper).
    Because exp is monotone this is GMPO's sequence-clip ablation with log-space bounds
    [log(1 - clip_low), log(1 + clip_high)], and it is computed that way.
    """
    _check_clip(clip_low, clip_high, upper_low=1.0)
    log_low = -math.log1p(-clip_low) if clip_low < 1.0 else math.inf
    return gmpo_loss(
        logprobs,
        old_logprobs,
        advantages,
        response_mask,
        log_low,
        math.log1p(clip_high),
        denominator,
        clip_mode="sequence",
    )


def _grpo_token_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    denominator: float | None,
    clip_dual: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip per-token losses [B, T]; also (log_ratio, mask, A, clipped_low, clipped_high, clipped_dual)."""
    _check_clip(clip_low, clip_high, upper_low=1.0)
    if clip_dual != 0.0 and not clip_dual > 1.0:
        raise ValueError(f"clip_dual must be 0 (off) or > 1, got {clip_dual}")
    log_ratio, mask, adv, _ = _prepare(logprobs, old_logprobs, advantages, response_mask, denominator)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))  # [B, T]
    # -min(r A, clip(r) A) selects the constant bound exactly where r leaves the range on A's side:
    # A > 0 and r > 1 + clip_high, or A < 0 and r < 1 - clip_low; elsewhere it is -r A.
    clipped_high = mask & (adv > 0)[:, None] & (ratio > 1.0 + clip_high)
    clipped_low = mask & (adv < 0)[:, None] & (ratio < 1.0 - clip_low)
    # Dual clip (arXiv 1912.09729, EasyR1's clip_ratio_dual): for A < 0 the term is also bounded by -A * C,
    # i.e. min(max(-r A, -clip(r) A), -C A), which takes the constant C exactly where r > C.
    clipped_dual = mask & (adv < 0)[:, None] & (ratio > clip_dual) if clip_dual else torch.zeros_like(mask)
    weight = torch.where(clipped_high, 1.0 + clip_high, torch.where(clipped_low, 1.0 - clip_low, ratio))
    weight = torch.where(clipped_dual, clip_dual, weight)
    token_losses = -adv[:, None] * weight  # [B, T]
    return token_losses, log_ratio, mask, adv, clipped_low, clipped_high, clipped_dual


def _with_dual_metric(metrics: dict[str, float], clipped_dual: torch.Tensor, clip_dual: float) -> dict[str, float]:
    """Add ``clip_frac_dual`` (tokens on the dual-clip bound) when the dual clip is on; ``clip_frac`` counts
    them too (every token whose gradient the clipping zeroed)."""
    if clip_dual:
        fraction = float(clipped_dual.sum()) / max(metrics["num_tokens"], 1.0)
        metrics["clip_frac_dual"] = fraction
        metrics["clip_frac"] += fraction
    return metrics


@register_loss("grpo", LossSpec(takes_clip_dual=True, aggregations=("seq_mean", "token_mean")))
def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = GRPO_CLIP,
    clip_high: float = GRPO_CLIP,
    denominator: float | None = None,
    *,
    clip_dual: float = 0.0,
    aggregation: Aggregation = "seq_mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO (PPO-clip with group advantages).

    r_t = exp(x_t) (x_t clamped to [-20, 20]); per token l_it = -min(r_t A_i, clip(r_t, 1 - clip_low,
    1 + clip_high) A_i); with ``clip_dual`` = C > 1 (dual-clip PPO, off at 0) a token with A_i < 0 and r_t > C
    gets l_it = -C A_i instead (constant: zero gradient).

    - ``aggregation="seq_mean"`` (default). Unit: sequences. l_i = the mean of l_it over the |o_i| response
      tokens (0 if none); loss = sum_i l_i / denominator (default: mean over the B sequences). Gradient per
      unclipped token: -A_i * r_t / |o_i|; clipped: 0.
    - ``aggregation="token_mean"`` (EasyR1's ``loss_avg_mode: token``). Unit: tokens. loss = sum_{i,t} l_it /
      denominator, the denominator being the response tokens of the global mini-batch (default: the N tokens of
      the call). Gradient per unclipped token: -A_i * r_t / N. ``pg_loss`` is then the token mean of the call.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    token_losses, log_ratio, mask, adv, low, high, dual = _grpo_token_losses(
        logprobs, old_logprobs, advantages, response_mask, clip_low, clip_high, denominator, clip_dual
    )
    if aggregation == "token_mean":
        sums = masked_sum(token_losses, mask, dim=-1)  # [B]
        num_tokens = max(int(masked_count(mask)), 1)
        loss = sums.sum() / (denominator if denominator is not None else num_tokens)
        per_sequence = sums * (sums.numel() / num_tokens)  # for the metric: its mean is the token mean
    else:
        per_sequence = masked_mean(token_losses, mask, dim=-1)  # [B]
        loss = _reduce(per_sequence, denominator)
    return loss, _with_dual_metric(loss_metrics(log_ratio, mask, adv, low, high, per_sequence), dual, clip_dual)


@register_loss("drgrpo", LossSpec(takes_max_response_length=True, normalize_std=False, takes_clip_dual=True))
def drgrpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = GRPO_CLIP,
    clip_high: float = GRPO_CLIP,
    denominator: float | None = None,
    *,
    max_response_length: int = DRGRPO_MAX_RESPONSE_LENGTH,
    clip_dual: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dr.GRPO's loss (arXiv 2503.20783): GRPO's per-token term with a constant length normaliser.

    l_i = sum_t -min(r_t A_i, clip(r_t, 1 - clip_low, 1 + clip_high) A_i) / L with L = ``max_response_length``
    (a constant, default 3000, the recipe's response limit) instead of 1/|o_i|, so long responses are not
    down-weighted per token. Unit: still sequences: loss = sum_i l_i / denominator (default: mean over the B
    sequences), which equals Dr.GRPO's sum over all tokens / (num_sequences * L).
    The other half of Dr.GRPO, advantages without the std division, is ``algorithm.normalize_std=false``;
    this loss does not change the advantages. ``clip_dual``: as in :func:`grpo_loss`.
    """
    if max_response_length <= 0:
        raise ValueError(f"max_response_length must be positive, got {max_response_length}")
    token_losses, log_ratio, mask, adv, low, high, dual = _grpo_token_losses(
        logprobs, old_logprobs, advantages, response_mask, clip_low, clip_high, denominator, clip_dual
    )
    per_sequence = masked_sum(token_losses, mask, dim=-1) / max_response_length  # [B]
    loss = _reduce(per_sequence, denominator)
    return loss, _with_dual_metric(loss_metrics(log_ratio, mask, adv, low, high, per_sequence), dual, clip_dual)
