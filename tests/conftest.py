"""Shared fixtures: tiny models built once per test session (seconds), never downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_VL_CONFIG = str(REPO / "configs/geo3k_tiny.yaml")

# The settings every end-to-end test run shares: one thread, no progress bar, no TensorBoard, no warm start
# (the model fixtures are warm-started once).
QUIET_RUN = [
    "trainer.num_threads=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "warmstart.steps=0",
]


def cli_command(*args: str, nproc: int = 1) -> list[str]:
    """The command line of ``mm-gmpo <args>`` in a fresh interpreter, under torch.distributed.run when ``nproc`` > 1."""
    if nproc == 1:
        return [sys.executable, "-m", "mm_gmpo", *args]
    from mm_gmpo.trainer.dist import free_port

    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    return [sys.executable, *launcher, "-m", "mm_gmpo", *args]


def cli_env() -> dict[str, str]:
    """The environment of a CLI run in a test: one thread a process, no tokenizer threads."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: str, cwd: Path, nproc: int = 1, timeout: int = 900) -> None:
    """Runs ``mm-gmpo <args>`` (see :func:`cli_command`) in ``cwd`` with :func:`cli_env`; it must exit 0."""
    cmd = cli_command(*args, nproc=nproc)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=cli_env())
    assert result.returncode == 0, result.stderr[-4000:]


def metrics_rows(run: Path) -> list[dict]:
    """Every row of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def update_rows(run: Path) -> list[dict]:
    """The rows of a run's optimizer steps (not the validation-only ones)."""
    return [row for row in metrics_rows(run) if "actor/pg_loss" in row]


def checkpoint_weights(run: Path, step: int) -> dict:
    """The tensors of a run's checkpoint-<step>."""
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / f"checkpoint-{step}" / "model.safetensors")


def assert_same_updates(expected: list[dict], got: list[dict]) -> None:
    """Two runs' update rows are the same steps with the same numbers (to 1e-6), timings aside: an exact resume."""
    assert [r["step"] for r in got] == [r["step"] for r in expected]  # nothing repeated or skipped
    for a, b in zip(expected, got, strict=True):
        for key, value in a.items():
            if not key.startswith(("perf/", "rollout/tokens_per_s")):
                assert b[key] == pytest.approx(value, abs=1e-6), key


def one_error_line(argv: list[str], capsys) -> str:
    """Runs the CLI on ``argv``, which must exit 2 without a traceback; returns the last line it wrote."""
    from mm_gmpo.cli import main

    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def train_error_line(folder: Path, model: str, overrides: list[str], capsys) -> str:
    """The one error line of ``mm-gmpo train`` on the tiny VL config with ``model.path={folder}/{model}`` and
    ``overrides`` (``{tmp}`` standing for ``folder``); the run folder is ``{folder}/run``."""
    base = [f"trainer.output_dir={folder}/run", f"model.path={folder}/{model}", "model.tiny_if_missing=false"]
    argv = ["train", TINY_VL_CONFIG, *base, *(o.format(tmp=folder) for o in overrides)]
    line = one_error_line(argv, capsys)
    assert line.startswith("mm-gmpo train: error: ")
    return line


@pytest.fixture
def models_must_not_load(monkeypatch) -> None:
    """Loading a model or a processor fails the test (the input checks must come first)."""
    import mm_gmpo.models

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model or processor was loaded before the input was checked")

    monkeypatch.setattr(mm_gmpo.models, "load_model", must_not_load)
    monkeypatch.setattr(mm_gmpo.models, "load_processor", must_not_load)


@pytest.fixture
def bad_inputs(tmp_path, models_must_not_load) -> Path:
    """A folder of inputs the checks must refuse: ``afile`` (a file, not a folder), model folders ``empty``,
    ``noconfig``, ``badjson``, ``noweights`` and ``truncated`` (weights cut short), ``bad.yaml`` and a
    ``latin1.jsonl`` that is not UTF-8; and ``fakemodel``, which passes the checks but is no model. Loading a model
    or a processor fails the test (the checks must come first)."""
    import torch
    from safetensors.torch import save_file

    (tmp_path / "afile").write_text("not a model")
    for name in ("empty", "noconfig", "fakemodel", "badjson", "noweights", "truncated"):
        (tmp_path / name).mkdir()
    for name in ("fakemodel", "noweights", "truncated"):
        (tmp_path / name / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "noconfig" / "model.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "fakemodel" / "model.safetensors"))
    (tmp_path / "badjson" / "config.json").write_text('{"model_type": "qwen2",')
    (tmp_path / "badjson" / "model.safetensors").write_bytes(b"x")
    save_file({"w": torch.zeros(64)}, str(tmp_path / "truncated" / "model.safetensors"))
    whole = (tmp_path / "truncated" / "model.safetensors").read_bytes()
    (tmp_path / "truncated" / "model.safetensors").write_bytes(whole[:-10])
    (tmp_path / "bad.yaml").write_text("trainer:\n  lr: [1, 2\n  x: 1\n")
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"response": "1", "gold": "1"}\n{"response": "caf\xe9"}\n'.encode("latin-1")
    )
    return tmp_path


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory) -> Path:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    return make_tiny_model(TinyModelSpec(kind="qwen2_5_vl"), tmp_path_factory.mktemp("models") / "tiny-vl")


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory) -> Path:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    return make_tiny_model(TinyModelSpec(kind="qwen2"), tmp_path_factory.mktemp("models") / "tiny-text")


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tmp_path_factory) -> Path:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    return make_tiny_model(TinyModelSpec(kind="qwen3_vl"), tmp_path_factory.mktemp("models") / "tiny-qwen3-vl")


@pytest.fixture(scope="session")
def tiny_qwen3_vl_moe_dir(tmp_path_factory) -> Path:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    folder = tmp_path_factory.mktemp("models") / "tiny-qwen3-vl-moe"
    return make_tiny_model(TinyModelSpec(kind="qwen3_vl_moe"), folder)


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    return make_tiny_model(TinyModelSpec(kind="qwen3"), tmp_path_factory.mktemp("models") / "tiny-qwen3")


# The session fixture of each tiny model kind, for tests parametrised over kinds (``tiny_dir(request, kind)``)
TINY_DIR_FIXTURES = {
    "qwen2_5_vl": "tiny_vl_dir",
    "qwen2": "tiny_text_dir",
    "qwen3_vl": "tiny_qwen3_vl_dir",
    "qwen3_vl_moe": "tiny_qwen3_vl_moe_dir",
    "qwen3": "tiny_qwen3_dir",
}


def tiny_dir(request, kind: str) -> Path:
    """The session-built tiny model folder of ``kind`` (built on first use only)."""
    return request.getfixturevalue(TINY_DIR_FIXTURES[kind])


# The files that take longest start first, so that the two CI workers (pytest-xdist, a file per worker) end
# together instead of one of them starting the learning run when the other is nearly done.
LONGEST_FIRST = (
    "test_does_it_learn_text.py",
    "test_train_e2e.py",
    "test_training_modes.py",
    "test_launchers.py",
    "test_deepspeed_skip.py",
    "test_gpu_smoke.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
