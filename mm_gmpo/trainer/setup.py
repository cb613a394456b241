"""Building what the loop needs from the config: checks, run folder, model, the actor. Runs once."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from mm_gmpo.config import Config
from mm_gmpo.errors import UserError, require
from mm_gmpo.trainer.dist import DistContext, barrier
from mm_gmpo.trainer.engine import DeepSpeedUpdater, TorchUpdater
from mm_gmpo.trainer.plan import RoundShape
from mm_gmpo.trainer.precision import Precision
from mm_gmpo.trainer.update import UpdateSettings

log = logging.getLogger(__name__)


def check_config(cfg: Config, world_size: int) -> None:
    """Cross-field rules that a type check cannot see; fails naming the keys."""
    t, r = cfg.trainer, cfg.rollout
    k = t.updates_per_round
    check_values(cfg)
    check_zero_advantages(cfg)
    if t.max_tokens_per_micro_batch < 0:
        raise UserError(
            f"trainer.max_tokens_per_micro_batch={t.max_tokens_per_micro_batch} must be 0 (off) or positive"
        )
    if r.prompts_per_round % world_size:
        raise UserError(
            f"rollout.prompts_per_round={r.prompts_per_round} must be divisible by the {world_size} processes"
        )
    rows = RoundShape(r.prompts_per_round, r.n, k, world_size).rows_per_process
    if rows % k:
        raise UserError(
            f"each process holds {rows} responses per round (rollout.prompts_per_round/processes * "
            f"rollout.n), which must be divisible by trainer.updates_per_round={k}"
        )
    from mm_gmpo.rollout.memory import memory_problem

    problem = memory_problem(r.prompts_per_round * r.n, cfg.data.max_prompt_length + r.max_new_tokens)
    if problem:
        raise UserError(f"rollout.n={r.n} with rollout.prompts_per_round={r.prompts_per_round}: {problem}")
    if t.max_steps % k:
        raise UserError(f"trainer.max_steps={t.max_steps} must be a multiple of trainer.updates_per_round={k}")
    if t.save_every % k:
        raise UserError(
            f"trainer.save_every={t.save_every} must be a multiple of trainer.updates_per_round={k} "
            "(checkpoints are taken between rollout rounds)"
        )
    from mm_gmpo.algorithms.registry import policy_loss_for

    _, warnings = policy_loss_for(  # an unknown name (did-you-mean), a dual clip or aggregation it lacks fail here
        cfg.algorithm.loss,
        max_response_length=cfg.rollout.max_new_tokens,
        normalize_std=cfg.algorithm.normalize_std,
        clip_dual=cfg.algorithm.clip_dual,
        aggregation=cfg.algorithm.loss_aggregation,
    )
    for warning in warnings:
        log.warning(warning)
    check_correction_keys(cfg)
    if cfg.algorithm.dynamic_sampling and (r.max_sampling_rounds < 1 or r.n < 2):
        raise UserError(
            f"algorithm.dynamic_sampling needs rollout.max_sampling_rounds >= 1 (got {r.max_sampling_rounds}) and "
            f"rollout.n >= 2 (got {r.n}): a group of one response is never informative"
        )
    if r.backend == "vllm":
        from mm_gmpo.rollout.engine import vllm_settings

        vllm_settings(r)  # the engine's own checks (sleep level, bucket size), before any model loads
        tp = r.vllm_tensor_parallel_size
        if tp < 1 or world_size % tp:
            raise UserError(f"rollout.vllm_tensor_parallel_size={tp} must divide the {world_size} training processes")
    if cfg.reward.function:  # a bad path, a missing name or a wrong signature stops here, before any model loads
        from mm_gmpo.reward.custom import check_reward_function

        check_reward_function(cfg.reward.function, cfg.reward.timeout)  # in a process: sys.exit, hangs bounded
    from mm_gmpo.data.synthetic import TASKS, TEXT_TASKS

    known = [*TASKS, *TEXT_TASKS]
    if cfg.model.tiny.toy_task and cfg.model.tiny.toy_task not in known:
        raise UserError(f"model.tiny.toy_task={cfg.model.tiny.toy_task!r}: not a synthetic task ({', '.join(known)})")


def check_correction_keys(cfg: Config) -> None:
    """The rollout importance correction, the KL placement and the overlong penalty: one line naming the key."""
    a, w = cfg.algorithm, cfg.reward
    if not a.rollout_is_threshold > 1.0:  # also nan
        raise UserError(
            f"algorithm.rollout_is_threshold={a.rollout_is_threshold} must be > 1 (weights are capped at it, or kept "
            "within [1/threshold, threshold] in mask mode)"
        )
    if a.kl_in_reward and not a.kl_coef > 0:
        raise UserError("algorithm.kl_in_reward=true needs algorithm.kl_coef > 0 (the penalty's weight)")
    if not 0 <= w.overlong_buffer < cfg.rollout.max_new_tokens:
        raise UserError(
            f"reward.overlong_buffer={w.overlong_buffer} must be in [0, rollout.max_new_tokens="
            f"{cfg.rollout.max_new_tokens}) (0: off)"
        )
    if not (math.isfinite(w.overlong_penalty) and w.overlong_penalty >= 0):
        raise UserError(f"reward.overlong_penalty={w.overlong_penalty} must be a finite number >= 0")


def check_values(cfg: Config) -> None:
    """Ranges of single keys: each failure names the one key that is wrong."""
    t, r, w = cfg.trainer, cfg.rollout, cfg.reward
    positive = {
        "trainer.max_steps": t.max_steps,
        "trainer.updates_per_round": t.updates_per_round,
        "trainer.micro_batch_size": t.micro_batch_size,
        "rollout.n": r.n,
        "rollout.val_n": r.val_n,
        "warmstart.batch_size": cfg.warmstart.batch_size,
        "rollout.prompts_per_round": r.prompts_per_round,
        "rollout.max_new_tokens": r.max_new_tokens,
        "reward.workers": w.workers,
        "reward.timeout": w.timeout,
    }
    for key, value in positive.items():
        if not value > 0:  # also catches nan
            raise UserError(f"{key}={value} must be positive")
    if not (math.isfinite(t.lr) and t.lr >= 0):
        raise UserError(f"trainer.lr={t.lr} must be a finite number >= 0")
    not_negative = {
        "trainer.num_threads": t.num_threads,
        "data.train_limit": cfg.data.train_limit,
        "data.val_limit": cfg.data.val_limit,
        "warmstart.steps": cfg.warmstart.steps,
        "trainer.save_every": t.save_every,
        "trainer.warmup_steps": t.warmup_steps,
    }
    for key, value in not_negative.items():
        if value < 0:
            raise UserError(f"{key}={value} must be >= 0 (0: {_ZERO_MEANS.get(key, 'off')})")
    if not 0 <= t.seed < 2**32:
        raise UserError(f"trainer.seed={t.seed} must be in [0, 2^32) (numpy's seed range)")
    if not str(t.output_dir).strip():
        raise UserError("trainer.output_dir is empty: name the run folder (e.g. runs/my-run)")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):  # `not <` also refuses nan
        raise UserError(f"trainer.betas={t.betas} must be two numbers in [0, 1) (Adam's beta1, beta2)")
    for key in ("weight_decay", "grad_clip"):
        value = getattr(t, key)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"trainer.{key}={value} must be a finite number >= 0")
    if not (math.isfinite(cfg.warmstart.lr) and cfg.warmstart.lr >= 0):
        raise UserError(f"warmstart.lr={cfg.warmstart.lr} must be a finite number >= 0")
    _check_clip_values(cfg.algorithm)
    for key in ("adv_eps", "router_aux_loss_coef"):
        value = getattr(cfg.algorithm, key)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"algorithm.{key}={value} must be a finite number >= 0")
    if not r.stop_tokens:
        raise UserError("rollout.stop_tokens=[]: name at least one token that ends a response")
    if not 0 < r.top_p <= 1:
        raise UserError(f"rollout.top_p={r.top_p} must be in (0, 1] (1: off)")
    if r.temperature < 0 or not math.isfinite(r.temperature):
        raise UserError(f"rollout.temperature={r.temperature} must be a finite number >= 0 (0: greedy)")


def check_zero_advantages(cfg: Config) -> None:
    """Refuse settings under which every advantage is 0 (unless algorithm.allow_zero_advantages)."""
    r = cfg.rollout
    if not cfg.algorithm.allow_zero_advantages:
        if r.n == 1:
            raise UserError(
                "rollout.n=1: every advantage would be 0 (a group of one response has nothing to be compared "
                "with), so the rewards teach nothing; use rollout.n >= 2, or algorithm.allow_zero_advantages=true"
            )
        if r.temperature == 0:
            raise UserError(
                "rollout.temperature=0: greedy sampling gives a prompt the same response n times, so every "
                "advantage would be 0; use a temperature > 0, or algorithm.allow_zero_advantages=true"
            )


_ZERO_MEANS = {
    "trainer.num_threads": "the torch default",
    "data.train_limit": "all rows",
    "data.val_limit": "all rows",
    "warmstart.steps": "no warm start",
    "trainer.save_every": "at the end",
    "trainer.warmup_steps": "no warm-up",
}
RATIO_CLIP_LOSSES = ("grpo", "drgrpo", "gspo")  # clip in ratio space: 1 - clip_low must stay >= 0


def _check_clip_values(a) -> None:
    """algorithm.clip_low / clip_high: finite and >= 0 (log-space GMPO bounds, or PPO's ratio offsets, where
    clip_low <= 1); checked at load so that the loss never sees them first."""
    for key in ("clip_low", "clip_high", "clip_dual"):
        value = getattr(a, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"algorithm.{key}={value} must be a finite number >= 0")
    if a.clip_low is not None and a.loss in RATIO_CLIP_LOSSES and a.clip_low > 1:
        raise UserError(
            f"algorithm.clip_low={a.clip_low} must be <= 1 for algorithm.loss={a.loss} (ratio 1 - clip_low)"
        )


def check_output_dir(path: str | Path) -> Path:
    """Create the run directory, or fail in one line if it is a file, under a file, or not writable."""
    from mm_gmpo.paths import writable_dir

    return writable_dir(path, "trainer.output_dir")


LOCK_NAME = ".mm-gmpo.lock"


def holds_a_run(path: Path) -> bool:
    """The folder holds an earlier run's work: its metrics.jsonl, or a non-empty checkpoints/ folder."""
    checkpoints = path / "checkpoints"
    return (path / "metrics.jsonl").exists() or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def claim_output_dir(path: Path, *, resume_from: str, overwrite: bool):
    """Make ``path`` this run's own (main process only, after :func:`check_output_dir`): take its lock file (the
    open file is returned and must stay open for the whole run; the lock goes with the process), then refuse an
    earlier run's folder unless resuming it (``trainer.resume_from`` is ``path`` or a checkpoint in it) or, with
    ``trainer.overwrite``, move the earlier run's files aside into ``<path>.old-<UTC time>`` (never deleted).
    One line, exit 2, otherwise."""
    here = path.resolve()
    source = Path(resume_from).resolve() if resume_from else None
    resume = source is not None and (source == here or here in source.parents)
    import fcntl

    lock_path = path / LOCK_NAME
    try:
        lock = lock_path.open("a+")
    except OSError as exc:
        raise UserError(f"trainer.output_dir={path}: cannot create the lock file {lock_path} ({exc})") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.seek(0)
        owner = lock.read().strip()
        lock.close()
        raise UserError(
            f"trainer.output_dir={path} is in use by another live run{f' ({owner})' if owner else ''}: "
            "wait for it to end, or choose another folder"
        ) from exc
    if holds_a_run(path) and not resume:
        if not overwrite:
            lock.close()
            elsewhere = f" (trainer.resume_from={resume_from} is another run's)" if resume_from else ""
            raise UserError(
                f"trainer.output_dir={path} holds an earlier run (metrics.jsonl or checkpoints/){elsewhere}: continue "
                f"it with trainer.resume_from={path}, choose another folder, or trainer.overwrite=true (moves it aside)"
            )
        try:
            moved = _move_aside(path)
        except OSError as exc:
            lock.close()
            raise UserError(f"trainer.overwrite: could not move the earlier run out of {path} ({exc})") from exc
        log.warning("trainer.overwrite: the earlier run in %s was moved to %s", path, moved)
    import os
    import socket

    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock


