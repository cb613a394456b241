"""The GMPO/GRPO training loop.

One rollout round, top to bottom in :meth:`Trainer.fit`:
prompts -> rollouts (n per prompt) -> rewards (verifier workers, time-bounded) -> group advantages ->
old log-probs (recomputed in the update's micro-batches when the round has several updates, on the first round
for the preflight, and every round with vLLM for the sampler/trainer log-prob gap; with one update the loss uses
the policy's own detached log-probs, exactly on-policy) -> reference log-probs (only with KL) -> K optimizer steps
over strided mini-batches, of the round's rows as sampled or permuted (``trainer.minibatch_order``;
:mod:`mm_gmpo.trainer.actor`) -> metrics -> validation -> checkpoint. A first SIGINT/SIGTERM stops the loop at
the end of its round, with a checkpoint (:mod:`mm_gmpo.trainer.interrupt`).

Where it departs from the paper's description: the loss is normalised by the number of sequences in the global
mini-batch (all micro-batches of all processes), so one global batch gives the same update on any number of
processes; a non-finite loss or gradient drops the step before anything is applied (DeepSpeed's own overflow
check under ZeRO).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mm_gmpo.algorithms import group_advantages, sequence_kl
from mm_gmpo.config import Config, save_config, to_dict
from mm_gmpo.errors import TrainingHalted, UserError
from mm_gmpo.reward import VerifierPool, compute_rewards
from mm_gmpo.reward.custom import example_fields
from mm_gmpo.rollout import RolloutEngine, SamplingParams, assert_parity
from mm_gmpo.rollout.batching import configured_stop_tokens, pad_token_id, stop_token_ids
from mm_gmpo.seeds import derive_seed
from mm_gmpo.trainer import dist
from mm_gmpo.trainer.balance import balance_rows
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.checkpoint import latest_checkpoint, load_trainer_state, train_state_of
from mm_gmpo.trainer.data import load_prompt_sets
from mm_gmpo.trainer.dynamic import assemble_round, informative_groups
from mm_gmpo.trainer.interrupt import StopRequest
from mm_gmpo.trainer.logger import MetricsLogger
from mm_gmpo.trainer.metrics import mean, reduce_metrics, total
from mm_gmpo.trainer.precision import resolve_precision
from mm_gmpo.trainer.reward_metrics import named_reward_metrics
from mm_gmpo.trainer.setup import (
    build_actor,
    build_policy,
    check_config,
    check_output_dir,
    check_resume,
    check_same_architecture,
    claim_output_dir,
    ensure_model,
    round_shape,
    seed_everything,
    step_settings,
)
from mm_gmpo.trainer.state import TrainState, minibatch_permutation, next_prompt_indices, timed

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ctx = dist.init_distributed(bool(cfg.trainer.deepspeed))
        self.is_main = self.ctx.is_main
        check_config(cfg, self.ctx.world_size)
        if cfg.trainer.num_threads:
            torch.set_num_threads(cfg.trainer.num_threads)
        seed_everything(cfg.trainer.seed + self.ctx.rank)
        self.run_dir = Path(cfg.trainer.output_dir)
        self._lock = None  # the run folder's lock file, held open by the main process for the whole run
        self._claim_run_dir()
        resume_folder = None
        if cfg.trainer.resume_from:  # damaged checkpoints, changed step settings: before any model loads
            resume_folder = latest_checkpoint(cfg.trainer.resume_from)
            check_resume(cfg, resume_folder)

        model_path = ensure_model(cfg, self.ctx)
        if resume_folder is not None:
            check_same_architecture(resume_folder, model_path)
        from mm_gmpo.models import load_processor

        self.processor = load_processor(model_path, min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
        self.stop_tokens = configured_stop_tokens(cfg.rollout.stop_tokens)
        stop_token_ids(self.processor, self.stop_tokens)  # a token the tokenizer lacks: one line, naming the key
        self.train_prompts, self.val_prompts, self.data_metrics = load_prompt_sets(cfg, self.processor)
        self.shape = round_shape(cfg, self.ctx)  # each process's share of a round, computed once
        precision = resolve_precision(cfg.model.dtype, deepspeed=bool(cfg.trainer.deepspeed), device=self.ctx.device)
        policy = build_policy(cfg, model_path, precision)
        self.warmstart_metrics = {}
        if cfg.warmstart.steps and not cfg.trainer.resume_from:
            self.warmstart_metrics = self._warm_start(policy, precision)
        warm = self.warmstart_metrics and not cfg.model.lora.enabled
        start_weights = {k: v.detach().cpu() for k, v in policy.state_dict().items()} if warm else None
        self.actor = build_actor(cfg, self.ctx, model_path, policy, precision, self.shape, start_weights)
        self.rollout = RolloutEngine(
            cfg.rollout.backend,
            self.actor.hf_model,
            self.processor,
            config=cfg.rollout,
            synced=self.actor.partitioned,
            dtype=self.actor.compute_dtype,
            seed=cfg.trainer.seed,
        )
        self.verifier = VerifierPool.from_reward_config(cfg.reward)  # the grader reward.extraction names
        self.state = TrainState()
        self.stopped_by = 0  # the signal that stopped fit() at a round boundary (0: it ran to trainer.max_steps)
        resume_step = None
        if resume_folder is not None:
            resume_step = self._resume(resume_folder)
        self.logger = MetricsLogger(
            self.run_dir,
            enabled=self.is_main,
            tensorboard=cfg.trainer.tensorboard,
            wandb_project=cfg.trainer.wandb_project,
            config=to_dict(cfg),
            resume_step=resume_step,
        )

    def _claim_run_dir(self) -> None:
        """The main process alone checks, locks and (``trainer.overwrite``) clears the run folder and writes the
        config; the others wait for its verdict and fail with the same line, so none races it or hangs."""
        cfg, problem = self.cfg, None
        if self.ctx.is_main:
            try:
                check_output_dir(self.run_dir)  # a file, under a file, not writable: before any model loads
                # one run per folder: a live run's lock; an earlier run without resume_from (or moved aside)
                resume_from, overwrite = cfg.trainer.resume_from, cfg.trainer.overwrite
                self._lock = claim_output_dir(self.run_dir, resume_from=resume_from, overwrite=overwrite)
                try:
                    save_config(cfg, self.run_dir / "config.yaml")
                except OSError as exc:
                    raise UserError(f"could not write {self.run_dir / 'config.yaml'}: {exc}") from exc
            except UserError as exc:
                problem = exc
        verdicts = dist.gather_objects(self.ctx, None if problem is None else str(problem))
        if problem is not None:
            raise problem
        if verdicts[0] is not None:
            raise UserError(verdicts[0])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainState:
        cfg, state = self.cfg, self.state
        val_metrics = self.validate() if state.step == 0 and self.val_prompts else {}
        if state.step == 0:
            self.logger.log(0, {**self.data_metrics, **self.warmstart_metrics, **val_metrics})
        bar = tqdm(
            total=cfg.trainer.max_steps,
            initial=state.step,
            desc="train",
            dynamic_ncols=True,
            disable=not (self.is_main and cfg.trainer.progress),
        )
        preflight_due = cfg.rollout.preflight and state.step == 0
        stop = StopRequest().install()
        log.info(
            "training steps %d to %d (Ctrl-C or SIGTERM: stop at the end of the round, with a checkpoint)",
            state.step + 1,
            cfg.trainer.max_steps,
        )
        try:
            while state.step < cfg.trainer.max_steps:
                timings: dict[str, float] = {}
                peaks: dict[str, float] = {}  # GiB, GPU only
                round_start = time.perf_counter()
                batch, scores, sampling_metrics = self._sample_round(timings, peaks)
                self.rollout.sleep()  # vLLM frees its weights and KV cache until the sync (no-op for hf)
                rewards, kl_reward_metrics = torch.tensor(scores.total, dtype=torch.float32), {}
                if cfg.algorithm.kl_in_reward:  # the classic PPO recipe: the KL is a penalty on the reward
                    with timed(timings, "kl_reward", peaks):
                        rewards, kl_reward_metrics = self._kl_in_reward(batch, rewards)
                advantages = group_advantages(
                    rewards,
                    cfg.rollout.n,
                    normalize_std=cfg.algorithm.normalize_std,
                    eps=cfg.algorithm.adv_eps,
                )
                rows, row_advantages = self._minibatch_order(batch, advantages)
                rows, row_advantages, balance_metrics = self._balanced(rows, row_advantages, timings)
                with timed(timings, "old_logprobs", peaks):
                    old_logprobs, ref_logprobs, parity_metrics = self._old_and_ref_logprobs(rows, preflight_due)
                    preflight_due = False
                with timed(timings, "update", peaks):
                    step_rows = self.actor.update(TrainBatch(rows, row_advantages, old_logprobs, ref_logprobs))
                    for row in step_rows:
                        state.step += 1
                        self._count_nonfinite(row["actor/skipped"] > 0)
                sync_metrics = self.rollout.sync_weights(self.actor.hf_model)  # wakes vLLM: weights, load, KV cache
                state.round += 1
                round_metrics = self._round_metrics(
                    batch, scores, advantages, timings, time.perf_counter() - round_start
                )
                round_metrics.update(parity_metrics)
                round_metrics.update(kl_reward_metrics)
                round_metrics.update(balance_metrics)
                round_metrics.update(sync_metrics)
                round_metrics.update(sampling_metrics)
                round_metrics.update({f"perf/{name}_peak_gib": value for name, value in peaks.items()})
                round_metrics.update(self.actor.metrics())
                val_metrics = {}
                if self.val_prompts and cfg.trainer.val_every and state.round % cfg.trainer.val_every == 0:
                    val_metrics = self.validate()
                first_step = state.step - len(step_rows) + 1
                for i, row in enumerate(step_rows):
                    extra = val_metrics if i == len(step_rows) - 1 else {}
                    self.logger.log(first_step + i, {**round_metrics, **row, **extra})
                bar.update(len(step_rows))
                bar.set_postfix(
                    reward=f"{round_metrics['reward/mean']:.3f}",
                    loss=f"{step_rows[-1]['actor/pg_loss']:.4f}",
                    s_per_step=f"{round_metrics['perf/step_s']:.2f}",
                )
                self.stopped_by = self._agreed_stop(stop)
                if self.stopped_by or (cfg.trainer.save_every and state.step % cfg.trainer.save_every == 0):
                    self.save()
                if self.stopped_by:
                    log.warning(
                        "stopped at step %d of %d: resume with trainer.resume_from=%s",
                        state.step,
                        cfg.trainer.max_steps,
                        self.run_dir,
                    )
                    return state
            if self.val_prompts and not val_metrics:
                self.logger.log(state.step, self.validate())
            if not cfg.trainer.save_every or state.step % cfg.trainer.save_every:
                self.save()
        except KeyboardInterrupt:  # a second signal (mm_gmpo.trainer.interrupt): no checkpoint of this round
            log.warning("interrupted at step %d: the newest complete checkpoint is kept as it was", state.step)
            raise
        finally:
            stop.restore()
            bar.close()
        return state

    # ------------------------------------------------------------------ stages
    def _next_prompts(self):
        """This process's contiguous share of the round's globally ordered prompts."""
        cfg = self.cfg
        indices = next_prompt_indices(
            self.state, len(self.train_prompts), cfg.rollout.prompts_per_round, cfg.trainer.seed, cfg.data.shuffle
        )
        return [self.train_prompts[i] for i in self.shape.mine(indices)]

    def _sampling(self, round_index: int, attempt: int = 0) -> SamplingParams:
        """Same seed on every process; rows are keyed by their global prompt index (see rollout.hf). ``attempt``:
        the dynamic-sampling round within the round (0: the only one without dynamic sampling)."""
        r = self.cfg.rollout
        return SamplingParams(
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            seed=derive_seed(self.cfg.trainer.seed, "sampling", round_index, attempt),
            first_prompt=self.shape.first_prompt,
            stop_tokens=self.stop_tokens,
        )

    def _rewards(self, batch):
        r = self.cfg.reward
        lengths = batch.response_mask.sum(dim=1).tolist()  # tokens, end-of-turn included
        return compute_rewards(
            batch.response_text,
            [ex.answer for ex in batch.examples],
            choices=[ex.choices for ex in batch.examples],
            truncated=[reason == "length" for reason in batch.finish_reason],
            pool=self.verifier,
            accuracy_weight=r.accuracy_weight,
            format_weight=r.format_weight,
            format_kind=r.format,
            zero_truncated=r.zero_truncated,
            examples=[
                example_fields(ex, response_length=length, truncated=reason == "length")
                for ex, length, reason in zip(batch.examples, lengths, batch.finish_reason, strict=True)
            ]
            if r.function
            else None,
            response_lengths=lengths,
            max_length=self.cfg.rollout.max_new_tokens,
            overlong_buffer=r.overlong_buffer,
            overlong_penalty=r.overlong_penalty,
        )

    def _sample_round(self, timings: dict, peaks: dict):
        """(rollout batch, reward scores, batch/* metrics) of the round. With ``algorithm.dynamic_sampling``: further
        prompts are sampled until every process holds its share of informative groups (or the bound is hit), and
        only those are kept (see :mod:`mm_gmpo.trainer.dynamic`)."""
        cfg = self.cfg
        attempts = cfg.rollout.max_sampling_rounds if cfg.algorithm.dynamic_sampling else 1
        want = self.shape.prompts_per_process
        sampled = []
        for attempt in range(attempts):
            with timed(timings, "rollout", peaks), self.actor.autocast():
                prompts, sampling = self._next_prompts(), self._sampling(self.state.round, attempt)
                batch = self.rollout.generate(prompts, cfg.rollout.n, sampling)
            with timed(timings, "reward"):
                sampled.append((batch, self._rewards(batch)))
            if attempts == 1:
                return batch, sampled[0][1], {}
            have = sum(sum(informative_groups(s.total, cfg.rollout.n)) for _, s in sampled)
            if dist.all_reduce_max(self.ctx, [float(have < want)])[0] == 0.0:  # every process has its share
                break
        batch, scores, counts = assemble_round(sampled, cfg.rollout.n, want, pad_token_id(self.processor))
        total = dist.all_reduce_sum(
            self.ctx, [counts["groups_sampled"], counts["groups_informative"], counts["groups_filled"]]
        )
        return (
            batch,
            scores,
            {
                "batch/informative_groups_frac": total[1] / max(total[0], 1.0),
                "batch/sampling_rounds": float(len(sampled)),
                "batch/uninformative_groups_kept": total[2],
            },
        )

    def _minibatch_order(self, batch, advantages):
        """(rows, advantages) in the order the strided mini-batches split: as sampled, or with
        ``trainer.minibatch_order: shuffle`` permuted (seeded by seed, round and process; the round's own
        ``batch`` stays as sampled for its metrics)."""
        if self.cfg.trainer.minibatch_order != "shuffle":
            return batch, advantages
        order = minibatch_permutation(batch.num_rows, self.cfg.trainer.seed, self.state.round, self.ctx.rank)
        return batch.select(order), advantages[order]

    def _balanced(self, batch, advantages, timings: dict):
        """(rows, advantages, perf/token_imbalance_*) for the update: with several processes and
        ``trainer.balance_tokens``, rows moved so that each optimizer step has about the same tokens on every
        process (:mod:`mm_gmpo.trainer.balance`); the round's own ``batch`` stays as sampled for its metrics."""
        if self.ctx.world_size == 1 or not self.cfg.trainer.balance_tokens:
            return batch, advantages, {}
        with timed(timings, "balance"):
            return balance_rows(
                self.ctx, batch, advantages, self.cfg.trainer.updates_per_round, pad_token_id(self.processor)
            )

    def _agreed_stop(self, stop: StopRequest) -> int:
        """The signal that stops the run after this round (0: go on); the same on every process."""
        return int(dist.all_reduce_max(self.ctx, [float(stop.signal)])[0])

    def _count_nonfinite(self, skipped: bool) -> None:
        self.state.nonfinite_in_a_row = self.state.nonfinite_in_a_row + 1 if skipped else 0
        if skipped:
            log.warning("step %d: non-finite loss or gradient, update skipped", self.state.step)
        if self.state.nonfinite_in_a_row >= self.cfg.trainer.max_nonfinite_steps:
            raise TrainingHalted(
                f"{self.state.nonfinite_in_a_row} non-finite updates in a row (step {self.state.step}): "
                "lower trainer.lr, check the data, or raise trainer.max_nonfinite_steps"
            )

    def _round_metrics(self, batch, scores, advantages, timings, seconds) -> dict[str, float]:
        n = self.cfg.rollout.n
        rewards = torch.tensor(scores.total, dtype=torch.float64)
        groups = rewards.view(-1, n)
        count = float(len(rewards))
        zero_std_groups = float((groups.std(dim=1) == 0).sum() if n > 1 else len(groups))
        totals = reduce_metrics(
            self.ctx,
            {
                "reward/mean": mean(rewards.sum(), count),
                "reward/accuracy": mean(sum(scores.accuracy), count),
                "reward/format": mean(sum(scores.format), count),
                "reward/mean_square": mean((rewards**2).sum(), count),  # for the std, not logged
                "reward/zero_std_group_frac": mean(zero_std_groups, len(groups)),
                "reward/verifier_failures": total(scores.timeouts + scores.errors),
                "perf/response_tokens": total(batch.response_mask.sum()),  # for tokens_per_s, not logged
                "perf/round_tokens": total(batch.attention_mask.sum()),  # prompt + response tokens, all processes
                **(
                    {"reward/overlong_penalty": mean(sum(scores.overlong), len(scores.overlong))}
                    if scores.overlong is not None  # reward.overlong_buffer: the mean penalty (<= 0), in reward/mean
                    else {}
                ),
            },
        )
        mean_square, response_tokens = totals.pop("reward/mean_square"), totals.pop("perf/response_tokens")
        metrics = {
            **totals,
            "reward/std": math.sqrt(max(mean_square - totals["reward/mean"] ** 2, 0.0)),
            "perf/step_s": seconds / self.cfg.trainer.updates_per_round,
            "perf/round_s": seconds,
            "perf/tokens_per_s": response_tokens / seconds,
            **{f"perf/{name}_s": value for name, value in timings.items()},
        }
        metrics.update(self.rollout.metrics(batch))
        if self.cfg.reward.function:
            metrics.update(named_reward_metrics(self.ctx, scores))
        return metrics

    # ------------------------------------------------------------------ around the loop
    def validate(self) -> dict[str, float]:
        """Accuracy on this process's share of the validation set: greedy, or the mean over ``rollout.val_n``
        samples at ``rollout.val_temperature`` (then also greedy as ``val/accuracy_greedy`` if
        ``rollout.val_also_greedy``)."""
        r = self.cfg.rollout
        metrics = self._validate_pass(r.val_n, r.val_temperature, "val")
        if r.val_also_greedy and r.val_temperature > 0:
            greedy = self._validate_pass(1, 0.0, "val_greedy")
            metrics["val/accuracy_greedy"] = greedy["val_greedy/accuracy"]
        return metrics

    def _validate_pass(self, n: int, temperature: float, prefix: str) -> dict[str, float]:
        world = self.ctx.world_size
        mine = self.val_prompts[self.ctx.rank :: world]
        share = -(-len(self.val_prompts) // world)  # every process generates as often (ZeRO-3 collectives)
        scored = len(mine)
        mine = mine + [self.val_prompts[0]] * (share - scored)  # pads: generated, not scored
        with self.actor.autocast():
            result = self._evaluate(mine, n, temperature, scored)
        tot = dist.all_reduce_sum(self.ctx, [result.correct, result.formatted, result.length_sum, result.count])
        count = tot[3] or 1.0
        return {
            f"{prefix}/accuracy": tot[0] / count,
            f"{prefix}/format": tot[1] / count,
            f"{prefix}/response_length": tot[2] / count,
        }

    def _evaluate(self, prompts, n: int, temperature: float, scored: int):
        from mm_gmpo.trainer.evaluation import evaluate_prompts

        return evaluate_prompts(
            self.rollout,
            prompts,
            self.verifier,
            n=n,
            temperature=temperature,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            batch_size=max(self.cfg.rollout.prompts_per_round, 8),
            format_kind=self.cfg.reward.format,
            seed=self.cfg.trainer.seed,
            num_scored=scored,
            stop_tokens=self.stop_tokens,
        )

    def _warm_start(self, policy, precision) -> dict[str, float]:
        from mm_gmpo.trainer.sft import warm_start_from_config

        with precision.autocast():
            losses = warm_start_from_config(policy.to(self.ctx.device), self.processor, self.train_prompts, self.cfg)
        return {"warmstart/nll_first": losses[0], "warmstart/nll_last": losses[-1]}

    def _old_and_ref_logprobs(self, batch, preflight: bool):
        """(old log-probs or None, reference log-probs or None, rollout/logprob_diff_* metrics) of the round.

        The policy's no-grad pass runs when the round has several updates (the ratio's denominator), for the
        preflight, and with vLLM (the sampler/trainer gap is worth watching every round); with one update the loss
        uses the policy's own detached log-probs instead, which is exactly on-policy.
        """
        old, ref, metrics = None, None, {}
        k = self.cfg.trainer.updates_per_round
        if k > 1 or preflight or self.cfg.rollout.backend == "vllm" or self.actor.rollout_is.on:
            trainer_logprobs = self.actor.logprobs(batch)
            report = self.actor.parity(batch, trainer_logprobs)
            metrics = {**report.metrics(), **self.actor.rollout_is_metrics(batch, trainer_logprobs)}
            if preflight:
                log.info("preflight: %s", report.describe().splitlines()[0])
                assert_parity(report)
            old = trainer_logprobs if k > 1 else None
        if not self.cfg.algorithm.kl_in_reward:
            ref = self.actor.ref_logprobs(batch)
        return old, ref, metrics

    def _kl_in_reward(self, batch, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``algorithm.kl_in_reward``: rewards minus ``kl_coef`` x each response's summed KL to the reference
        (``algorithm.kl_estimator`` on the policy's and the reference's no-grad log-probs of the round), and
        ``reward/kl_penalty`` (the mean amount taken off) over all processes."""
        a = self.cfg.algorithm
        policy, ref = self.actor.logprobs(batch), self.actor.ref_logprobs(batch)
        penalty = a.kl_coef * sequence_kl(policy, ref, batch.response_mask, a.kl_estimator).float()
        reduced = reduce_metrics(self.ctx, {"reward/kl_penalty": mean(penalty.sum(), penalty.numel())})
        return rewards - penalty, reduced

    def save(self) -> Path:
        state = {**self.state.to_dict(), "settings": step_settings(self.cfg)}
        return self.actor.save(self.run_dir, self.state.step, self.processor, state, self.cfg.trainer.keep_last)

    def _resume(self, folder: Path) -> int:
        self.actor.load(folder)
        self.state = train_state_of(load_trainer_state(self.ctx, folder))
        self.rollout.sync_weights(self.actor.hf_model)
        log.info("resumed from %s at step %d (round %d)", folder, self.state.step, self.state.round)
        return self.state.step

    def close(self) -> None:
        self.verifier.close()
        self.logger.close()
        self.rollout.close()
        dist.shutdown(self.ctx)
        if self._lock is not None:
            self._lock.close()  # releases the run folder's lock (so does the end of the process)
            self._lock = None
