"""What one micro-batch of the policy update computes, as a pure function: :func:`micro_batch_loss` (the policy
loss, the KL term and the entropy bonus, over the global denominator, and a mixture-of-experts policy's router
load-balancing loss), and the settings the update resolves once from the config (:class:`UpdateSettings`). The
loop around it (micro-batches, backward, optimizer steps, the processes' agreement) is the actor's:
:mod:`mm_gmpo.trainer.actor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mm_gmpo.algorithms import add_kl_penalty, masked_mean, masked_sum
from mm_gmpo.trainer.batch import TrainBatch


@dataclass(frozen=True)
class UpdateSettings:
    """What the update needs from the config, resolved once."""

    temperature: float  # the sampling temperature (log-probs of the tempered distribution)
    chunk_size: int  # response tokens per LM-head call
    micro_batch_size: int  # rows per forward/backward
    updates_per_round: int  # optimizer steps per round (K)
    sequences_per_step: int  # rows of one optimizer step over all processes: every loss's denominator
    clip: dict[str, float] = field(default_factory=dict)  # clip_low/clip_high when the config sets them
    kl_coef: float = 0.0
    kl_estimator: str = "k3"  # algorithm.kl_estimator
    rollout_is: bool = False  # the loss is corrected by the sampler's log-probs (algorithm.rollout_is_mode)
    entropy_coef: float = 0.0
    sync_chunks: bool = False  # ZeRO-3 with several processes: equal LM-head calls on every process
    max_tokens_per_micro_batch: int = 0  # > 0: micro-batches by token budget instead of by row count
    packing: bool = False  # each micro-batch's rows end to end in one sequence, no padding (see policy_logprobs)
    # algorithm.loss_aggregation=token_mean: every loss's denominator is the step's response tokens over all
    # processes (one all-reduce per step) instead of sequences_per_step, and the KL term is a token mean too
    token_mean: bool = False
    # algorithm.router_aux_loss_coef: > 0 (a mixture-of-experts policy) adds coef x the routers' load-balancing loss
    router_aux_coef: float = 0.0


def micro_batch_loss(
    loss_fn,
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    batch: TrainBatch,
    s: UpdateSettings,
    step_tokens: float | None = None,
    router_aux: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The micro-batch's share of the step's loss (policy loss, KL, entropy bonus, router loss) and its metrics.

    ``logprobs``/``entropy`` [B, R] from the policy; ``batch`` on their device. Pure: no collectives.
    ``step_tokens``: with ``s.token_mean``, the response tokens of the whole step (all processes), the
    denominator of every term; otherwise the denominator is ``s.sequences_per_step``.
    ``router_aux``: the load-balancing loss of this micro-batch's forward (a scalar, see
    ``trainer.forward.router_aux_loss``), weighted by the micro-batch's share of the step's sequences: the step
    adds ``s.router_aux_coef`` x the sequence-weighted mean of its micro-batches' router losses over all processes
    (their plain mean when they hold as many rows each), which the ``router_aux_loss`` metric reports; how the rows
    are cut into micro-batches changes only the micro-batches' own router losses (a statistic of their tokens).
    """
    mask = batch.response_mask
    old = batch.old_logprobs if batch.old_logprobs is not None else logprobs.detach()
    if s.token_mean:
        denominator = step_tokens if step_tokens else float(mask.sum()) or 1.0
        kl_options, entropy_term = {"aggregation": "token_mean"}, masked_sum(entropy, mask)
        own = max(float(mask.sum()), 1.0)  # the "loss" metric: this micro-batch's token mean
    else:
        denominator = s.sequences_per_step
        kl_options, entropy_term = {}, masked_mean(entropy, mask, dim=-1).sum()
        own = max(batch.num_rows, 1)  # the "loss" metric: this micro-batch's mean over sequences
    sampler = {"sampler_logprobs": batch.rollout.sampler_logprobs} if s.rollout_is else {}
    loss, metrics = loss_fn(logprobs, old, batch.advantages, mask, denominator=denominator, **s.clip, **sampler)
    if batch.ref_logprobs is not None:
        loss, kl_metrics = add_kl_penalty(
            loss, logprobs, batch.ref_logprobs, mask, s.kl_coef, denominator, estimator=s.kl_estimator, **kl_options
        )
        metrics.update(kl_metrics)
    if s.entropy_coef:
        loss = loss - s.entropy_coef * entropy_term / denominator
    metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
    metrics["loss"] = float(loss.detach()) * denominator / own  # with KL/entropy terms
    if router_aux is not None:  # after the "loss" metric: the policy objective's unit stays what it was
        loss = loss + s.router_aux_coef * router_aux * (batch.num_rows / s.sequences_per_step)
        metrics["router_aux_loss"] = float(router_aux.detach())
    return loss, metrics