def _move_aside(path: Path) -> Path:
    """Move every entry of ``path`` but its lock file into a new sibling ``<path>.old-<UTC time>``."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.old-{stamp}")
    suffix = 1
    while target.exists():
        target = path.with_name(f"{path.name}.old-{stamp}-{suffix}")
        suffix += 1
    target.mkdir()
    for entry in sorted(path.iterdir()):
        if entry.name != LOCK_NAME:
            entry.rename(target / entry.name)
    return target


def step_settings(cfg: Config) -> dict[str, int]:
    """The keys a checkpoint's step and round counters are counted in: a resume must keep them."""
    return {
        "trainer.updates_per_round": cfg.trainer.updates_per_round,
        "rollout.prompts_per_round": cfg.rollout.prompts_per_round,
        "rollout.n": cfg.rollout.n,
    }


def check_resume(cfg: Config, folder: Path) -> None:
    """Refuse, in one line naming the keys, a resume whose settings change the step arithmetic (steps per round,
    prompts per round: the saved step, round and data position would no longer agree with the loop's)."""
    import json

    state = json.loads((folder / "trainer_state.json").read_text())  # parsed and checked by checkpoint_problem
    saved = state.get("settings") or {}
    changed = [f"{key}={now} (saved {saved[key]})" for key, now in step_settings(cfg).items()
               if key in saved and saved[key] != now]  # fmt: skip
    if changed:
        raise UserError(
            f"trainer.resume_from={cfg.trainer.resume_from}: {', '.join(changed)} would change how steps are "
            f"counted from {folder.name}; resume with the saved values, or start a new run"
        )
    if state["step"] > cfg.trainer.max_steps:
        raise UserError(
            f"trainer.max_steps={cfg.trainer.max_steps} is below the step {state['step']} of {folder}: "
            "raise trainer.max_steps to go on"
        )


