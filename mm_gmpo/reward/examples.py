"""Example reward functions for ``reward.function`` (docs/rewards.md); copy one to start your own.

``reward.function=mm_gmpo.reward.examples:correct_and_short`` uses it as it is.
"""

from __future__ import annotations

from mm_gmpo.reward import grade


def correct_and_short(response: str, answer: str, example: dict) -> dict[str, float]:
    """The verifier's verdict (multiple-choice letters included) plus a small bonus for short responses.

    ``total = correct + 0.1 * brevity``, where brevity falls linearly from 1 (empty) to 0 (2000 characters).
    """
    correct = float(grade(response, answer, choices=example.get("choices")).correct)
    brevity = max(0.0, 1.0 - len(response) / 2000)
    return {"total": correct + 0.1 * brevity, "correct": correct, "brevity": brevity}
