"""Which grader decides accuracy (``reward.extraction``): one name per grading policy, one place that maps it.

lenient: our verifier (:mod:`mm_gmpo.reward.grading`: a box, an answer tag, "the answer is X", a last number; the
policy in docs/verifier.md). official: understand-r1-zero's ``boxed_reward_fn`` as GMPO's code runs it (last
``\\boxed{}`` only, :mod:`mm_gmpo.reward.official`). easyr1: EasyR1's Geometry3K accuracy (mathruler's grader of the
last ``\\boxed{``, :mod:`mm_gmpo.reward.easyr1`). Each is ``grade(response, gold, *, choices=None) -> Grade``.
"""

from __future__ import annotations

import importlib

GRADERS = {
    "lenient": "mm_gmpo.reward.grading:grade",
    "official": "mm_gmpo.reward.official:official_grade",
    "easyr1": "mm_gmpo.reward.easyr1:easyr1_grade",
}
EXTRACTIONS = tuple(GRADERS)


def grader_path(extraction: str) -> str:
    """``module:function`` of the grader named ``extraction`` (what the pool's workers import)."""
    if extraction not in GRADERS:
        raise ValueError(f"extraction {extraction!r} is not one of {', '.join(EXTRACTIONS)}")
    return GRADERS[extraction]


def load_grader(extraction: str):
    """The grader function named ``extraction`` (in-process grading: unbounded in time)."""
    module, _, name = grader_path(extraction).partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["EXTRACTIONS", "GRADERS", "grader_path", "load_grader"]