_SHAPE_KEYS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "vocab_size", "depth", "out_hidden_size")  # fmt: skip


def check_same_architecture(folder: Path, model_path: str) -> None:
    """Refuse, in one line, a checkpoint of another architecture or size than ``model.path``'s model (compared
    on its config.json, nested text/vision configs included), before any weights load."""
    import json

    try:
        saved = json.loads((folder / "config.json").read_text())
        current = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return  # a LoRA checkpoint (adapter_config.json) or a hub model: the weight load itself decides
    differences = _config_differences(saved, current, "")
    if differences:
        raise UserError(
            f"trainer.resume_from={folder} is a checkpoint of another model than model.path={model_path} "
            f"({'; '.join(differences[:3])})"
        )


def _config_differences(saved: dict, current: dict, prefix: str) -> list[str]:
    out = []
    for key in _SHAPE_KEYS:
        if key in saved and key in current and saved[key] != current[key]:
            out.append(f"{prefix}{key}: {saved[key]} in the checkpoint, {current[key]} in the model")
    for key, value in saved.items():
        if key.endswith("_config") and isinstance(value, dict) and isinstance(current.get(key), dict):
            out.extend(_config_differences(value, current[key], f"{prefix}{key}."))
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ensure_model(cfg: Config, ctx: DistContext) -> str:
    """The model path; a tiny random model is built there first when asked and missing."""
    path = cfg.model.path
    if cfg.model.tiny_if_missing:
        # every process waits, whatever it sees: the folder appears (empty) as soon as the main process starts
        # writing it, so "exists" must not decide who enters the barrier
        if ctx.is_main and not Path(path).exists():
            _build_tiny(cfg.model.tiny, path)
        barrier(ctx)
    from mm_gmpo.models import check_model_path

    check_model_path(path, "model.path")
    return path


