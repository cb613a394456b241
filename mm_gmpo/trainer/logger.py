"""Metrics out of the trainer: metrics.jsonl (one object per optimizer step), TensorBoard, optional wandb."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mm_gmpo.errors import TrainingHalted, require

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes on the main process only; on resume, rows after the resumed step are dropped (no duplicates), and
    so is a partial line."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        wandb_project: str,
        config: dict,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line, row in _read_rows(self.path) if row.get("step", 0) <= resume_step]
            with self._writing():
                self.path.write_text("".join(line + "\n" for line in kept))
        # without a resume the file cannot exist: the trainer refuses (or moves aside) a folder holding a run
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if wandb_project:
            wandb = require("wandb", "trainer.wandb_project", "pip install -e '.[wandb]'")
            self._wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir), resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        with self._writing():
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if self._tb is not None:
                for key, value in numbers.items():
                    self._tb.add_scalar(key, value, step)
                self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write of the metrics (disk full: an OSError, or TensorBoard's own error from its writer
        thread) stops the run in one line."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 (tensorboard re-raises its writer thread's errors as they come)
            self._tb = None  # closing it would raise the same error again
            first = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise TrainingHalted(f"could not write the metrics to {self.path.parent}: {first}") from exc

    def close(self) -> None:
        if self._tb is not None:
            try:
                self._tb.close()
            except Exception as exc:  # noqa: BLE001 (a full disk at the last flush: the run is over anyway)
                log.warning("could not close the TensorBoard log in %s: %s", self.path.parent, exc)
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()


def _read_rows(path: Path) -> list[tuple[str, dict]]:
    """(line, row) of every complete line; one that does not parse (a kill during the write of the last line)
    is dropped with a warning."""
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            log.warning("%s line %d is not a complete JSON object: dropped (%.60r)", path, number, line)
            continue
        out.append((line, row))
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep it visible
    return value
