"""The policy update of one rollout round, and the no-grad log-prob passes that feed it.

``update_round``: K optimizer steps over strided mini-batches of the round's rows; each step accumulates
micro-batches of ``micro_batch_size`` rows, or, with ``trainer.max_tokens_per_micro_batch``, of rows grouped up to
a token budget (padded tokens; with ``trainer.packing``, real tokens, the rows laid end to end without padding).
The no-grad passes (old and reference log-probs) run the same micro-batches, step by step. Per micro-batch, in
this order: take the rows of everything (one ``TrainBatch.select``), drop the columns that are padding in all of
them (``trimmed``: each micro-batch is as wide as its own longest row, not the round's), move them to the policy's
device (one ``to``), forward with gradients in train mode (so gradient checkpointing recomputes), the loss (:func:`micro_batch_loss`, pure), one collective to agree whether the
loss is finite everywhere, backward. A non-finite loss is replaced by one whose gradients are NaN, so the step is
dropped before anything is applied: by :class:`~mm_gmpo.trainer.engine.TorchUpdater` itself, and by DeepSpeed's own
overflow check under ZeRO (AdamW's moments never see the bad gradients).

Under ZeRO-3 every forward of a module gathers its parameters in a collective, so every process must call each
module the same number of times: the LM head runs in chunks of response tokens, and processes whose micro-batch
has fewer tokens run empty chunks up to the largest count (``sync_chunks``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from mm_gmpo.algorithms import add_kl_penalty, masked_mean, masked_sum
from mm_gmpo.rollout.types import RolloutBatch
from mm_gmpo.trainer import dist
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.trainer.state import metric_weight, minibatch_rows, reduce_metric_rows


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
    entropy_coef: float = 0.0
    sync_chunks: bool = False  # ZeRO-3 with several processes: equal LM-head calls on every process
    max_tokens_per_micro_batch: int = 0  # > 0: micro-batches by token budget instead of by row count
    packing: bool = False  # each micro-batch's rows end to end in one sequence, no padding (see policy_logprobs)
    trim: bool = True  # each micro-batch as wide as its own rows; False: as wide as the round (benchmarks only)
    # algorithm.loss_aggregation=token_mean: every loss's denominator is the step's response tokens over all
    # processes (one all-reduce per step) instead of sequences_per_step, and the KL term is a token mean too
    token_mean: bool = False


def micro_batches(rows: list[int], size: int) -> list[list[int]]:
    """``rows`` cut into consecutive pieces of at most ``size``."""
    return [rows[start : start + size] for start in range(0, len(rows), max(size, 1))]


def token_budget_bins(
    prompt_lengths: list[int], response_lengths: list[int], budget: int, packed: bool = False
) -> list[list[int]]:
    """Indices of the rows in bins whose cost stays within ``budget`` tokens; a row over the budget gets a bin of
    its own. Pure.

    Padded (``packed=False``): a trimmed micro-batch costs rows x (its longest prompt + its longest response), since
    prompts are left-padded and responses right-padded the two maxima add up even when no single row has both.
    Longest rows first into the open bin, so each bin's rows are of similar length.
    Packed: a micro-batch costs the sum of its rows' lengths; first fit, longest first (no padding to share).
    """
    order = sorted(range(len(prompt_lengths)), key=lambda i: -(prompt_lengths[i] + response_lengths[i]))
    bins: list[list[int]] = []
    if packed:
        loads: list[int] = []
        for i in order:
            size = prompt_lengths[i] + response_lengths[i]
            fits = next((b for b, load in enumerate(loads) if load + size <= budget), None)
            if fits is None:
                bins.append([i])
                loads.append(size)
            else:
                bins[fits].append(i)
                loads[fits] += size
        return bins
    longest = (0, 0)  # the open bin's longest prompt and response
    for i in order:
        grown = (max(longest[0], prompt_lengths[i]), max(longest[1], response_lengths[i]))
        if bins and (len(bins[-1]) + 1) * sum(grown) <= budget:
            bins[-1].append(i)
            longest = grown
        else:
            bins.append([i])
            longest = (prompt_lengths[i], response_lengths[i])
    return bins


def split_to_count(bins: list[list[int]], count: int) -> list[list[int]]:
    """``bins`` split (the largest first) until there are ``count`` of them; every process then runs the same
    number of forwards and backwards. Pure; needs at least ``count`` items."""
    bins = [list(b) for b in bins]
    while len(bins) < count:
        largest = max(range(len(bins)), key=lambda j: len(bins[j]))
        if len(bins[largest]) < 2:
            raise ValueError(f"cannot make {count} micro-batches of {sum(map(len, bins))} rows")
        half = len(bins[largest]) // 2
        bins[largest : largest + 1] = [bins[largest][:half], bins[largest][half:]]
    return bins


def plan_micro_batches(ctx, batch: RolloutBatch, rows: list[int], s: UpdateSettings) -> list[list[int]]:
    """The micro-batches of ``rows``: by count (``micro_batch_size``), or by the token budget
    ``max_tokens_per_micro_batch``; with several processes, as many on each process as on the busiest."""
    if not s.max_tokens_per_micro_batch:
        return micro_batches(rows, s.micro_batch_size)
    prompt = batch.attention_mask[rows, : batch.prompt_length].sum(dim=1).tolist()
    response = batch.response_mask[rows].sum(dim=1).tolist()
    plan = token_budget_bins(prompt, response, s.max_tokens_per_micro_batch, packed=s.packing)
    bins = [[rows[i] for i in b] for b in plan]
    if ctx.world_size > 1:
        bins = split_to_count(bins, int(dist.all_reduce_max(ctx, [float(len(bins))])[0]))
    return bins


def round_plan(ctx, batch: RolloutBatch, s: UpdateSettings) -> list[list[list[int]]]:
    """The micro-batches of every optimizer step of the round (step k: the strided rows ``i % K == k``)."""
    k = s.updates_per_round
    return [plan_micro_batches(ctx, batch, minibatch_rows(batch.num_rows, k, update), s) for update in range(k)]


def padding_stats(
    batch: RolloutBatch, plan: list[list[int]], trim: bool = True, packed: bool = False
) -> tuple[float, float]:
    """(computed tokens, real tokens) of ``plan``'s micro-batches, each trimmed to its own longest row (or, with
    ``trim=False``, as wide as the whole batch; with ``packed``, its real tokens only)."""
    real = float(batch.attention_mask[[r for rows in plan for r in rows]].sum())
    if packed:
        return real, real
    computed = 0
    for rows in plan:
        width = sum(batch.select(rows).padded_width()) if trim else batch.input_ids.shape[1]
        computed += len(rows) * width
    return float(computed), real


def lm_head_chunks(ctx: dist.DistContext, batch: RolloutBatch, chunk_size: int, sync: bool) -> int:
    """LM-head calls this micro-batch makes: its own count, or the largest over processes when ``sync``."""
    own = math.ceil(int(batch.response_mask.sum()) / max(chunk_size, 1))
    return int(dist.all_reduce_max(ctx, [float(own)])[0]) if sync else own


def no_grad_logprobs(
    ctx: dist.DistContext,
    model: torch.nn.Module,
    batch: RolloutBatch,
    settings: UpdateSettings,
) -> torch.Tensor:
    """[N, R] float32 on the CPU: log-probs of the sampled tokens under ``model`` (eval mode, no gradients),
    in the update's micro-batches (:func:`round_plan`), each trimmed to its own rows and moved to the model's
    device."""
    device = next(model.parameters()).device
    out = torch.zeros(batch.sampler_logprobs.shape, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for rows in (micro for step in round_plan(ctx, batch, settings) for micro in step):
                sub = batch.select(rows)
                sub = (sub.trimmed() if settings.trim else sub).to(device)
                chunks = lm_head_chunks(ctx, sub, settings.chunk_size, settings.sync_chunks)
                logprobs, _ = policy_logprobs(
                    model,
                    sub,
                    temperature=settings.temperature,
                    chunk_size=settings.chunk_size,
                    min_chunks=chunks,
                    packed=settings.packing,
                )
                out[rows, : logprobs.shape[1]] = logprobs.float().cpu()
    finally:
        model.train(was_training)
    return out


def micro_batch_loss(
    loss_fn,
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    batch: TrainBatch,
    s: UpdateSettings,
    step_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The micro-batch's share of the step's loss (policy loss, KL, entropy bonus) and its metrics.

    ``logprobs``/``entropy`` [B, R] from the policy; ``batch`` on their device. Pure: no collectives.
    ``step_tokens``: with ``s.token_mean``, the response tokens of the whole step (all processes), the
    denominator of every term; otherwise the denominator is ``s.sequences_per_step``.
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
    loss, metrics = loss_fn(logprobs, old, batch.advantages, mask, denominator=denominator, **s.clip)
    if batch.ref_logprobs is not None:
        loss, kl_metrics = add_kl_penalty(
            loss, logprobs, batch.ref_logprobs, mask, s.kl_coef, denominator, **kl_options
        )
        metrics.update(kl_metrics)
    if s.entropy_coef:
        loss = loss - s.entropy_coef * entropy_term / denominator
    metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
    metrics["loss"] = float(loss.detach()) * denominator / own  # with KL/entropy terms
    return loss, metrics


def optimizer_step(ctx, updater, loss_fn, batch: TrainBatch, rows: list[int], s: UpdateSettings) -> dict:
    """One optimizer step over ``rows`` of ``batch`` (micro-batch by micro-batch); its metrics."""
    device = updater.device
    updater.module.train()  # gradient checkpointing (and any dropout) act only in train mode
    micro_metrics, nonfinite = [], False
    plan = plan_micro_batches(ctx, batch.rollout, rows, s)
    step_tokens = None
    if s.token_mean:  # token-mean aggregation: the step's response tokens on every process
        step_tokens = dist.all_reduce_sum(ctx, [float(batch.rollout.response_mask[rows].sum())])[0]
    for position, idx in enumerate(plan):
        last = position == len(plan) - 1
        updater.begin_micro_batch(last)
        sub = batch.select(idx)
        sub = (sub.trimmed() if s.trim else sub).to(device)
        logprobs, entropy = updater.forward(
            sub.rollout,
            temperature=s.temperature,
            chunk_size=s.chunk_size,
            with_entropy=True,
            entropy_grad=bool(s.entropy_coef),  # otherwise a metric: no backward through it
            min_chunks=lm_head_chunks(ctx, sub.rollout, s.chunk_size, s.sync_chunks),
            packed=s.packing,
        )
        loss, metrics = micro_batch_loss(loss_fn, logprobs, entropy, sub, s, step_tokens)
        finite = dist.all_reduce_max(ctx, [0.0 if torch.isfinite(loss) else 1.0])[0] == 0.0
        if not finite:  # NaN gradients: the step is dropped before it is applied (see the module docstring)
            nonfinite = True
            loss = logprobs.sum() * float("nan")
        updater.backward(loss, last=last)
        micro_metrics.append(metrics)
    grad_norm, applied = updater.step(skip=nonfinite)
    row = {f"actor/{key}": v for key, v in reduce_step_metrics(ctx, micro_metrics).items()}
    row.update({"actor/grad_norm": grad_norm, "actor/lr": updater.lr, "actor/skipped": float(not applied)})
    computed, real = dist.all_reduce_sum(ctx, list(padding_stats(batch.rollout, plan, s.trim, s.packing)))
    row["perf/padding_frac"] = 1.0 - real / max(computed, 1.0)  # pad tokens / computed tokens, all processes
    row["perf/micro_batches"] = float(len(plan))  # per process (equal on every process)
    return row


def update_round(ctx, updater, loss_fn, batch: TrainBatch, s: UpdateSettings, autocast=nullcontext) -> list[dict]:
    """K optimizer steps over strided mini-batches of ``batch`` (on any device); one metrics dict per step."""
    rows_out = []
    with autocast():
        for update in range(s.updates_per_round):
            rows = minibatch_rows(batch.num_rows, s.updates_per_round, update)
            rows_out.append(optimizer_step(ctx, updater, loss_fn, batch, rows, s))
    return rows_out


def reduce_step_metrics(ctx: dist.DistContext, micro_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Micro-batch metrics -> one dict, then over processes by name: ``*_min``/``*_max`` global extremes,
    ``num_*`` sums, means weighted by tokens or by sequences (``state.metric_weight``)."""
    local = reduce_metric_rows(micro_metrics)
    if ctx.world_size == 1:
        return local
    keys = sorted(local)
    weights = [1.0 if k.startswith("num_") else metric_weight(k, local) for k in keys]
    sums = dict(
        zip(keys, dist.all_reduce_sum(ctx, [local[k] * w for k, w in zip(keys, weights, strict=True)]), strict=True)
    )
    totals = dict(zip(keys, dist.all_reduce_sum(ctx, weights), strict=True))
    signed = [-local[k] if k.endswith("_min") else local[k] for k in keys]  # one MAX reduces both extremes
    maxes = dict(zip(keys, dist.all_reduce_max(ctx, signed), strict=True))
    out = {}
    for key in keys:
        if key.endswith("_max"):
            out[key] = maxes[key]
        elif key.endswith("_min"):
            out[key] = -maxes[key]
        elif key.startswith("num_"):
            out[key] = sums[key]
        else:
            out[key] = sums[key] / (totals[key] or 1.0)
    return out