def _build_tiny(tiny, path: str) -> None:
    if tiny.toy_task:
        from mm_gmpo.models.toy_tokenizer import make_toy_model

        sizes = {k: v for k, v in vars(tiny).items() if k not in ("toy_task", "tokenizer", "kind")}
        log.info("building the toy model of task %s at %s", tiny.toy_task, path)
        make_toy_model(path, task=tiny.toy_task, **sizes)
        return
    from mm_gmpo.models.tiny import TinyModelSpec, make_tiny_model

    log.info("building a tiny %s model at %s", tiny.kind, path)
    make_tiny_model(TinyModelSpec(**{k: v for k, v in vars(tiny).items() if k != "toy_task"}), path)


def build_policy(cfg: Config, path: str, precision: Precision):
    """The trainable policy in ``precision.param_dtype`` (fp32 masters unless DeepSpeed holds them), gradient
    checkpointing and LoRA as configured. Still on the CPU: the optimizer wrapper moves it."""
    from mm_gmpo.models import load_model

    model = load_model(path, precision.param_dtype, cfg.model.attn_implementation, use_kernels=cfg.model.use_kernels)
    check_router_aux(cfg.algorithm.router_aux_loss_coef, model, path)
    log.info(
        "policy: %s parameters, compute %s, attention %s, gradient checkpointing %s, hub kernels %s",
        str(precision.param_dtype).removeprefix("torch."),
        str(precision.compute_dtype).removeprefix("torch."),
        getattr(model.config, "_attn_implementation", "default"),
        "on" if cfg.model.gradient_checkpointing else "off",
        "on" if cfg.model.use_kernels else "off",
    )
    attention = str(getattr(model.config, "_attn_implementation", ""))
    if cfg.trainer.packing and torch.cuda.is_available() and not attention.startswith("flash"):
        log.warning(
            "trainer.packing with %s attention: each micro-batch builds a block-diagonal mask of (its tokens)^2 "
            "booleans and runs dense kernels; install flash-attn for variable-length attention "
            "(model.attn_implementation=flash_attention_2)",
            attention,
        )
    if cfg.model.gradient_checkpointing:
        # the layers checkpoint only in train mode (module.training): the update switches it on
        enable_activation_checkpointing(model)
        model.config.use_cache = False
    frozen = freeze_parts(model, vision_tower=cfg.model.freeze_vision_tower, merger=cfg.model.freeze_merger)
    if frozen:
        log.info("frozen: %d parameter tensors (%s)", len(frozen), _frozen_summary(cfg))
    if cfg.model.lora.enabled:
        peft = require("peft", "model.lora", "pip install -e '.[lora]'")
        lora = cfg.model.lora
        model = peft.get_peft_model(
            model,
            peft.LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
            ),
        )
    return model


