"""Training rewards: verifier accuracy, answer format, and their weighted sum (plain functions); or a user's own
reward function (``reward.function``, :mod:`mm_gmpo.reward.custom`) as the total."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mm_gmpo.reward.custom import call_reward
from mm_gmpo.reward.easyr1 import easyr1_format
from mm_gmpo.reward.extract import find_boxes
from mm_gmpo.reward.graders import load_grader
from mm_gmpo.reward.grading import Grade

FORMAT_KINDS = ("think_boxed", "boxed", "answer_tag", "easyr1", "none")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>\s*$", re.DOTALL)


@dataclass
class RewardScores:
    """Per-response rewards of one batch (all lists have length B = number of responses)."""

    accuracy: list[float]  # [B] 1.0 when the verifier says correct (0 for a truncated response if zeroed)
    format: list[float]  # [B] 1.0 when the response has the requested format
    total: list[float]  # [B] accuracy_weight * accuracy + format_weight * format, or the reward function's total
    timeouts: int  # responses whose grading overran the time bound (scored 0)
    errors: int  # responses whose grading failed (scored 0)
    extracted: list[str | None]  # [B] the answer taken from each response
    # reward.function only: name -> [B] every named score it returned ("total" included; a name a row did not
    # return, or a failed row, counts 0), and the responses whose call raised, returned a bad value or overran
    named: dict[str, list[float]] = field(default_factory=dict)
    function_errors: int = 0
    # reward.overlong_buffer > 0 only: [B] DAPO's soft overlong penalty of each response (<= 0), already in total
    overlong: list[float] | None = None


def overlong_penalties(lengths: Sequence[int], max_length: int, buffer: int, penalty: float) -> list[float]:
    """DAPO's soft overlong punishment (arXiv 2503.14476), one value <= 0 per response of ``lengths`` tokens:
    0 up to ``max_length - buffer`` tokens, then falling linearly to ``-penalty`` at ``max_length`` (and below it
    beyond, which a sampler cut at ``max_length`` never produces): -penalty * (length - (max_length - buffer)) /
    buffer."""
    if not 0 < buffer <= max_length:
        raise ValueError(f"buffer must be in (0, {max_length}], got {buffer}")
    start = max_length - buffer
    return [-penalty * max(length - start, 0) / buffer for length in lengths]


def _think_then_box(response: str) -> bool:
    """One ``<think>...</think>`` block (its opening may sit in the prompt) followed by a closed ``\\boxed{}``."""
    if response.count(_THINK_CLOSE) != 1 or response.count(_THINK_OPEN) > 1:
        return False
    head, _, tail = response.partition(_THINK_CLOSE)
    if _THINK_OPEN in head and head.strip() and not head.lstrip().startswith(_THINK_OPEN):
        return False
    return bool(head.replace(_THINK_OPEN, "").strip()) and bool(find_boxes(tail))


def format_reward(response: str, kind: str = "think_boxed") -> float:
    """1.0 when ``response`` has the format ``kind``, else 0.0.

    think_boxed: reasoning in ``<think>...</think>``, then a ``\\boxed{}`` answer after it. boxed: a closed
    ``\\boxed{}`` anywhere. answer_tag: the response ends with ``<answer>...</answer>`` (non-empty). easyr1:
    EasyR1's, the whole response (spaces around ``<``, ``>``, ``/`` removed) matches
    ``<think>.*</think>.*\\boxed{.*}.*`` (:func:`~mm_gmpo.reward.easyr1.easyr1_format`). none: 0.0.
    """
    if kind not in FORMAT_KINDS:
        raise ValueError(f"format kind {kind!r} is not one of {', '.join(FORMAT_KINDS)}")
    response = response or ""
    if kind == "think_boxed":
        return float(_think_then_box(response))
    if kind == "boxed":
        return float(bool(find_boxes(response)))
    if kind == "easyr1":
        return easyr1_format(response)
    if kind == "answer_tag":
        match = _ANSWER_TAG_RE.search(response)
        return float(bool(match and match.group(1).strip()))
    return 0.0


def compute_rewards(
    responses: Sequence[str],
    golds: Sequence[str],
    *,
    choices: Sequence[list[str] | None] | None = None,
    truncated: Sequence[bool] | None = None,
    pool=None,
    accuracy_weight: float = 0.9,
    format_weight: float = 0.1,
    format_kind: str = "think_boxed",
    zero_truncated: bool = True,
    examples: Sequence[dict] | None = None,
    reward_function=None,
    extraction: str | None = None,
    response_lengths: Sequence[int] | None = None,
    max_length: int = 0,
    overlong_buffer: int = 0,
    overlong_penalty: float = 1.0,
) -> RewardScores:
    """Rewards of a batch. ``pool`` (a ``VerifierPool``) bounds each grading in time and memory; without it
    grading runs in this process (fine for trusted text, not for training). ``truncated[i]``: the response hit
    the length limit; with ``zero_truncated`` it scores 0 on everything.

    ``examples`` (the fields of each response's example, :func:`~mm_gmpo.reward.custom.example_fields`): the total
    is the user's reward function's instead of the weighted sum, run in the pool (built with ``reward_function``)
    or, without a pool, ``reward_function`` (a callable) in this process. Accuracy and format are still the
    verifier's, for the metrics.

    ``extraction`` (``reward.extraction``): the grader of accuracy, lenient | official | easyr1; None: the pool's
    (``VerifierPool(extraction=...)``), or lenient without a pool. A pool built for another grader is an error.

    ``overlong_buffer`` > 0 (``reward.overlong_buffer``, with ``response_lengths`` in tokens and ``max_length``,
    ``rollout.max_new_tokens``): :func:`overlong_penalties` is added to every total (the built-in reward's and a
    reward function's) and kept in ``overlong``."""
    n = len(responses)
    if (
        len(golds) != n
        or (truncated is not None and len(truncated) != n)
        or (choices is not None and len(choices) != n)
    ):
        raise ValueError("compute_rewards: responses, golds, choices and truncated must have the same length")
    if pool is not None:
        if extraction is not None and extraction != pool.extraction:
            raise ValueError(f"compute_rewards: extraction {extraction!r} but the pool grades {pool.extraction!r}")
        grades = pool.grade_batch(responses, golds, choices)
    else:
        grade = load_grader(extraction or "lenient")
        grades = [
            grade(r, g, choices=None if choices is None else choices[i])
            for i, (r, g) in enumerate(zip(responses, golds, strict=True))
        ]
    customs = None
    if examples is not None:
        if len(examples) != n:
            raise ValueError("compute_rewards: examples must have one entry per response")
        if pool is not None:
            customs = pool.score_batch(responses, golds, examples)
        else:
            customs = [
                call_reward(reward_function, r, g, e) for r, g, e in zip(responses, golds, examples, strict=True)
            ]
    accuracy, fmt, total = [], [], []
    for i, (response, result) in enumerate(zip(responses, grades, strict=True)):
        cut = bool(truncated[i]) if truncated is not None else False
        acc = 0.0 if cut and zero_truncated else float(result.correct)
        form = 0.0 if cut and zero_truncated else format_reward(response, format_kind)
        accuracy.append(acc)
        fmt.append(form)
        total.append(accuracy_weight * acc + format_weight * form)
    named: dict[str, list[float]] = {}
    if customs is not None:
        cut = [bool(truncated[i]) and zero_truncated if truncated is not None else False for i in range(n)]
        total = [0.0 if cut[i] else c.total for i, c in enumerate(customs)]
        for name in sorted({key for c in customs for key in c.named}):
            named[name] = [0.0 if cut[i] else c.named.get(name, 0.0) for i, c in enumerate(customs)]
    overlong = None
    if overlong_buffer:
        if response_lengths is None or len(response_lengths) != n:
            raise ValueError("compute_rewards: overlong_buffer needs one response length per response")
        overlong = overlong_penalties(response_lengths, max_length, overlong_buffer, overlong_penalty)
        total = [t + p for t, p in zip(total, overlong, strict=True)]
    return RewardScores(
        accuracy=accuracy,
        format=fmt,
        total=total,
        timeouts=sum(g.method == "timeout" for g in grades),
        errors=sum(g.method == "error" for g in grades),
        extracted=[g.extracted for g in grades],
        named=named,
        function_errors=0 if customs is None else sum(bool(c.error) for c in customs),
        overlong=overlong,
    )


__all__ = ["FORMAT_KINDS", "Grade", "RewardScores", "compute_rewards", "format_reward", "overlong_penalties"]
