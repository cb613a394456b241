"""The README's launch lines in their CPU form: the DeepSpeed launcher (ZeRO-2 and ZeRO-3) and torchrun, run as a
user types them (`deepspeed --num_gpus 2 --module mm_gmpo train CONFIG ...`, `torchrun --nproc_per_node 2 -m mm_gmpo
train CONFIG ...`) on the tiny configs, to completion.

The DeepSpeed launcher starts `python -u -m mm_gmpo --local_rank=R train ...`, the flag before the subcommand; the
other e2e tests start processes with `python -m torch.distributed.run`, which passes no flag, so only these tests
see what the launcher adds. On a CPU `--num_gpus 2` starts 2 processes (gloo)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.trainer.dist import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the launchers of the venv that runs the tests

# a few short steps: 2 prompts x 4 responses per round over 2 processes, 2 updates per round
SHORT = [
    "trainer.max_steps=2",
    "trainer.updates_per_round=2",
    "trainer.micro_batch_size=2",
    "trainer.val_every=0",
    "trainer.save_every=2",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "rollout.prompts_per_round=2",
    "rollout.n=4",
    "rollout.max_new_tokens=12",
    "data.train_limit=20",
    "data.val_limit=2",
    "warmstart.steps=2",
    "reward.workers=1",
]


def _launcher(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        assert found, f"the {name} launcher is not installed next to {sys.executable}"
        return found
    return str(path)


def _zero3_partitioned(tmp: Path) -> Path:
    """zero3.json with every parameter partitioned, as a 7B model's are (the default threshold keeps tiny tensors
    whole)."""
    config = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp / "zero3-partitioned.json"
    path.write_text(json.dumps(config))
    return path


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "unrecognized arguments" not in log
    return log


def _finished(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert all(math.isfinite(r["actor/pg_loss"]) for r in train)
    assert (run / "checkpoints" / "checkpoint-2" / "config.json").is_file()
    return train


# ZeRO-2 under the DeepSpeed launcher is `-m long`: the launcher's path is the ZeRO-3 case's, and ZeRO-2 on two
# processes runs in CI under torchrun below (and in tests/test_train_e2e.py); it saved about a minute of CI
@pytest.mark.parametrize("stage", [pytest.param("zero2", marks=pytest.mark.long), "zero3"])
def test_deepspeed_launcher_runs_the_readme_line(tmp_path, stage):
    ds = REPO / "configs/deepspeed/zero2.json" if stage == "zero2" else _zero3_partitioned(tmp_path)
    run = tmp_path / "run"
    cmd = [
        _launcher("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
        "--module", "mm_gmpo", "train", str(REPO / "configs/geo3k_tiny.yaml"),
        f"trainer.deepspeed={ds}", f"trainer.output_dir={run}", f"model.path={tmp_path / 'tiny-vl'}",
        "model.tiny_if_missing=true", *SHORT,
    ]  # fmt: skip
    log = _run(cmd, tmp_path)
    assert "dist_world_size=2" in log and log.count("exits successfully") == 2
    assert "--local_rank=0" in log and "--local_rank=1" in log  # the launcher passed the flag, and it parsed
    _finished(run)


def test_torchrun_runs_the_readme_line(tmp_path):
    run = tmp_path / "run"
    cmd = [
        _launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "mm_gmpo", "train", str(REPO / "configs/math_tiny.yaml"),
        f"trainer.output_dir={run}", f"model.path={tmp_path / 'tiny-text'}", "model.tiny_if_missing=true",
        f"trainer.deepspeed={REPO / 'configs/deepspeed/zero2.json'}", *SHORT,
    ]  # fmt: skip
    _run(cmd, tmp_path)
    _finished(run)
