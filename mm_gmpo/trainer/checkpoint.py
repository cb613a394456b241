"""Checkpoints: the model and processor in the Hugging Face layout, plus what it takes to resume exactly.

A checkpoint is written into a temporary folder and renamed into place only when complete, so a kill during the
write leaves the previous checkpoint usable. Layout::

    RUN_DIR/checkpoints/checkpoint-<step>/
        config.json, model.safetensors, ...   # loadable by transformers and vLLM as they are
        trainer_state.json                    # step, round, data position, counters
        rng-rank<r>.pt                        # RNG states per process
        optimizer.pt | deepspeed/             # optimizer and scheduler state
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_gmpo.errors import UserError
from mm_gmpo.trainer.dist import DistContext, barrier
from mm_gmpo.trainer.policy import strip_prefix

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    ctx: DistContext, run_dir: Path, step: int, updater, processor, state: dict[str, Any], keep_last: int
) -> Path:
    """Write checkpoint-<step> atomically (all processes take part); returns its folder."""
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".tmp-{PREFIX}{step}"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(ctx)
    full_state = updater.full_state_dict()  # collective under ZeRO-3
    if ctx.is_main:
        model = updater.module.model  # the Hugging Face model inside the log-prob wrapper
        if full_state is not None:
            model.save_pretrained(tmp, state_dict=strip_prefix(full_state))
        else:
            model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    updater.save_state(tmp)
    torch.save(_rng_state(), tmp / f"rng-rank{ctx.rank}.pt")
    barrier(ctx)
    if ctx.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune(root, keep_last)
        log.info("checkpoint saved: %s", final)
    barrier(ctx)
    return final


def latest_checkpoint(path: str | Path) -> Path:
    """The checkpoint at ``path`` itself, or the newest complete one of the run directory ``path``."""
    path = Path(path)
    if (path / "trainer_state.json").is_file():
        return path
    found = sorted(_complete(checkpoint_dir(path)), key=_step_of)
    if not found:
        raise UserError(f"trainer.resume_from={path}: no complete checkpoint found (looked in {checkpoint_dir(path)})")
    return found[-1]


def load_trainer_state(ctx: DistContext, folder: Path) -> dict[str, Any]:
    rng_file = folder / f"rng-rank{ctx.rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((folder / "trainer_state.json").read_text())


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.glob(f"{PREFIX}*") if (p / "trainer_state.json").is_file()]


def _step_of(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def _prune(root: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for old in sorted(_complete(root), key=_step_of)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
