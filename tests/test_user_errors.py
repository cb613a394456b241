"""Issue 18: bad input ends in one line and exit 2, naming the one thing that is wrong, before any model loads.

Table-driven and in-process (the CLI's main), so the whole table costs about as much as one import of the trainer.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
from conftest import TINY_VL_CONFIG, one_error_line, train_error_line
from safetensors.torch import save_file

# (case, argv with {tmp} for the test's folder, what the one line says)
CASES = [
    ("output_dir is a file", ["trainer.output_dir={tmp}/afile"], "trainer.output_dir={tmp}/afile is a file"),
    ("output_dir under a file", ["trainer.output_dir={tmp}/afile/run"], "is under {tmp}/afile, which is a file"),
    ("output_dir unwritable", ["trainer.output_dir=/sys/mm-gmpo-run"], "trainer.output_dir=/sys/mm-gmpo-run is not"),
    ("model missing", ["model.path={tmp}/nomodel"], "model.path={tmp}/nomodel: no such folder"),
    ("model folder empty", ["model.path={tmp}/empty"], "model.path={tmp}/empty is an empty folder"),
    ("model is a file", ["model.path={tmp}/afile"], "model.path={tmp}/afile is a file"),
    ("model without config.json", ["model.path={tmp}/noconfig"], "has no config.json"),
    ("reward.workers=0", ["reward.workers=0"], "reward.workers=0 must be positive"),
    ("reward.timeout=0", ["reward.timeout=0"], "reward.timeout=0.0 must be positive"),
    ("trainer.lr=nan", ["trainer.lr=nan"], "trainer.lr=nan must be a finite number >= 0"),
    ("trainer.lr<0", ["trainer.lr=-1e-6"], "trainer.lr=-1e-06 must be a finite number >= 0"),
    ("max_new_tokens=0", ["rollout.max_new_tokens=0"], "rollout.max_new_tokens=0 must be positive"),
    ("top_p=0", ["rollout.top_p=0"], "rollout.top_p=0.0 must be in (0, 1]"),
    ("top_p>1", ["rollout.top_p=1.5"], "rollout.top_p=1.5 must be in (0, 1]"),
    ("one key named", ["trainer.micro_batch_size=-2"], "error: trainer.micro_batch_size=-2 must be positive"),
    (
        "format typo",
        ["reward.format=think_boxd"],
        "not one of: think_boxed, boxed, answer_tag, easyr1, none; did you mean",
    ),
    ("extraction typo", ["reward.extraction=oficial"], "reward.extraction='oficial' is not one of: lenient, official"),
    ("n=1", ["rollout.n=1"], "rollout.n=1: every advantage would be 0"),
    ("temperature=0", ["rollout.temperature=0"], "rollout.temperature=0: greedy sampling"),
]
OTHER = [
    ("yaml syntax", ["train", "{tmp}/bad.yaml"], "train: error: {tmp}/bad.yaml line 3: not valid YAML (expected ','"),
    ("eval missing model", ["eval", "--model", "{tmp}/nomodel", "--data", "math500"], "--model={tmp}/nomodel: no"),
    ("eval empty model", ["eval", "--model", "{tmp}/empty", "--data", "math500"], "is an empty folder"),
    ("eval file model", ["eval", "--model", "{tmp}/afile", "--data", "math500"], "--model={tmp}/afile is a file"),
    (
        "eval checks every data set first",
        ["eval", "--model", "{tmp}/fakemodel", "--data", "math500", "jsonl:{tmp}/missing.jsonl"],
        "missing.jsonl",
    ),
    ("verify not utf-8", ["verify", "--input", "{tmp}/latin1.jsonl"], "latin1.jsonl line 2 is not UTF-8 text"),
    ("verify timeout 0", ["verify", "a", "a", "--timeout", "0"], "--timeout 0.0 must be positive"),
    ("verify workers 0", ["verify", "--input", "{tmp}/latin1.jsonl", "--workers", "0"], "--workers 0 must be at"),
]


@pytest.fixture
def folder(tmp_path, models_must_not_load) -> Path:
    """Files for the cases; loading a model or a processor fails the test (the checks must come first)."""
    (tmp_path / "afile").write_text("not a model")
    (tmp_path / "empty").mkdir()
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "noconfig" / "model.safetensors").write_bytes(b"")
    (tmp_path / "fakemodel").mkdir()
    (tmp_path / "fakemodel" / "config.json").write_text('{"model_type": "qwen2"}')
    save_file({"w": torch.zeros(1)}, str(tmp_path / "fakemodel" / "model.safetensors"))
    (tmp_path / "bad.yaml").write_text("trainer:\n  lr: [1, 2\n  x: 1\n")
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"response": "1", "gold": "1"}\n{"response": "caf\xe9"}\n'.encode("latin-1")
    )
    return tmp_path


@pytest.mark.parametrize(("case", "overrides", "message"), CASES, ids=[c[0] for c in CASES])
def test_train_refuses_bad_input_in_one_line(case, overrides, message, folder, capsys):
    assert message.format(tmp=folder) in train_error_line(folder, "nomodel", overrides, capsys)


@pytest.mark.parametrize(("case", "argv", "message"), OTHER, ids=[c[0] for c in OTHER])
def test_other_commands_refuse_bad_input_in_one_line(case, argv, message, folder, capsys):
    line = one_error_line([a.format(tmp=folder) for a in argv], capsys)
    assert line.startswith(f"mm-gmpo {argv[0]}: error: ")
    assert message.format(tmp=folder) in line


def test_zero_advantages_are_allowed_when_asked():
    from mm_gmpo.config import load_config
    from mm_gmpo.trainer.setup import check_config

    for override in ("rollout.n=1", "rollout.temperature=0"):
        check_config(load_config(TINY_VL_CONFIG, [override, "algorithm.allow_zero_advantages=true"]), world_size=1)


def test_reward_format_choices_are_the_reward_kinds():
    from mm_gmpo.config import RewardConfig
    from mm_gmpo.reward.rewards import FORMAT_KINDS

    assert typing.get_args(typing.get_type_hints(RewardConfig)["format"]) == FORMAT_KINDS


def test_reward_extraction_choices_are_the_graders():
    from mm_gmpo.config import RewardConfig
    from mm_gmpo.reward.graders import EXTRACTIONS

    assert typing.get_args(typing.get_type_hints(RewardConfig)["extraction"]) == EXTRACTIONS
