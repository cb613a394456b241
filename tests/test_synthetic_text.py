"""The synthetic text task chain_sum (issue 17): determinism, a worked solution that is right step by step, the
verifier grading its gold response, response lengths in toy tokens, and the toy Qwen2 built on its vocabulary."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from mm_gmpo.data import build_prompts, load_examples, parse_spec
from mm_gmpo.data.prompts import target_response
from mm_gmpo.data.synthetic import generate
from mm_gmpo.data.synthetic_text import TEXT_TASKS, split_bucket
from mm_gmpo.errors import UserError
from mm_gmpo.models.toy_tokenizer import make_toy_model, train_toy_tokenizer
from mm_gmpo.reward import compute_rewards
from mm_gmpo.types import Prompt

LINE = re.compile(r"([a-h])\) ([+-]\d): (\d+)([+-])(\d)=(\d+)")


def _gold(example, template: str = "geo3k") -> str:
    return target_response(Prompt("", [], example), template, "unused filler")


def test_spec_parses_and_bad_specs_fail_in_one_line():
    assert parse_spec("synthetic:chain_sum:train:20000") == ("synthetic", "chain_sum:train:20000")
    assert parse_spec("synthetic:chain_sum:test") == ("synthetic", "chain_sum:test:500")
    for bad in ("synthetic:chain_sums:train", "synthetic:chain_sum:dev", "synthetic:chain_sum:train:0"):
        with pytest.raises(UserError, match="synthetic") as err:
            parse_spec(bad)
        assert "\n" not in str(err.value)


def test_items_are_deterministic_prefix_stable_and_splits_differ():
    first = generate("chain_sum", "train", 50)
    again, stats = load_examples("synthetic:chain_sum:train:80")
    assert stats.kept == 80 and not again[0].images
    assert [(e.id, e.problem, e.answer, e.meta) for e in first] == [
        (e.id, e.problem, e.answer, e.meta) for e in again[:50]
    ]
    train = {e.problem for e in generate("chain_sum", "train", 20000)}  # the configs' training set
    val = {e.problem for e in generate("chain_sum", "val", 300)}
    test = {e.problem for e in generate("chain_sum", "test", 300)}
    assert not train & test and not train & val and not val & test  # held-out problems are never trained on
    assert len(test) > 280  # a short chain can still come up twice within a split
    assert {split_bucket(p) for p in test} == {"test"}


def test_the_worked_solution_is_right_step_by_step_and_ends_at_the_answer():
    for example in generate("chain_sum", "val", 300):
        lines = example.meta["reasoning"].split("\n")
        assert len(lines) == example.meta["steps"] and 3 <= len(lines) <= 5
        value = example.meta["start"]
        assert example.problem.startswith(f"Start at {value} and apply the steps in order: ")
        for line, op in zip(lines, example.meta["operations"], strict=True):
            label, restated, before, sign, operand, after = LINE.fullmatch(line).groups()
            assert op == f"{label}) {restated}" == f"{label}) {sign}{operand}"  # the line restates its step
            assert f" {op} " in example.problem or f" {op}." in example.problem  # the prompt's step of that label
            assert int(before) == value  # each line starts from the value the line before wrote
            value = value + int(operand) if sign == "+" else value - int(operand)
            assert int(after) == value and 0 <= value <= 9
        assert example.answer == str(value)
    answers = {e.answer for e in generate("chain_sum", "test", 300)}
    assert set(answers) == set("0123456789")


def test_the_verifier_grades_gold_right_and_a_broken_chain_wrong():
    examples = generate("chain_sum", "test", 100)
    golds = [e.answer for e in examples]
    scores = compute_rewards([_gold(e) for e in examples], golds)
    assert scores.accuracy == [1.0] * 100 and scores.format == [1.0] * 100
    # one wrong step changes the last value: the same response with the answer of the next item is wrong
    wrong = [_gold(e).replace(f"\\boxed{{{e.answer}}}", f"\\boxed{{{int(e.answer) + 1}}}") for e in examples]
    assert compute_rewards(wrong, golds).accuracy == [0.0] * 100
    assert "<think>\na) " in _gold(examples[0]) and "unused filler" not in _gold(examples[0])


def test_responses_are_long_and_of_varied_length_in_toy_tokens(tmp_path):
    tokenizer_dir = train_toy_tokenizer(tmp_path / "tok", tasks=["chain_sum"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    examples = generate("chain_sum", "test", 300)
    # the response as the policy writes it: the target, then <|im_end|>
    lengths = [len(tokenizer(_gold(e))["input_ids"]) + 1 for e in examples]
    assert statistics.fmean(lengths) >= 40
    assert min(lengths) >= 45 and max(lengths) <= 69  # 3 steps .. 5 steps (the configs allow 96 new tokens)
    assert statistics.pstdev(lengths) > 8
    # digits, labels and signs are single tokens: a wrong digit is one token of the response
    assert tokenizer.tokenize("12+9=21") == ["1", "2", "+", "9", "=", "2", "1"]


def test_toy_model_of_a_text_task_is_a_qwen2_with_the_chat_template(tmp_path):
    out = make_toy_model(tmp_path / "toy", task="chain_sum", hidden=64, heads=2, intermediate=128)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["vocab_size"] % 64 == 0
    assert json.loads((out / "toy_model.json").read_text())["kind"] == "qwen2"
    from mm_gmpo.models import load_processor

    processor = load_processor(out)
    prompts, stats = build_prompts(
        generate("chain_sum", "test", 20), processor, template="geo3k", max_prompt_length=256,
        min_pixels=3136, max_pixels=12544,
    )  # fmt: skip
    assert stats.prompts == 20 and max(stats.prompt_tokens) < 130
    assert prompts[0].text.endswith("<|im_start|>assistant\n") and "Start at" in prompts[0].text
    with pytest.raises(UserError, match="mix text and image"):
        make_toy_model(tmp_path / "mixed", task=["chain_sum", "count_points"])


def test_registry_describes_every_text_task():
    assert all(task.description for task in TEXT_TASKS.values())
