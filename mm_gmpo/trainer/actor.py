"""The actor: one object that owns the policy being trained and every pass over it.

It holds the optimizer wrapper (:class:`~mm_gmpo.trainer.engine.Updater`: AdamW, or a DeepSpeed engine), the
precision (autocast), the loss, the micro-batch planning, the training forward, the preflight comparison with the
sampler and the frozen (possibly offloaded) reference, and it is the loop's only way to them:

- :meth:`Actor.logprobs` / :meth:`Actor.ref_logprobs`: no-grad log-probs of the sampled tokens under the policy /
  the reference, in the update's micro-batches;
- :meth:`Actor.update`: the round's K optimizer steps, one metrics dict per step;
- :meth:`Actor.parity`: the trainer's log-probs against the sampler's, over all processes (the preflight);
- :meth:`Actor.save` / :meth:`Actor.load`: checkpoints; :attr:`Actor.hf_model`: the Hugging Face model
  (generation, weight sync).

The update, per micro-batch, in this order: take the rows of everything (one ``TrainBatch.select``), drop the
columns that are padding in all of them (``trimmed``: each micro-batch is as wide as its own longest row, not the
round's), move them to the policy's device (one ``to``), forward with gradients in train mode (so gradient
checkpointing recomputes; a mixture-of-experts policy with ``algorithm.router_aux_loss_coef`` > 0 also returns its
routers' load-balancing loss), the loss (:func:`~mm_gmpo.trainer.update.micro_batch_loss`, pure), one collective to
agree whether the loss is finite everywhere, backward. A non-finite loss is replaced by one whose gradients are
NaN, so the step is dropped before anything is applied: by :class:`~mm_gmpo.trainer.engine.TorchUpdater` itself,
and by DeepSpeed's own overflow check under ZeRO (AdamW's moments never see the bad gradients).

Under ZeRO-3 every forward of a module gathers its parameters in a collective, so every process must call each
module the same number of times: the LM head runs in chunks of response tokens, and processes whose micro-batch
has fewer tokens run empty chunks up to the largest count (the plan's ``chunks``, agreed once per round).
Every collective of the update is in this file, through :mod:`mm_gmpo.trainer.dist`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from mm_gmpo.algorithms import RolloutIS
from mm_gmpo.algorithms.rollout_is import rollout_is_metrics, rollout_is_stats
from mm_gmpo.errors import UserError
from mm_gmpo.rollout.preflight import ParityReport, default_tolerances, parity_report
from mm_gmpo.rollout.types import RolloutBatch
from mm_gmpo.trainer import dist
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.checkpoint import save_checkpoint
from mm_gmpo.trainer.engine import Updater
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.trainer.metrics import quantile, reduce_loss_metrics
from mm_gmpo.trainer.offload import OffloadedModule
from mm_gmpo.trainer.plan import MicroBatchPlan, plan_round
from mm_gmpo.trainer.precision import Precision
from mm_gmpo.trainer.update import UpdateSettings, micro_batch_loss

log = logging.getLogger(__name__)


class Actor:
    def __init__(
        self,
        updater: Updater,
        loss_fn,
        settings: UpdateSettings,
        *,
        ctx: dist.DistContext | None = None,
        precision: Precision | None = None,
        reference: OffloadedModule | None = None,
        parity_tolerances: tuple[float | None, float | None] = (None, None),
        rollout_is: RolloutIS | None = None,
    ):
        """``loss_fn``: a policy loss of the registry; ``reference``: the frozen KL reference (None: no KL term);
        ``parity_tolerances``: the preflight's (mean, p99) gates, None for the defaults of the compute dtype;
        ``rollout_is``: the rollout importance correction the loss applies (its metrics are the actor's)."""
        self.updater = updater
        self.loss_fn = loss_fn
        self.settings = settings
        self.ctx = ctx or dist.DistContext()
        self.precision = precision
        self.reference = reference
        default_mean, default_p99 = default_tolerances(self.compute_dtype)
        self.parity_tolerances = (parity_tolerances[0] or default_mean, parity_tolerances[1] or default_p99)
        self.rollout_is = rollout_is or RolloutIS("off")
        self._planned: tuple[RolloutBatch, MicroBatchPlan] | None = None

    # ------------------------------------------------------------------ what the loop sees
    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model (generation, weight sync, saving)."""
        return self.updater.module.model

    @property
    def partitioned(self) -> bool:
        """Parameters split over processes (ZeRO-3): every module call is a collective."""
        return self.updater.partitioned

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.precision.compute_dtype if self.precision is not None else next(self.hf_model.parameters()).dtype

    def autocast(self) -> AbstractContextManager:
        """The context every forward of the policy runs in (generation included)."""
        return self.precision.autocast() if self.precision is not None else nullcontext()

    def logprobs(self, rows: RolloutBatch) -> torch.Tensor:
        """[N, R] float32 on the CPU: the policy's no-grad log-probs of the sampled tokens."""
        with self.autocast():
            return no_grad_logprobs(self.hf_model, rows, self.plan(rows), self.settings)

    def ref_logprobs(self, rows: RolloutBatch) -> torch.Tensor | None:
        """[N, R] float32 on the CPU under the frozen reference (on the device only for the pass); None: no KL."""
        if self.reference is None:
            return None
        with self.autocast(), self.reference.on_device() as reference:
            return no_grad_logprobs(reference, rows, self.plan(rows), self.settings)

    def parity(self, rows: RolloutBatch, logprobs: torch.Tensor) -> ParityReport:
        """Trainer (``logprobs``) vs sampler log-probs over every process's response tokens: global mean, the largest
        p99 of any process, global max."""
        mean_tol, p99_tol = self.parity_tolerances
        local = parity_report(
            logprobs, rows, temperature=self.settings.temperature, mean_tolerance=mean_tol, p99_tolerance=p99_tol
        )
        if self.ctx.world_size == 1:
            return local
        total, count, seq_total, seqs = dist.all_reduce_sum(
            self.ctx,
            [
                local.mean_abs_diff * local.num_tokens,
                local.num_tokens,
                local.seq_mean_abs_diff * local.num_sequences,
                local.num_sequences,
            ],
        )
        p99, largest = dist.all_reduce_max(self.ctx, [local.p99_abs_diff, local.max_abs_diff])
        local.mean_abs_diff, local.num_tokens = total / max(count, 1.0), int(count)
        local.seq_mean_abs_diff, local.num_sequences = seq_total / max(seqs, 1.0), int(seqs)
        local.p99_abs_diff, local.max_abs_diff = p99, largest
        return local

    def rollout_is_metrics(self, rows: RolloutBatch, logprobs: torch.Tensor) -> dict[str, float]:
        """``rollout/is_weight_mean``, ``rollout/is_weight_max``, ``rollout/is_clipped_frac`` (mask mode:
        ``is_masked_frac``) of pi_old (``logprobs``) / pi_sampler at ``algorithm.rollout_is_level``, over all
        processes (also with the correction off: what it would do)."""
        local = rollout_is_stats(logprobs, rows.sampler_logprobs, rows.response_mask, self.rollout_is)
        weight_sum, units, bounded = dist.all_reduce_sum(
            self.ctx, [local["weight_sum"], local["units"], local["bounded"]]
        )
        (largest,) = dist.all_reduce_max(self.ctx, [local["weight_max"]])
        stats = {"weight_sum": weight_sum, "units": units, "bounded": bounded, "weight_max": largest}
        return rollout_is_metrics(stats, self.rollout_is)

    def update(self, batch: TrainBatch) -> list[dict[str, float]]:
        """K optimizer steps over strided mini-batches of ``batch`` (on any device); one metrics dict per step."""
        plan = self.plan(batch.rollout)
        with self.autocast():
            return [self._step(batch, plan, k) for k in range(len(plan.steps))]

    def metrics(self) -> dict[str, float]:
        """The round's metrics of the actor itself (the pinned memory of an offloaded reference)."""
        return self.reference.metrics() if self.reference is not None else {}

    def save(self, run_dir: Path, step: int, processor, state: dict, keep_last: int) -> Path:
        """Checkpoint ``checkpoint-<step>`` of the run (every process takes part)."""
        return save_checkpoint(self.ctx, run_dir, step, self.hf_model, self.updater, processor, state, keep_last)

    def load(self, folder: Path) -> None:
        """Weights and optimizer state of a checkpoint; one line when they belong to another model or setup."""
        try:
            self.updater.load_weights(folder)
            self.updater.load_state(folder)
        except (RuntimeError, KeyError, ValueError) as exc:  # shapes or optimizer groups of another model or setup
            first = " ".join(str(exc).split())[:300]
            raise UserError(f"trainer.resume_from={folder} does not fit this model or optimizer ({first})") from exc

    # ------------------------------------------------------------------ inside
    def plan(self, rows: RolloutBatch) -> MicroBatchPlan:
        """The round's micro-batches, agreed by every process (as many micro-batches and LM-head calls as the busiest
        where they must match), with the step totals over processes. Planned once per batch."""
        if self._planned is not None and self._planned[0] is rows:
            return self._planned[1]
        s, ctx = self.settings, self.ctx
        plan = plan_round(rows, s)
        if ctx.world_size > 1:
            if s.max_tokens_per_micro_batch:  # token budgets: the busiest process's count of micro-batches
                counts = dist.all_reduce_max(ctx, [float(len(step)) for step in plan.steps])
                plan = plan_round(rows, s, bins_per_step=[int(c) for c in counts])
            if s.sync_chunks:
                flat = iter(dist.all_reduce_max(ctx, [float(c) for step in plan.chunks for c in step]))
                plan = replace(plan, chunks=[[int(next(flat)) for _ in step] for step in plan.chunks])
            k = len(plan.steps)
            sums = dist.all_reduce_sum(ctx, [*plan.step_tokens, *plan.computed_tokens, *plan.real_tokens])
            plan = replace(plan, step_tokens=sums[:k], computed_tokens=sums[k : 2 * k], real_tokens=sums[2 * k :])
        self._planned = (rows, plan)
        return plan

    def _step(self, batch: TrainBatch, plan: MicroBatchPlan, k: int) -> dict[str, float]:
        """Optimizer step ``k`` of the round (micro-batch by micro-batch); its metrics."""
        s, ctx, updater = self.settings, self.ctx, self.updater
        updater.module.train()  # gradient checkpointing (and any dropout) act only in train mode
        micro, chunks = plan.steps[k], plan.chunks[k]
        step_tokens = plan.step_tokens[k] if s.token_mean else None  # token-mean: the step's tokens, all processes
        micro_metrics, abs_log_ratios, nonfinite = [], [], False
        for position, (rows, calls) in enumerate(zip(micro, chunks, strict=True)):
            last = position == len(micro) - 1
            updater.begin_micro_batch(last)
            sub = batch.select(rows).trimmed().to(updater.device)
            logprobs, entropy, router_aux = updater.forward(
                sub.rollout,
                temperature=s.temperature,
                chunk_size=s.chunk_size,
                with_entropy=True,
                entropy_grad=bool(s.entropy_coef),  # otherwise a metric: no backward through it
                min_chunks=calls,
                packed=s.packing,
                router_aux=s.router_aux_coef > 0,  # a mixture-of-experts policy only (checked at start)
            )
            loss, metrics = micro_batch_loss(self.loss_fn, logprobs, entropy, sub, s, step_tokens, router_aux)
            abs_log_ratios.append(abs_log_ratio(logprobs, sub))
            finite = dist.all_reduce_max(ctx, [0.0 if torch.isfinite(loss) else 1.0])[0] == 0.0
            if not finite:  # NaN gradients: the step is dropped before it is applied (see the module docstring)
                nonfinite = True
                loss = logprobs.sum() * float("nan")
            updater.backward(loss, last=last)
            micro_metrics.append(metrics)
        grad_norm, applied = updater.step(skip=nonfinite)
        row = {f"actor/{key}": v for key, v in reduce_loss_metrics(ctx, micro_metrics).items()}
        row["actor/log_ratio_abs_p99"] = quantile(ctx, torch.cat(abs_log_ratios), 0.99)  # the step's, all processes
        row.update({"actor/grad_norm": grad_norm, "actor/lr": updater.lr, "actor/skipped": float(not applied)})
        computed, real = plan.computed_tokens[k], plan.real_tokens[k]
        row["perf/padding_frac"] = 1.0 - real / max(computed, 1.0)  # pad tokens / computed tokens, all processes
        row["perf/micro_batches"] = float(len(micro))  # per process (equal on every process)
        return row


def abs_log_ratio(logprobs: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """[M] float32 on the CPU: |log pi_theta - log pi_old| of the micro-batch's response tokens (as the losses'
    diagnostics compute it; 0 where the loss is on-policy)."""
    old = batch.old_logprobs if batch.old_logprobs is not None else logprobs
    x = logprobs.detach().float() - old.detach().float()
    return x[batch.response_mask.bool()].abs().cpu()


def no_grad_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, plan: MicroBatchPlan, settings: UpdateSettings
) -> torch.Tensor:
    """[N, R] float32 on the CPU: log-probs of the sampled tokens under ``model`` (eval mode, no gradients), in
    ``plan``'s micro-batches, each trimmed to its own rows and moved to the model's device. No collectives."""
    device = next(model.parameters()).device
    out = torch.zeros(batch.sampler_logprobs.shape, dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for step, step_chunks in zip(plan.steps, plan.chunks, strict=True):
                for rows, calls in zip(step, step_chunks, strict=True):
                    sub = batch.select(rows).trimmed().to(device)
                    logprobs, _ = policy_logprobs(
                        model,
                        sub,
                        temperature=settings.temperature,
                        chunk_size=settings.chunk_size,
                        min_chunks=calls,
                        packed=settings.packing,
                    )
                    out[rows, : logprobs.shape[1]] = logprobs.float().cpu()
    finally:
        model.train(was_training)
    return out