def check_router_aux(coef: float, model, path: str) -> None:
    """``algorithm.router_aux_loss_coef`` > 0 needs a mixture-of-experts model: on a dense one (no router) the
    loss the user asked for cannot exist, so it is refused in one line rather than silently ignored."""
    from mm_gmpo.trainer.forward import is_moe

    if coef > 0 and not is_moe(model):
        raise UserError(
            f"algorithm.router_aux_loss_coef={coef}: model.path={path} is not a mixture-of-experts model (no router "
            "to balance); set it to 0"
        )


def vision_parts(model) -> tuple[torch.nn.Module, list[torch.nn.Module]] | None:
    """(vision tower with its mergers, the mergers: the modules that project into the language model: Qwen2.5-VL's
    ``merger``, and for Qwen3-VL also its DeepStack mergers) of a Qwen-VL model; None for a text model."""
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None)
    if visual is None:
        return None
    mergers = [getattr(visual, name, None) for name in ("merger", "deepstack_merger_list")]
    return visual, [m for m in mergers if m is not None]


def freeze_parts(model, *, vision_tower: bool, merger: bool) -> list[str]:
    """Switch off gradients of the vision tower (all of ``visual`` but the merger) and/or the merger; the names of
    the frozen parameters. A text model with either switch on is an error (nothing to freeze)."""
    if not (vision_tower or merger):
        return []
    parts = vision_parts(model)
    if parts is None:
        raise UserError("model.freeze_vision_tower / model.freeze_merger: this model has no vision tower")
    visual, mergers = parts
    merger_ids = {id(p) for module in mergers for p in module.parameters()}
    frozen = []
    for name, p in visual.named_parameters():
        in_merger = id(p) in merger_ids
        if (merger and in_merger) or (vision_tower and not in_merger):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def _frozen_summary(cfg: Config) -> str:
    parts = [
        n for n, on in (("vision tower", cfg.model.freeze_vision_tower), ("merger", cfg.model.freeze_merger)) if on
    ]
    return " and ".join(parts)


