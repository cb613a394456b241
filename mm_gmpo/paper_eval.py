"""The paper's evaluation protocol (callsys/GMPO's, from understand-r1-zero's ``evaluate_model.py``) and its
grading, for ``mm-gmpo eval`` on the ``official:<set>`` specs (``--data paper-math``).

Protocol: the Qwen-Math prompt (system "Please reason step by step, and put your final answer within
\\boxed{}.", the problem as the user turn, the assistant turn opened), greedy, one sample, at most 3000 new tokens
and 4096 tokens of prompt plus response (vLLM's ``max_model_len``). Grading: the official ``boxed_reward_fn``
(``mm_gmpo.reward.official.official_correct``): the last ``\\boxed{}`` of the response against the gold, or
against each gold of a list (correct if any matches).

Golds travel to the verifier's worker processes as text, so a list is sent JSON-encoded (:func:`encode_golds`)
and :func:`grade_official`, the function the workers run, decodes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mm_gmpo.data.rows import last_boxed
from mm_gmpo.reward.grading import Grade
from mm_gmpo.types import Example

OFFICIAL_TEMPLATE = "qwen_math"
OFFICIAL_TEMPERATURE = 0.0
OFFICIAL_N = 1
OFFICIAL_MAX_NEW_TOKENS = 3000
OFFICIAL_MAX_MODEL_LEN = 4096  # prompt + response
OFFICIAL_GRADER = "mm_gmpo.paper_eval:grade_official"  # "module:function" for VerifierPool's workers
# seconds per graded response: the official grader bounds each of its sympy calls to 1 s itself and a list gold
# is graded once per item, so the pool's bound (a backstop against a hung worker) is wider than one call
OFFICIAL_GRADE_TIMEOUT = 10.0


def golds_of(example: Example) -> list[str]:
    """The golds the official grader compares with: ``meta["golds"]`` of an official-suite row, else the answer."""
    return list(example.meta.get("golds") or [example.answer])


def encode_golds(example: Example) -> str:
    """The example's golds as the text sent to :func:`grade_official` (a JSON list of strings)."""
    return json.dumps(golds_of(example))


def decode_golds(gold: str) -> list[str]:
    """Inverse of :func:`encode_golds`; a text that is not a JSON list of strings is one gold as it is."""
    try:
        value = json.loads(gold)
    except ValueError:
        return [gold]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return [gold]


def grade_official(response: str, gold: str, *, choices: Sequence[str] | None = None) -> Grade:
    """One verdict of the official grader, in :class:`~mm_gmpo.reward.grading.Grade` form (``method="official"``);
    ``gold`` is :func:`encode_golds`'s text. ``choices`` is ignored (the official suite has none)."""
    from mm_gmpo.reward.official import official_correct

    golds = decode_golds(gold)
    extracted = last_boxed(response or "")
    try:
        correct = bool(official_correct(response or "", golds if len(golds) > 1 else golds[0]))
    except Exception as exc:  # noqa: BLE001 (a grading failure costs one verdict, as in the official code)
        return Grade(False, extracted, "error", f"{type(exc).__name__}: {str(exc)[:200]}", "boxed")
    return Grade(correct, extracted, "official", "", "boxed" if extracted is not None else "none")
