"""Rollouts: batched image+text sampling (HF generate or a colocated vLLM engine) and the sampler/trainer log-prob comparison."""

from mm_gmpo.rollout.batching import suppressed_token_ids, teacher_forced_batch
from mm_gmpo.rollout.engine import RolloutEngine, rollout_metrics
from mm_gmpo.rollout.preflight import (
    LogprobParityError,
    ParityReport,
    assert_parity,
    default_tolerances,
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
    "default_tolerances",
    "parity_report",
    "rollout_metrics",
    "suppressed_token_ids",
    "teacher_forced_batch",
]
