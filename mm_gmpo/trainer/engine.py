"""The policy's optimizer wrappers ("updaters"): AdamW on a plain module, or a DeepSpeed engine (ZeRO-2/3), behind
one interface (:class:`Updater`), and the DeepSpeed JSON handling. Their collectives go through
:mod:`mm_gmpo.trainer.dist` (or DeepSpeed's engine)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Protocol

import torch

from mm_gmpo.errors import UserError, require
from mm_gmpo.trainer import dist
from mm_gmpo.trainer.dist import DistContext

log = logging.getLogger(__name__)


class Updater(Protocol):
    """What the actor needs of an optimizer wrapper. ``module`` is the wrapped :class:`PolicyLogprobs` (its
    ``.model`` the Hugging Face model); ``forward`` runs it (through the engine under DeepSpeed)."""

    module: torch.nn.Module

    @property
    def device(self) -> torch.device: ...

    @property
    def partitioned(self) -> bool: ...  # parameters split over processes (ZeRO-3): every module call is a collective

    @property
    def lr(self) -> float: ...

    def forward(self, *args, **kwargs): ...

    def begin_micro_batch(self, last: bool) -> None: ...

    def backward(self, loss: torch.Tensor, last: bool = True) -> None: ...

    def step(self, skip: bool) -> tuple[float, bool]: ...  # (global grad norm, applied)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None: ...

    def save_state(self, folder: Path) -> None: ...

    def load_state(self, folder: Path) -> None: ...

    def load_weights(self, folder: Path) -> None: ...


class TorchUpdater:
    """AdamW on a plain module; gradients summed over processes by hand (no DeepSpeed)."""

    def __init__(self, ctx: DistContext, model: torch.nn.Module, lr: float, betas, weight_decay, grad_clip, warmup):
        self.ctx = ctx
        self.module = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.scheduler = _warmup_schedule(self.optimizer, warmup)
        self.grad_clip = grad_clip
        dist.broadcast_from_main(ctx, [p.data for p in model.parameters()])

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def begin_micro_batch(self, last: bool) -> None:
        pass  # gradients accumulate in .grad until step()

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    partitioned = False  # every process holds every parameter

    def step(self, skip: bool) -> tuple[float, bool]:
        """Apply the accumulated gradients, or drop them when ``skip`` or when their norm is not finite (then
        neither the parameters, nor AdamW's moments, nor the schedule move). Returns (global grad norm, applied)."""
        dist.sum_gradients(self.ctx, self.params)
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        applied = not skip and math.isfinite(norm)
        if applied:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, applied

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        return None  # the module holds full weights: save it directly

    def save_state(self, folder: Path) -> None:
        if self.ctx.is_main:
            torch.save(
                {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                folder / "optimizer.pt",
            )

    def load_state(self, folder: Path) -> None:
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def load_weights(self, folder: Path) -> None:
        """Weights of a checkpoint through ``from_pretrained`` (it knows the saved key layout), copied in place."""
        model = self.module.model
        loaded = type(model).from_pretrained(folder, dtype=next(model.parameters()).dtype, use_kernels=False)
        model.load_state_dict(loaded.state_dict())


class DeepSpeedUpdater:
    """A DeepSpeed engine (ZeRO-2/3); micro-batches accumulate, the engine reduces and steps at the boundary."""

    def __init__(
        self, ctx, model, ds_config_path: str, *, lr, betas, weight_decay, grad_clip, warmup, micro_batches, bf16=False
    ):
        deepspeed = require("deepspeed", "trainer.deepspeed", "pip install -e '.[deepspeed]'")
        config = load_deepspeed_config(
            ds_config_path,
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            micro_batches=micro_batches,
            world_size=ctx.world_size,
            bf16=bf16,
        )
        self.ctx = ctx
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        linear = torch.nn.functional.linear
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, config=config, lr_scheduler=lambda opt: _warmup_schedule(opt, warmup)
        )
        if torch.nn.functional.linear is not linear:  # see load_deepspeed_config: never leave it replaced
            log.warning("DeepSpeed replaced torch.nn.functional.linear; restoring torch's own")
            torch.nn.functional.linear = linear
        self.module = self.engine.module
        self.zero_stage = config.get("zero_optimization", {}).get("stage", 0)

    def forward(self, *args, **kwargs):
        return self.engine(*args, **kwargs)  # through the engine: ZeRO-3 prepares gradient accumulation here

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def partitioned(self) -> bool:
        """Parameters split over processes (ZeRO-3): every module call is a collective."""
        return self.zero_stage == 3 and self.ctx.world_size > 1

    def begin_micro_batch(self, last: bool) -> None:
        """Before the micro-batch's forward. ``last``: the step's last micro-batch (the accumulation boundary).
        Steps may have different numbers of micro-batches (token-budget micro-batches), so the boundary is set
        explicitly rather than counted against gradient_accumulation_steps."""
        self.engine.set_gradient_accumulation_boundary(last)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        # The engine averages gradients over processes; the loss is already normalised by the global batch,
        # so scale by the world size to turn that average into the sum.
        self.engine.backward(loss * self.ctx.world_size, scale_wrt_gas=False)
        if not last:
            self.engine.step()  # not a boundary: the engine only counts the micro-step

    def step(self, skip: bool) -> tuple[float, bool]:
        """The engine's step at the accumulation boundary. A step to drop (``skip``) has NaN gradients (see
        trainer.update), and ZeRO's overflow check drops it before the optimizer runs (bf16: with
        ``check_grad_overflow``, set in our JSONs; fp32: always), as it does any non-finite gradient.
        Returns (global grad norm, applied)."""
        skipped_before = self.engine.skipped_steps
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()
        applied = self.engine.skipped_steps == skipped_before
        if skip and applied:
            raise RuntimeError("DeepSpeed applied a step whose gradients were NaN: enable bf16.check_grad_overflow")
        norm = self.engine.get_global_grad_norm()
        return (float(norm) if norm is not None else float("nan")), applied

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full weights on rank 0 (gathered from the ZeRO-3 partitions); None where the module holds them."""
        if self.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return None

    def save_state(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag="state")  # weights, optimizer, scheduler

    def load_state(self, folder: Path) -> None:
        self.engine.load_checkpoint(str(folder / "deepspeed"), tag="state")

    def load_weights(self, folder: Path) -> None:
        pass  # the DeepSpeed checkpoint holds the module weights


def _warmup_schedule(optimizer, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)


def load_deepspeed_config(
    path: str, *, lr, betas, weight_decay, grad_clip, micro_batches, world_size, bf16: bool = False
) -> dict:
    """Read a DeepSpeed JSON and fill the values our config owns (batch sizes, clipping, precision).

    ``bf16``: the policy computes in bf16 (``model.dtype``), so on a GPU DeepSpeed's bf16 mode is switched on
    whatever the JSON says: bf16 parameters without DeepSpeed's fp32 masters would train almost nothing at 1e-6.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"trainer.deepspeed={path}: file not found")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"trainer.deepspeed={path}: not valid JSON ({exc})") from exc
    config["train_micro_batch_size_per_gpu"] = 1  # our micro-batches have their own size; DS only counts them
    config["gradient_accumulation_steps"] = micro_batches
    config["train_batch_size"] = micro_batches * world_size
    config["gradient_clipping"] = grad_clip if grad_clip > 0 else 0.0
    zero = config.get("zero_optimization", {})
    if zero.get("stage") == 3:
        # ZeRO-3's memory_efficient_linear (on by default) replaces torch.nn.functional.linear for the whole
        # process and never restores it; vLLM's linear layers in the same process call F.linear inside the graphs
        # they compile and capture on a GPU. The plain F.linear keeps no extra memory here: under DeepSpeed the
        # forward runs without autocast (trainer/precision.py), so what autograd saves is the parameter itself, whose
        # data ZeRO-3 releases after the forward and gathers again for the backward.
        zero["memory_efficient_linear"] = False
    config.pop("optimizer", None)  # we pass a torch AdamW (no cpu_adam build)
    config.pop("scheduler", None)
    if not torch.cuda.is_available():  # fp32 on CPU
        config.pop("bf16", None)
        config.pop("fp16", None)
    elif bf16:  # fp32 master weights and optimizer states inside ZeRO, bf16 compute; drop non-finite steps
        config["bf16"] = {**config.get("bf16", {}), "enabled": True, "check_grad_overflow": True}
        config.pop("fp16", None)
    return config
