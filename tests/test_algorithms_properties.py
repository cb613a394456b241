"""Property tests (hypothesis, bounded): every registered loss is finite and invariant to padding columns."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_gmpo.algorithms import POLICY_LOSSES, group_advantages

LOSS_NAMES = sorted(POLICY_LOSSES)


@st.composite
def batches(draw):
    """(logprobs, old_logprobs, advantages, mask) in float64 with log-ratios up to +-scale, any mask density."""
    b = draw(st.integers(1, 5))
    t = draw(st.integers(1, 12))
    scale = draw(st.sampled_from([0.0, 0.05, 0.5, 3.0, 50.0]))
    density = draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 5
    logprobs = old + (torch.rand(b, t, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    mask = torch.rand(b, t, generator=gen) < density
    adv_values = draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, -0.3, 1e-3]), min_size=b, max_size=b))
    return logprobs, old, torch.tensor(adv_values, dtype=torch.float64), mask


def run(loss_fn, logprobs, old, adv, mask, **kwargs):
    leaf = logprobs.clone().requires_grad_(True)
    loss, metrics = loss_fn(leaf, old, adv, mask, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad, metrics


@settings(max_examples=40, deadline=None, derandomize=True)
@given(batch=batches(), name=st.sampled_from(LOSS_NAMES))
def test_losses_finite_with_finite_gradients_and_metrics(batch, name):
    logprobs, old, adv, mask = batch
    loss, grad, metrics = run(POLICY_LOSSES[name], logprobs, old, adv, mask)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert all(math.isfinite(v) for v in metrics.values())
    assert torch.all(grad[~mask] == 0)  # only response tokens get gradient
    zero_adv = adv == 0
    assert torch.all(grad[zero_adv] == 0)  # A = 0 sequences contribute nothing
    assert 0.0 <= metrics["clip_frac"] <= 1.0
    assert metrics["approx_kl"] >= 0.0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    batch=batches(),
    name=st.sampled_from(LOSS_NAMES),
    extra=st.integers(1, 6),
    fill=st.sampled_from([0.0, -1e4, 37.0, float("-inf"), float("nan")]),
)
def test_losses_invariant_to_padding_columns(batch, name, extra, fill):
    logprobs, old, adv, mask = batch
    loss_fn = POLICY_LOSSES[name]
    loss, grad, metrics = run(loss_fn, logprobs, old, adv, mask)
    b = logprobs.shape[0]
    pad_values = torch.full((b, extra), fill, dtype=logprobs.dtype)
    padded = run(
        loss_fn,
        torch.cat([logprobs, pad_values], dim=1),
        torch.cat([old, -pad_values], dim=1),
        adv,
        torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], dim=1),
    )
    torch.testing.assert_close(padded[0], loss)
    torch.testing.assert_close(padded[1][:, : logprobs.shape[1]], grad)
    assert torch.all(padded[1][:, logprobs.shape[1] :] == 0)
    assert padded[2] == pytest.approx(metrics)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    groups=st.integers(1, 6),
    group_size=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    normalize_std=st.booleans(),
)
def test_group_advantages_match_a_per_group_reference(groups, group_size, seed, normalize_std):
    gen = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(groups * group_size, generator=gen) < 0.5).double() * 0.9
    rewards += (torch.rand(groups * group_size, generator=gen) < 0.5).double() * 0.1
    advantages = group_advantages(rewards, group_size, normalize_std=normalize_std)
    for g in range(groups):
        chunk = rewards[g * group_size : (g + 1) * group_size].tolist()
        mean = sum(chunk) / group_size
        std = math.sqrt(sum((r - mean) ** 2 for r in chunk) / (group_size - 1)) if group_size > 1 else 0.0
        for j, r in enumerate(chunk):
            expected = 0.0 if max(chunk) == min(chunk) else (r - mean) / ((std + 1e-6) if normalize_std else 1.0)
            assert advantages[g * group_size + j].item() == pytest.approx(expected, abs=1e-12)
        assert abs(sum(advantages[g * group_size : (g + 1) * group_size].tolist())) < 1e-9
