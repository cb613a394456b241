"""Rollouts: batched image+text sampling (HF generate or a colocated vLLM engine) and trainer-side log-probs."""

from mm_gmpo.rollout.batching import suppressed_token_ids, teacher_forced_batch
from mm_gmpo.rollout.engine import RolloutEngine, rollout_metrics
from mm_gmpo.rollout.logprobs import policy_logprobs
from mm_gmpo.rollout.preflight import (
    LogprobParityError,
    ParityReport,
    assert_parity,
    check_logprob_parity,
    default_tolerances,
    measure_logprob_parity,
    parity_report,
)
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams

__all__ = [
    "LogprobParityError",
    "ParityReport",
    "RolloutBatch",
    "RolloutEngine",
    "SamplingParams",
    "assert_parity",
    "check_logprob_parity",
    "default_tolerances",
    "measure_logprob_parity",
    "parity_report",
    "policy_logprobs",
    "rollout_metrics",
    "suppressed_token_ids",
    "teacher_forced_batch",
]
