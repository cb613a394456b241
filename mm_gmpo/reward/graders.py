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


# what each grader imports beyond the base install (declared dependencies, checked up front so that a broken
# environment stops the run at start instead of grading every response "error", 0)
_NEEDS = {"official": ("math_verify", "pylatexenc"), "easyr1": ("pylatexenc",)}


def check_grader(extraction: str) -> None:
    """Raise MissingDependency (naming ``reward.extraction``) when the grader's modules are not importable."""
    from mm_gmpo.errors import require

    grader_path(extraction)  # an unknown name is a ValueError
    for module in _NEEDS.get(extraction, ()):
        require(module, f"reward.extraction={extraction}", "pip install math-verify pylatexenc")


def extracted_answer(extraction: str, response: str) -> str | None:
    """The answer the grader ``extraction`` would take from ``response`` (shown for an item that timed out)."""
    if extraction == "official":
        from mm_gmpo.reward.official import last_boxed_answer

        return last_boxed_answer(response)
    if extraction == "easyr1":
        from mm_gmpo.reward.easyr1 import easyr1_clean, mathruler_boxed

        return mathruler_boxed(easyr1_clean(response))
    from mm_gmpo.reward.extract import extract_answer

    return extract_answer(response).answer


def load_grader(extraction: str):
    """The grader function named ``extraction`` (in-process grading: unbounded in time)."""
    module, _, name = grader_path(extraction).partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["EXTRACTIONS", "GRADERS", "check_grader", "extracted_answer", "grader_path", "load_grader"]
