"""The answer verifier and the training rewards (plain functions: no model or tokenizer inside).

``verify``/``grade`` grade in-process; ``VerifierPool`` grades batches in worker processes with a hard
per-item time and memory bound; ``compute_rewards`` turns a batch of responses into accuracy, format and
weighted total rewards, or the total of a user's own function (``reward.function``: ``load_reward_function``).
``official_correct``/``official_grade`` grade as the official GMPO code does (``reward.extraction: official``).
The grading policy is in docs/verifier.md.
"""

from mm_gmpo.reward.custom import CustomScore, load_reward_function
from mm_gmpo.reward.grading import Grade, grade, verify
from mm_gmpo.reward.official import official_correct, official_grade
from mm_gmpo.reward.pool import VerifierPool
from mm_gmpo.reward.rewards import RewardScores, compute_rewards, format_reward

__all__ = [
    "CustomScore",
    "Grade",
    "load_reward_function",
    "RewardScores",
    "VerifierPool",
    "compute_rewards",
    "format_reward",
    "grade",
    "official_correct",
    "official_grade",
    "verify",
]
