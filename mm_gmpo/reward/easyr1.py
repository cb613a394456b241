"""EasyR1's Geometry3K reward (``examples/reward_function/math.py``, Apache-2.0), as our own code: the response is
first cleaned of spaces around ``<``, ``>`` and ``/``; format = the whole response matches
``<think>.*</think>.*\\boxed{.*}.*`` (dots match newlines); accuracy = mathruler's ``grade_answer`` of the last
``\\boxed{`` content (PRM800K's MATH normalisation, then its sympy grader). The total, 0.9 x accuracy + 0.1 x format,
is :func:`mm_gmpo.reward.rewards.compute_rewards`' with ``reward.format: easyr1`` and ``reward.extraction: easyr1``.
"""

from __future__ import annotations

import re

from mm_gmpo.reward.grading import Grade
from mm_gmpo.reward.official import gold_list, sympy_equal
from mm_gmpo.reward.official_normalize import mathd_normalize

_SPACES_RE = re.compile(r"\s*(<|>|/)\s*")  # EasyR1: "handle qwen2.5vl-32b format"
_FORMAT_RE = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
_OPEN = "\\boxed{"


def easyr1_clean(response: str) -> str:
    """The response as EasyR1 scores it: whitespace around ``<``, ``>`` and ``/`` removed."""
    return _SPACES_RE.sub(r"\1", response)


def easyr1_format(response: str) -> float:
    """1.0 when the cleaned response is, in full, ``<think>...</think>...\\boxed{...}...``, else 0.0."""
    return 1.0 if _FORMAT_RE.fullmatch(easyr1_clean(response)) else 0.0


def mathruler_boxed(text: str) -> str | None:
    """Content (stripped) of the last ``\\boxed{`` up to its closing brace; None when none closes (mathruler
    returns the string "None" there, which no gold of ours equals)."""
    start = text.rfind(_OPEN)
    if start < 0:
        return None
    depth = 0
    body = text[start + len(_OPEN) :]
    for i, char in enumerate(body):
        depth += (char == "{") - (char == "}")
        if depth == -1:
            return body[:i].strip()
    return None


def mathruler_equal(given: str, gold: str) -> bool:
    """mathruler's ``grade_answer``: PRM800K's MATH normalisation equal, else its sympy grader."""
    if mathd_normalize(given, extended=False) == mathd_normalize(gold, extended=False):
        return True
    return sympy_equal(given, gold)


def easyr1_grade(response: str, gold, *, choices: list[str] | None = None) -> Grade:
    """EasyR1's accuracy as a :class:`Grade` (``method``: mathruler | none = no box; a list gold: any item).
    ``choices`` is ignored: EasyR1 grades the boxed text against the gold text."""
    del choices
    answer = mathruler_boxed(easyr1_clean("" if response is None else str(response)))
    if answer is None:
        return Grade(False, None, "none", "no closed \\boxed{ in the response", "none")
    ok = any(mathruler_equal(answer, item) for item in gold_list(gold))
    return Grade(ok, answer, "mathruler", "", "boxed")


__all__ = ["easyr1_clean", "easyr1_format", "easyr1_grade", "mathruler_boxed", "mathruler_equal"]
