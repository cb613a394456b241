"""EasyR1's Geometry3K reward: the format (full match of <think>.*</think>.*\\boxed{.*}.*) and the accuracy
(mathruler's grader of the last \\boxed{), and their 0.9/0.1 total through compute_rewards."""

from __future__ import annotations

import pytest

from mm_gmpo.reward.easyr1 import easyr1_clean, easyr1_format, easyr1_grade, mathruler_boxed
from mm_gmpo.reward.rewards import compute_rewards, format_reward


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("<think>r</think> so \\boxed{5}.", 1.0),
        ("<think>line 1\nline 2</think>\n\\boxed{5}\n", 1.0),  # dots match newlines
        ("< think >r</ think > \\boxed{5}", 1.0),  # spaces around <, >, / are removed first
        ("<think>r</think> 5", 0.0),  # no box
        ("x <think>r</think> \\boxed{5}", 0.0),  # a full match: nothing before <think>
        ("<think>r \\boxed{5}", 0.0),  # the think block never closes
        ("<think>r</think> \\boxed 5", 0.0),  # not written \boxed{
        ("\\boxed{5} <think>r</think>", 0.0),  # the box must come after the think block
    ],
)
def test_easyr1_format(response, score):
    assert easyr1_format(response) == score
    assert format_reward(response, "easyr1") == score


def test_clean():
    assert easyr1_clean("a < b / c >\n d") == "a<b/c>d"


@pytest.mark.parametrize(
    ("text", "content"),
    [("\\boxed{ 5 }", "5"), ("\\boxed{1} \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), ("\\boxed{5", None), ("5", None)],
)
def test_mathruler_boxed(text, content):
    assert mathruler_boxed(text) == content


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("\\boxed{5}", "5", True),
        ("\\boxed{1 / 2}", "\\frac{1}{2}", True),  # cleaned to 1/2, which MATH's normalisation writes \frac{1}{2}
        ("\\boxed{50%}", "50", True),  # PRM800K's normalisation drops a bare %
        ("\\boxed{2\\sqrt{3}}", "2 \\sqrt{3}", True),
        ("\\boxed{C}", "12", False),  # EasyR1 grades the text: a letter is not its option's text
        ("the answer is 5", "5", False),
        ("\\boxed{6}", ["5", "6"], True),
    ],
)
def test_easyr1_accuracy(response, gold, correct):
    assert easyr1_grade(response, gold).correct is correct


def test_easyr1_total_is_weighted_accuracy_and_format():
    responses = ["<think>r</think> \\boxed{5}", "\\boxed{5}", "<think>r</think> \\boxed{4}", "<think>r</think> 5"]
    scores = compute_rewards(
        responses, ["5"] * 4, accuracy_weight=0.9, format_weight=0.1, format_kind="easyr1", extraction="easyr1"
    )
    assert scores.accuracy == [1.0, 1.0, 0.0, 0.0]
    assert scores.format == [1.0, 0.0, 1.0, 0.0]
    assert scores.total == pytest.approx([1.0, 0.9, 0.1, 0.0])