def build_reference(cfg: Config, path: str, device: torch.device, precision: Precision, start_weights=None):
    """The frozen reference policy, only when the KL term is on: in the compute dtype (it never steps), on the
    device or, with ``model.ref_offload``, in host memory until each pass (:class:`OffloadedModule`).
    ``start_weights``: the policy's state dict when a warm start changed it before RL (the reference is the
    policy at RL step 0, not the checkpoint on disk)."""
    if cfg.algorithm.kl_coef <= 0:
        return None
    from mm_gmpo.models import load_model
    from mm_gmpo.trainer.offload import OffloadedModule

    ref = load_model(path, precision.compute_dtype, cfg.model.attn_implementation, use_kernels=cfg.model.use_kernels)
    if start_weights is not None:
        ref.load_state_dict(start_weights)
    ref.eval().requires_grad_(False)
    return OffloadedModule(ref, device) if cfg.model.ref_offload else OffloadedModule.resident(ref.to(device))


def build_actor(
    cfg: Config, ctx: DistContext, model_path: str, policy, precision: Precision, shape: RoundShape, start_weights=None
):
    """The :class:`~mm_gmpo.trainer.actor.Actor` of ``policy`` (built by :func:`build_policy`, warm-started or not):
    its optimizer wrapper (which moves it onto the device), then the reference (so host memory never holds both
    models at once), the loss and the update settings. ``start_weights``: see :func:`build_reference`."""
    from mm_gmpo.algorithms import RolloutIS
    from mm_gmpo.algorithms.registry import loss_unit, policy_loss_for
    from mm_gmpo.trainer.actor import Actor
    from mm_gmpo.trainer.policy import PolicyLogprobs

    micro_batches = shape.micro_batches_per_step(cfg.trainer.micro_batch_size)
    updater = build_updater(cfg, ctx, PolicyLogprobs(policy), micro_batches, precision)
    reference = build_reference(cfg, model_path, ctx.device, precision, start_weights)
    a, r = cfg.algorithm, cfg.rollout
    rollout_is = RolloutIS(a.rollout_is_mode, a.rollout_is_level, a.rollout_is_threshold)
    loss_fn, _ = policy_loss_for(
        a.loss,
        max_response_length=r.max_new_tokens,
        normalize_std=a.normalize_std,
        clip_dual=a.clip_dual,
        aggregation=a.loss_aggregation,
        rollout_is=rollout_is,
    )
    settings = UpdateSettings(
        temperature=r.temperature,
        chunk_size=cfg.trainer.logprob_chunk_size,
        micro_batch_size=cfg.trainer.micro_batch_size,
        updates_per_round=cfg.trainer.updates_per_round,
        sequences_per_step=shape.sequences_per_step,
        clip={key: v for key, v in (("clip_low", a.clip_low), ("clip_high", a.clip_high)) if v is not None},
        kl_coef=0.0 if a.kl_in_reward else a.kl_coef,
        kl_estimator=a.kl_estimator,
        rollout_is=rollout_is.on,
        entropy_coef=a.entropy_coef,
        sync_chunks=updater.partitioned,
        max_tokens_per_micro_batch=cfg.trainer.max_tokens_per_micro_batch,
        packing=cfg.trainer.packing,
        token_mean=loss_unit(a.loss_aggregation) == "tokens",
        router_aux_coef=a.router_aux_loss_coef,
    )
    tolerances = (r.preflight_mean_tolerance, r.preflight_p99_tolerance)
    return Actor(
        updater,
        loss_fn,
        settings,
        ctx=ctx,
        precision=precision,
        reference=reference,
        parity_tolerances=tolerances,
        rollout_is=rollout_is,
    )


def round_shape(cfg: Config, ctx: DistContext) -> RoundShape:
    return RoundShape(
        cfg.rollout.prompts_per_round, cfg.rollout.n, cfg.trainer.updates_per_round, ctx.world_size, ctx.rank
    )


def build_updater(cfg: Config, ctx: DistContext, model, micro_batches: int, precision: Precision):
    t = cfg.trainer
    common = dict(lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, grad_clip=t.grad_clip, warmup=t.warmup_steps)
    if t.deepspeed:
        bf16 = precision.param_dtype == torch.bfloat16
        return DeepSpeedUpdater(ctx, model, t.deepspeed, micro_batches=micro_batches, bf16=bf16, **common)
    return TorchUpdater(ctx, model.to(ctx.device), **common)


def enable_activation_checkpointing(model) -> None:
    """Every decoder layer recomputes its activations in the backward (non-reentrant checkpoints). Newer transformers
    name it ``activation_checkpointing_enable`` and keep ``gradient_checkpointing_enable`` as a deprecated alias (a
    FutureWarning, to be removed in v6); the lowest transformers we support has only the old name."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
