"""Checkpoints: the model and processor in the Hugging Face layout, plus what it takes to resume exactly.

A checkpoint is written into a temporary folder and renamed into place only when complete, so a kill during the
write leaves the previous checkpoint usable; a write that fails (disk full) removes the temporary folder and stops
the run with one line. Resuming from a run directory takes the newest folder named exactly ``checkpoint-<step>``
that passes :func:`checkpoint_problem` (every file it needs present and complete), skipping damaged ones with a
warning. Layout::

    RUN_DIR/checkpoints/checkpoint-<step>/
        config.json, model.safetensors, ...   # loadable by transformers and vLLM as they are
        trainer_state.json                    # step, round, data position, counters; processes; step settings
        rng-rank<r>.pt                        # RNG states per process
        optimizer.pt | deepspeed/             # optimizer and scheduler state
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_gmpo.errors import TrainingHalted, UserError
from mm_gmpo.trainer.dist import DistContext, all_reduce_max, barrier
from mm_gmpo.trainer.policy import strip_prefix
from mm_gmpo.trainer.state import TrainState

try:  # safetensors reports a failed write (disk full) as its own error, not an OSError
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover
    _SafetensorError = OSError

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
WRITE_ERRORS = (OSError, RuntimeError, _SafetensorError)  # what a failed write raises (torch: RuntimeError)
_NAME = re.compile(rf"{PREFIX}\d+")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    ctx: DistContext,
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    updater,
    processor,
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint-<step> atomically (all processes take part); returns its folder.

    ``model`` is the Hugging Face model, saved in its own layout (with ``updater``'s full weights where it holds
    them: ZeRO-3); ``updater`` (:class:`~mm_gmpo.trainer.engine.Updater`) also saves the optimizer state.

    A failed write of any process (disk full, permissions: an OSError, or the RuntimeError/SafetensorError torch
    and safetensors turn it into) removes the temporary folder, keeps the previous checkpoints and raises
    :class:`TrainingHalted` on every process, saying why in one line. ``state`` is stored with the number of
    processes (``processes``: one RNG file each)."""
    state = {**state, "processes": ctx.world_size}
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{step}"
    tmp = root / f".tmp-{PREFIX}{step}"
    error: Exception | None = None
    if ctx.is_main:
        try:
            for stale in root.glob(f".tmp-{PREFIX}*"):  # left by a kill during an earlier write
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir(parents=True)
        except OSError as exc:
            error = exc
    barrier(ctx)
    full_state = updater.full_state_dict()  # collective under ZeRO-3
    try:
        if ctx.is_main and error is None:
            if full_state is not None:
                model.save_pretrained(tmp, state_dict=strip_prefix(full_state))
            else:
                model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    except WRITE_ERRORS as exc:
        error = exc
    try:
        updater.save_state(tmp)  # collective under DeepSpeed: every process calls it
        torch.save(_rng_state(), tmp / f"rng-rank{ctx.rank}.pt")
    except WRITE_ERRORS as exc:
        error = error or exc
    if all_reduce_max(ctx, [float(error is not None)])[0]:  # every process learns of any failure
        reason = _write_error(error, root) if error is not None else "a write failed on another process"
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = sorted(_complete(root), key=_step_of)
        raise TrainingHalted(
            f"could not save checkpoint {final}: {reason}; kept {kept[-1].name if kept else 'no earlier checkpoint'}"
        )
    if ctx.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _prune(root, keep_last)
        log.info("checkpoint saved: %s", final)
    barrier(ctx)
    return final


