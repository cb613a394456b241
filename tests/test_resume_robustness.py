"""Issue 18: what a resume finds on disk after a kill, a full disk or a stray folder; the interrupt request."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from mm_gmpo.errors import TrainingHalted, UserError
from mm_gmpo.trainer.checkpoint import checkpoint_problem, latest_checkpoint, save_checkpoint
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.interrupt import SAME_REQUEST_S, StopRequest
from mm_gmpo.trainer.logger import MetricsLogger


class _Model:
    """Writes what save_pretrained writes that matters here: a safetensors file."""

    def __init__(self, fail: OSError | None = None):
        self.fail = fail

    def save_pretrained(self, folder, state_dict=None):
        if self.fail:
            raise self.fail
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, Path(folder) / "model.safetensors")
        (Path(folder) / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 8}')


class _Updater:
    def full_state_dict(self):
        return None

    def save_state(self, folder: Path) -> None:
        torch.save({"optimizer": {"lr": 1.0}}, folder / "optimizer.pt")


_PROCESSOR = SimpleNamespace(save_pretrained=lambda folder: None)


def _save(run: Path, step: int, model: _Model | None = None) -> Path:
    state = {"step": step, "round": step}
    return save_checkpoint(DistContext(), run, step, model or _Model(), _Updater(), _PROCESSOR, state, keep_last=5)


def test_latest_skips_stray_folders_and_falls_back_from_a_damaged_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    two, four = _save(run, 2), _save(run, 4)
    assert checkpoint_problem(four) is None and latest_checkpoint(run) == four
    root = four.parent
    for stray in ("checkpoint-5-backup", ".tmp-checkpoint-6", "checkpoint-x"):
        (root / stray).mkdir()
        (root / stray / "trainer_state.json").write_text('{"step": 9}')
    assert latest_checkpoint(run) == four  # and no ValueError from int("5-backup")
    weights = four / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a kill during a copy, a full disk during the write
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == two
    assert "skipping damaged checkpoint" in caplog.text and "model.safetensors is truncated" in caplog.text
    with pytest.raises(UserError, match="damaged checkpoint"):
        latest_checkpoint(four)  # named directly: no silent fallback
    optimizer = two / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-30])
    assert "optimizer.pt is truncated" in checkpoint_problem(two)
    with pytest.raises(UserError, match="no complete checkpoint"):
        latest_checkpoint(run)


def test_a_failed_save_says_why_removes_its_folder_and_keeps_the_previous(tmp_path, monkeypatch):
    run = tmp_path / "run"
    two = _save(run, 2)
    with pytest.raises(TrainingHalted) as err:
        _save(run, 4, _Model(fail=OSError(28, "No space left on device")))
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "kept checkpoint-2" in message
    assert sorted(p.name for p in two.parent.iterdir()) == ["checkpoint-2"]  # no .tmp-checkpoint-4 left
    # the same from the torch writer (optimizer or RNG state)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(TrainingHalted, match="No space left"):
        _save(run, 4)
    assert latest_checkpoint(run) == two and sorted(p.name for p in two.parent.iterdir()) == ["checkpoint-2"]


def test_metrics_partial_last_line_is_dropped_on_resume(tmp_path, caplog):
    rows = [{"step": s, "reward/mean": 0.5} for s in range(4)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False, wandb_project="", config={}, resume_step=2)
    assert "line 5 is not a complete JSON object" in caplog.text
    logger.log(3, {"reward/mean": 1.0})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_first_signal_is_a_request_second_stops_now():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == signal.SIGTERM  # recorded, nothing raised
        os.kill(os.getpid(), signal.SIGINT)  # within a second: the same request (torchrun forwards a copy)
        stop._first_at -= SAME_REQUEST_S
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
