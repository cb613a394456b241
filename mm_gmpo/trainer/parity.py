"""The trainer's log-probs against the sampler's on one batch: the preflight check that tests and the vLLM check
run on small batches (the trainer itself compares in its micro-batches, :meth:`mm_gmpo.trainer.actor.Actor.preflight`)."""

from __future__ import annotations

import math

import torch

from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.preflight import ParityReport, assert_parity, default_tolerances, parity_report
from mm_gmpo.rollout.types import RolloutBatch
from mm_gmpo.trainer.forward import policy_logprobs


def measure_logprob_parity(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    tolerance: float | None = None,
    mean_tolerance: float | None = None,
    p99_tolerance: float | None = None,
    tokenizer=None,
    top: int = 5,
    chunk_size: int = 512,
) -> ParityReport:
    """:func:`parity_report` on one no-grad forward of the whole batch (small batches: tests, the vLLM check).

    ``tolerance`` gates the maximum, and the mean and p99 unless they are given; without any, the gates are the
    defaults of the model's dtype. The trainer computes its log-probs in micro-batches and calls
    :func:`parity_report` itself.
    """
    with torch.no_grad():
        trainer, _ = policy_logprobs(model, batch, temperature=temperature, chunk_size=chunk_size)
    default_mean, default_p99 = default_tolerances(next(model.parameters()).dtype)
    fallback_mean = tolerance if tolerance is not None else default_mean
    fallback_p99 = tolerance if tolerance is not None else default_p99
    return parity_report(
        trainer,
        batch,
        temperature=temperature,
        mean_tolerance=mean_tolerance if mean_tolerance is not None else fallback_mean,
        p99_tolerance=p99_tolerance if p99_tolerance is not None else fallback_p99,
        max_tolerance=tolerance if tolerance is not None else math.inf,
        tokenizer=tokenizer,
        top=top,
    )


def check_logprob_parity(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    tolerance: float | None = None,
    processor=None,
    raise_on_failure: bool = True,
) -> ParityReport:
    """:func:`measure_logprob_parity`, raising :class:`LogprobParityError` (naming the tokens) over a gate."""
    tokenizer = tokenizer_of(processor) if processor is not None else None
    report = measure_logprob_parity(model, batch, temperature=temperature, tolerance=tolerance, tokenizer=tokenizer)
    if raise_on_failure:
        assert_parity(report)
    return report
