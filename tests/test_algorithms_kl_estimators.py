"""algorithm.kl_estimator: k1, k2, k3 and EasyR1's low_var_kl against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.algorithms import add_kl_penalty, kl_penalty, sequence_kl

# d = log pi_ref - log pi_theta per token: -1, 1, 27, -30, and a masked position holding garbage
LOGPROBS = torch.tensor([[0.0, -1.0, -2.0, -1.0, float("nan")]], dtype=torch.float64)
REF = torch.tensor([[-1.0, 0.0, 25.0, -31.0, 3.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
E = math.e
HAND = {
    "k1": [1.0, -1.0, -27.0, 30.0, 0.0],  # -d
    "k2": [0.5, 0.5, 364.5, 450.0, 0.0],  # d^2 / 2
    # exp(d) - d - 1 with d clamped to [-10, 10]
    "k3": [1 / E, E - 2, E**10 - 11, E**-10 + 9, 0.0],
    # EasyR1: d clamped to [-20, 20], then the estimate capped at 10
    "low_var_kl": [1 / E, E - 2, 10.0, 10.0, 0.0],
}


@pytest.mark.parametrize("estimator", sorted(HAND))
def test_each_estimator_against_hand_values(estimator):
    values = kl_penalty(LOGPROBS, REF, MASK, estimator)
    torch.testing.assert_close(values, torch.tensor([HAND[estimator]], dtype=torch.float64))
    torch.testing.assert_close(sequence_kl(LOGPROBS, REF, MASK, estimator), torch.tensor([sum(HAND[estimator])], dtype=torch.float64))  # fmt: skip
    loss, metrics = add_kl_penalty(torch.zeros((), dtype=torch.float64), LOGPROBS, REF, MASK, 0.5, estimator=estimator)
    assert metrics["kl_ref"] == pytest.approx(sum(HAND[estimator]) / 4)
    assert float(loss) == pytest.approx(0.5 * sum(HAND[estimator]) / 4)


def test_estimator_gradients_by_hand():
    """d/dlogp: k1 1, k2 -d, k3 1 - exp(d) inside the clamp, low_var_kl 0 where its cap acts."""
    logprobs = torch.tensor([[0.0, -1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, 0.0, 25.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    expected = {
        "k1": [1.0, 1.0, 1.0],
        "k2": [1.0, -1.0, -27.0],
        "k3": [1 - 1 / E, 1 - E, 0.0],  # d = 27 is clamped: constant
        "low_var_kl": [1 - 1 / E, 1 - E, 0.0],  # capped at 10: constant
    }
    for estimator, grad in expected.items():
        (got,) = torch.autograd.grad(kl_penalty(logprobs, ref, mask, estimator).sum(), logprobs)
        torch.testing.assert_close(got, torch.tensor([grad], dtype=torch.float64), msg=estimator)
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_penalty(logprobs, ref, mask, "k4")