def latest_checkpoint(path: str | Path) -> Path:
    """The checkpoint at ``path`` itself, or the newest complete one of the run directory ``path``; damaged ones
    (see :func:`checkpoint_problem`) are skipped with a warning."""
    path = Path(path)
    if (path / "trainer_state.json").is_file():
        problem = checkpoint_problem(path)
        if problem:
            raise UserError(f"trainer.resume_from={path}: damaged checkpoint ({problem})")
        return path
    for folder in sorted(_complete(checkpoint_dir(path)), key=_step_of, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log.warning("skipping damaged checkpoint %s (%s); trying the previous one", folder, problem)
    raise UserError(f"trainer.resume_from={path}: no complete checkpoint found (looked in {checkpoint_dir(path)})")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (a truncated or missing file, a trainer state or model config that
    does not parse, a missing RNG file of a process), or None. Cheap: reads headers only."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"trainer_state.json unreadable: {exc}"
    problem = _state_problem(state)
    if problem:
        return f"trainer_state.json {problem}"
    config_name = "adapter_config.json" if (folder / "adapter_config.json").is_file() else "config.json"  # LoRA
    try:
        model_config = json.loads((folder / config_name).read_text())
    except (OSError, ValueError) as exc:
        return f"{config_name} unreadable: {_one_line(exc)}"
    if not isinstance(model_config, dict) or not model_config:
        return f"{config_name} is not a JSON object with the model's settings"
    if config_name == "config.json" and not model_config.get("model_type"):
        return "config.json has no model_type"
    missing_rng = [
        f"rng-rank{r}.pt" for r in range(state.get("processes", 1)) if not (folder / f"rng-rank{r}.pt").is_file()
    ]
    if missing_rng:  # without them the resume would not be exact
        return f"missing RNG state {', '.join(missing_rng)}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for file in weights:
        if not _safetensors_complete(file):
            return f"{file.name} is truncated or not a safetensors file"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError) as exc:
            return f"{index.name} unreadable: {exc}"
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            return f"missing weight shards {', '.join(missing)}"
    if not (folder / "optimizer.pt").is_file() and not (folder / "deepspeed").is_dir():
        return "no optimizer state (optimizer.pt or deepspeed/)"
    for file in [*folder.glob("*.pt"), *(folder / "deepspeed").rglob("*.pt")]:
        if not zipfile.is_zipfile(file):  # torch.save writes a zip; a truncated one has no central directory
            return f"{file.relative_to(folder)} is truncated"
    return None


def _safetensors_complete(file: Path) -> bool:
    """The file is as long as its header says (8-byte header size, JSON header, then the tensors' bytes)."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            header_size = struct.unpack("<Q", f.read(8))[0]
            if header_size > size:
                return False
            header = json.loads(f.read(header_size))
    except (OSError, ValueError, struct.error):
        return False
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return size >= 8 + header_size + max(ends, default=0)


def _state_problem(state: Any) -> str | None:
    """What is wrong with a parsed trainer_state.json (not an object, no step, a counter that is not an int >= 0)."""
    if not isinstance(state, dict) or "step" not in state:
        return "has no step"
    counters = [f.name for f in dataclasses.fields(TrainState)] + ["processes"]
    for key in counters:
        value = state.get(key, 0 if key != "processes" else 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "processes" else 0):
            return f"has {key}={value!r}, not a {'positive' if key == 'processes' else 'non-negative'} integer"
    if not isinstance(state.get("settings", {}), dict):
        return f"has settings={state['settings']!r}, not an object"
    return None


def load_trainer_state(ctx: DistContext, folder: Path) -> dict[str, Any]:
    """The checkpoint's trainer state (all of trainer_state.json); sets this process's RNG states from its file.
    A process the checkpoint had no RNG file for (more processes now than then) keeps its seed, with a warning."""
    state = json.loads((folder / "trainer_state.json").read_text())
    rng_file = folder / f"rng-rank{ctx.rank}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("%s has no %s (saved by %s processes): this process's sampling is not resumed exactly",
                    folder, rng_file.name, state.get("processes", 1))  # fmt: skip
    return state


def train_state_of(state: dict[str, Any]) -> TrainState:
    """The :class:`TrainState` counters of a trainer_state.json (its other entries left out)."""
    names = {f.name for f in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in state.items() if k in names})


def _write_error(exc: BaseException, folder: Path) -> str:
    """A failed write in one line. torch and safetensors report a full disk in their own words ("unexpected pos
    ..."), so the free space left is named too (before the temporary folder is removed)."""
    if isinstance(exc, OSError):
        return _one_line(exc)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return _one_line(exc)
    if free < 2**20:
        return f"No space left on device ({free} bytes free; {type(exc).__name__}: {_one_line(exc)[:120]})"
    return f"{_one_line(exc)} ({free / 2**20:.0f} MiB free on that disk)"


def _one_line(exc: BaseException | None) -> str:
    """An error as one line (torch's write errors span several)."""
    if exc is None:
        return ""
    return " ".join((str(exc) or type(exc).__name__).split())[:300]


def _complete(root: Path) -> list[Path]:
    """Folders named exactly checkpoint-<step> with a trainer state (not checkpoint-5-backup, not .tmp-*)."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / "trainer_state.json").is_file()]


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
