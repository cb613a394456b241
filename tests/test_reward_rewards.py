"""Training rewards (format, weighted total, truncation) and the ``mm-gmpo verify`` subcommand."""

from __future__ import annotations

import argparse
import json

import pytest

from mm_gmpo.errors import UserError
from mm_gmpo.reward import RewardScores, compute_rewards, format_reward
from mm_gmpo.reward import cli as verify_cli

GOOD = "<think>2 + 2 = 4</think> The answer is \\boxed{4}."


@pytest.mark.parametrize(
    ("response", "kind", "expected"),
    [
        (GOOD, "think_boxed", 1.0),
        ("2 + 2 = 4</think> so \\boxed{4}", "think_boxed", 1.0),  # <think> opened by the prompt
        ("<think>2 + 2 = 4</think> The answer is 4.", "think_boxed", 0.0),  # no box
        ("\\boxed{4} <think>late</think>", "think_boxed", 0.0),  # box before the reasoning
        ("<think>a</think><think>b</think> \\boxed{4}", "think_boxed", 0.0),
        ("<think></think> \\boxed{4}", "think_boxed", 0.0),  # empty reasoning
        ("<think>x</think> \\boxed{4", "think_boxed", 0.0),  # unclosed box
        ("so \\boxed{4}", "boxed", 1.0),
        ("so 4", "boxed", 0.0),
        ("<think>x</think><answer>4</answer>", "answer_tag", 1.0),
        ("<answer> </answer>", "answer_tag", 0.0),
        (GOOD, "none", 0.0),
    ],
)
def test_format_reward(response, kind, expected):
    assert format_reward(response, kind) == expected


def test_format_reward_rejects_unknown_kind():
    with pytest.raises(ValueError, match="think_boxed"):
        format_reward(GOOD, "xml")


def test_compute_rewards_weights_and_truncation():
    responses = [GOOD, "<think>x</think> \\boxed{5}", "\\boxed{4}", GOOD]
    scores = compute_rewards(responses, ["4", "4", "4", "4"], truncated=[False, False, False, True])
    assert isinstance(scores, RewardScores)
    assert scores.accuracy == [1.0, 0.0, 1.0, 0.0]
    assert scores.format == [1.0, 1.0, 0.0, 0.0]
    assert scores.total == pytest.approx([1.0, 0.1, 0.9, 0.0])
    assert scores.extracted == ["4", "5", "4", "4"]
    assert (scores.timeouts, scores.errors) == (0, 0)


def test_compute_rewards_configurable():
    scores = compute_rewards(
        [GOOD, GOOD],
        ["4", "4"],
        truncated=[False, True],
        accuracy_weight=0.5,
        format_weight=0.5,
        format_kind="boxed",
        zero_truncated=False,
    )
    assert scores.total == pytest.approx([1.0, 1.0])


def test_compute_rewards_choices_per_row():
    scores = compute_rewards(["\\boxed{C}", "\\boxed{C}"], ["15", "6"], choices=[["5", "14", "15", "35"], None])
    assert scores.accuracy == [1.0, 0.0]


def test_compute_rewards_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        compute_rewards(["1"], ["1", "2"])


# ------------------------------------------------------------------------------------------------ CLI
def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    verify_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_single_pair(capsys):
    assert verify_cli.run(_args(["\\boxed{2\\sqrt{3}}", "\\sqrt{12}"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("correct") and "2\\\\sqrt{3}" in out
    assert verify_cli.run(_args(["\\boxed{3}", "4"])) == 1
    assert capsys.readouterr().out.startswith("incorrect")


def test_cli_file(tmp_path, capsys):
    rows = [
        {"pred": "\\boxed{60^\\circ}", "answer": "60", "label": True},
        {"pred": "C", "answer": "15", "opts": ["5", "14", "15", "35"], "label": True},
        {"pred": "\\boxed{0.33}", "answer": "\\frac{1}{3}", "label": True},  # the verifier says no: 2/3 agree
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["--input", str(src), "--output", str(out), "--response-key", "pred", "--gold-key", "answer"]
    code = verify_cli.run(_args(argv + ["--choices-key", "opts", "--workers", "1"]))
    assert code == 0
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["correct"] for v in verdicts] == [True, True, False]
    assert [v["line"] for v in verdicts] == [1, 2, 3]
    printed = capsys.readouterr().out
    assert "rows 3" in printed and "accuracy against 'label': 2/3" in printed and "timeouts 0" in printed


def test_cli_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        verify_cli.run(_args(["--input", str(tmp_path / "missing.jsonl")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "1", "gold": "1"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl line 2 is not valid JSON"):
        verify_cli.run(_args(["--input", str(bad)]))
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"response": "1"}\n')
    with pytest.raises(UserError, match="line 1 has no key 'gold'"):
        verify_cli.run(_args(["--input", str(nokey)]))
    with pytest.raises(UserError, match="RESPONSE and GOLD"):
        verify_cli.run(_args(["1"]))


def test_the_answer_is_read_after_the_reasoning():
    # Qwen3 thinking: a box inside <think> is a draft, the answer follows </think>
    qwen3 = "<think>\nMaybe \\boxed{3}? No: 2 + 2 = 4.\n</think>\n\nThe sum is \\boxed{4}."
    scores = compute_rewards([qwen3, qwen3.replace("\\boxed{4}", "4, I think")], ["4", "3"])
    assert scores.extracted == ["4", "4"] and scores.accuracy == [1.0, 0.0]
    # nothing after the reasoning answers nothing, however many boxes the reasoning holds
    assert compute_rewards(["<think>\\boxed{3}</think>\n"], ["3"]).accuracy == [0.0]
    assert compute_rewards(["no reasoning block: \\boxed{3}"], ["3"]).accuracy == [1.0]
