"""Issue 18: bad input ends in one line and exit 2, naming the one thing that is wrong, before any model loads.

Table-driven and in-process (the CLI's main), so the whole table costs about as much as one import of the trainer.
"""

from __future__ import annotations

import typing

import pytest
from conftest import TINY_VL_CONFIG, one_error_line, train_error_line

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
    ("seed negative", ["trainer.seed=-1"], "trainer.seed=-1 must be in [0, 2^32)"),
    ("seed too large", ["trainer.seed=4294967296"], "trainer.seed=4294967296 must be in [0, 2^32)"),
    ("num_threads negative", ["trainer.num_threads=-1"], "trainer.num_threads=-1 must be >= 0"),
    ("betas length", ["trainer.betas=[0.9]"], "trainer.betas=[0.9] must be two numbers in [0, 1)"),
    ("betas range", ["trainer.betas=[0.9,1.0]"], "trainer.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    ("warmstart batch 0", ["warmstart.batch_size=0"], "warmstart.batch_size=0 must be positive"),
    ("clip_low negative", ["algorithm.clip_low=-1"], "algorithm.clip_low=-1.0 must be a finite number >= 0"),
    ("clip_low over 1 grpo", ["algorithm.loss=grpo", "algorithm.clip_low=1.5"], "algorithm.clip_low=1.5 must be <= 1"),
    ("train_limit negative", ["data.train_limit=-3"], "data.train_limit=-3 must be >= 0 (0: all rows)"),
    ("output_dir empty", ["trainer.output_dir="], "trainer.output_dir is empty"),
    ("val_n 0", ["rollout.val_n=0"], "rollout.val_n=0 must be positive"),
    ("n too large", ["rollout.n=10000000"], "rollout.n=10000000 with rollout.prompts_per_round="),
    ("config.json broken", ["model.path={tmp}/badjson"], "config.json is not valid JSON (line 1"),
    ("no weights", ["model.path={tmp}/noweights"], "has no weights (*.safetensors or pytorch_model*.bin)"),
    ("truncated weights", ["model.path={tmp}/truncated"], "model.safetensors is damaged (truncated:"),
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


@pytest.mark.parametrize(("case", "overrides", "message"), CASES, ids=[c[0] for c in CASES])
def test_train_refuses_bad_input_in_one_line(case, overrides, message, bad_inputs, capsys):
    assert message.format(tmp=bad_inputs) in train_error_line(bad_inputs, "nomodel", overrides, capsys)


@pytest.mark.parametrize(("case", "argv", "message"), OTHER, ids=[c[0] for c in OTHER])
def test_other_commands_refuse_bad_input_in_one_line(case, argv, message, bad_inputs, capsys):
    line = one_error_line([a.format(tmp=bad_inputs) for a in argv], capsys)
    assert line.startswith(f"mm-gmpo {argv[0]}: error: ")
    assert message.format(tmp=bad_inputs) in line


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
