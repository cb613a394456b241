"""`mm-gmpo sft`: the warm start alone, saved; the same weights as the warm start inside `mm-gmpo train`."""

from __future__ import annotations

from pathlib import Path

import torch

from mm_gmpo.cli import main
from mm_gmpo.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/toy_gmpo.yaml")


def _overrides(tmp: Path) -> list[str]:
    return [
        f"model.path={tmp / 'base'}",
        "warmstart.steps=3",
        "data.train=synthetic:count_points:train:40",
        "data.val=synthetic:count_points:test:4",
        "trainer.num_threads=1",
        f"trainer.output_dir={tmp / 'run'}",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "reward.workers=1",
    ]


def test_sft_saves_the_trainers_warm_start(tmp_path):
    overrides = _overrides(tmp_path)
    assert main(["sft", CONFIG, *overrides, "--out", str(tmp_path / "sft")]) == 0
    from mm_gmpo.models import load_model

    saved = load_model(tmp_path / "sft", "float32").state_dict()
    base = load_model(tmp_path / "base", "float32").state_dict()
    assert (tmp_path / "sft" / "warmstart.json").is_file() and (tmp_path / "sft" / "tokenizer.json").is_file()

    from mm_gmpo.trainer.trainer import Trainer

    trainer = Trainer(load_config(CONFIG, overrides))  # warm-starts in its constructor, from the same built model
    try:
        state = trainer.actor.hf_model.state_dict()
        assert any(not torch.equal(saved[k], base[k]) for k in saved)  # the warm start changed the weights
        for name, value in saved.items():
            assert torch.allclose(state[name], value, atol=1e-6), name
    finally:
        trainer.close()


def test_sft_without_steps_is_a_user_error(tmp_path, capsys):
    args = ["sft", CONFIG, *_overrides(tmp_path), "warmstart.steps=0", "--out", str(tmp_path / "sft")]
    assert main(args) == 2
    assert "warmstart.steps must be positive" in capsys.readouterr().err
