"""The preflight at scale: gated on the mean and the p99 of |trainer - sampler| log-prob, maximum reported."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mm_gmpo.models import load_processor
from mm_gmpo.rollout import LogprobParityError, assert_parity, default_tolerances, parity_report
from mm_gmpo.testing.batches import sample_train_batch


@pytest.fixture(scope="module")
def rollout(tiny_text_dir):
    rows = sample_train_batch(load_processor(tiny_text_dir), with_images=False).rollout
    return rows.select(list(range(rows.num_rows)) * 40)  # about 3,000 response tokens


def _with_sampler(rollout, sampler):
    return dataclasses.replace(rollout, sampler_logprobs=sampler * rollout.response_mask)


def test_a_few_bf16_outliers_pass_and_the_maximum_is_reported(rollout):
    mean_tol, p99_tol = default_tolerances(torch.bfloat16)
    trainer = torch.full(rollout.response_mask.shape, -1.5) * rollout.response_mask
    sampler = trainer + 0.01 * torch.sign(torch.randn(trainer.shape, generator=torch.Generator().manual_seed(0)))
    sampler[0, 0] = trainer[0, 0] - 3.0  # one token far out, as bf16 gives over ~1e5 tokens
    report = parity_report(
        trainer, _with_sampler(rollout, sampler), temperature=1.0, mean_tolerance=mean_tol, p99_tolerance=p99_tol
    )
    assert report.ok and report.max_abs_diff == pytest.approx(3.0, abs=1e-6)
    assert report.p99_abs_diff < 0.5 and report.num_tokens == int(rollout.response_mask.sum())
    assert set(report.metrics()) == {
        "rollout/logprob_diff_mean",
        "rollout/logprob_diff_p99",
        "rollout/logprob_diff_max",
        "rollout/logprob_diff_seq_mean",
    }
    assert_parity(report)  # does not raise


def test_a_systematic_gap_fails_naming_the_gates(rollout):
    mean_tol, p99_tol = default_tolerances(torch.bfloat16)
    trainer = torch.full(rollout.response_mask.shape, -1.5) * rollout.response_mask
    report = parity_report(
        trainer, _with_sampler(rollout, trainer + 0.3), temperature=1.0, mean_tolerance=mean_tol, p99_tolerance=p99_tol
    )
    assert not report.ok and report.mean_abs_diff == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(LogprobParityError, match="preflight_mean_tolerance"):
        assert_parity(report)


def test_default_gates_are_tighter_in_fp32():
    assert default_tolerances(torch.float32) < default_tolerances(torch.bfloat16)
