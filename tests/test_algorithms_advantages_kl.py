"""Group advantages, the k3 KL penalty, masked aggregation and the loss registry."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from mm_gmpo.algorithms import (
    POLICY_LOSSES,
    LossName,
    add_kl_penalty,
    get_policy_loss,
    gmpo_loss,
    group_advantages,
    kl_penalty,
    masked_mean,
    masked_quantile,
    masked_sum,
    masked_var,
)
from mm_gmpo.errors import UserError


def test_group_advantages_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 0.0])
    advantages = group_advantages(rewards, 4)
    unit = 0.5 / (math.sqrt(1 / 3) + 1e-6)  # group 1: mean 0.5, sample std sqrt(4 * 0.25 / 3)
    third = 0.75 / (0.5 + 1e-6)  # group 3: mean 0.25, sample std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    expected = [unit, -unit, -unit, unit, 0, 0, 0, 0, third, -0.25 / 0.5, -0.25 / 0.5, -0.25 / 0.5]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)
    assert advantages.dtype == torch.float32


def test_group_advantages_without_std_is_dr_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.9, 0.0])
    advantages = group_advantages(rewards, 3, normalize_std=False)
    expected = torch.tensor([2 / 3, -1 / 3, -1 / 3, 1 - 1.9 / 3, 0.9 - 1.9 / 3, -1.9 / 3])
    torch.testing.assert_close(advantages, expected)


def test_equal_rewards_give_exact_zeros():
    rewards = torch.tensor([0.1] * 3 + [0.7] * 3 + [1.0, 1.0, 0.0], dtype=torch.float64)
    for normalize_std in (True, False):
        advantages = group_advantages(rewards, 3, normalize_std=normalize_std)
        assert torch.all(advantages[:6] == 0.0)
        assert torch.all(advantages[6:] != 0.0)
    assert torch.all(group_advantages(torch.tensor([3, 1, 2]), 1) == 0)  # int rewards, groups of one
    assert group_advantages(torch.tensor([3, 1, 2]), 1).dtype == torch.float32


def test_group_advantages_bad_input_raises_user_error_naming_numbers():
    with pytest.raises(ValueError, match=r"10.*group_size=4") as info:
        group_advantages(torch.zeros(10), 4)
    assert isinstance(info.value, UserError) and "4" in str(info.value) and "10" in str(info.value)
    with pytest.raises(UserError, match="group_size"):
        group_advantages(torch.zeros(4), 0)
    with pytest.raises(UserError, match="one-dimensional"):
        group_advantages(torch.zeros(2, 4), 4)
    with pytest.raises(UserError, match=r"rows \[1\]"):
        group_advantages(torch.tensor([0.0, float("nan")]), 2)


def test_kl_penalty_k3_hand_values_and_mask():
    logprobs = torch.log(torch.tensor([[0.5, 0.5, 0.2], [0.1, 0.9, 0.3]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.4], [0.1, 0.3, 0.3]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = kl_penalty(logprobs, ref, mask)
    # k3 = q/p - log(q/p) - 1 with q/p = ref/policy probability.
    k3 = [[0.5 - math.log(0.5) - 1, 0.0, 2.0 - math.log(2.0) - 1], [0.0, 1 / 3 + math.log(3.0) - 1, 0.0]]
    torch.testing.assert_close(kl, torch.tensor(k3))
    far = kl_penalty(torch.tensor([[-60.0, 0.0]]), torch.tensor([[0.0, -60.0]]), torch.ones(1, 2))
    torch.testing.assert_close(far, torch.tensor([[math.exp(10) - 11, math.exp(-10) + 9]]))


def test_add_kl_penalty_value_gradient_and_micro_batches():
    torch.manual_seed(0)
    old = -torch.rand(4, 5, dtype=torch.float64) * 3
    ref = old + torch.randn(4, 5, dtype=torch.float64) * 0.3
    mask = torch.rand(4, 5) < 0.7
    mask[1] = False
    adv = torch.tensor([1.0, -1.0, 0.5, -0.2], dtype=torch.float64)
    lp_whole = old.clone().requires_grad_(True)
    loss, _ = gmpo_loss(lp_whole, old, adv, mask)
    total, metrics = add_kl_penalty(loss, lp_whole, ref, mask, kl_coef=0.1)
    per_sequence = [
        sum(math.exp(r - p) - (r - p) - 1 for r, p, m in zip(rr, pp, mm, strict=True) if m) / max(int(mm.sum()), 1)
        for rr, pp, mm in zip(ref.tolist(), old.tolist(), mask, strict=True)
    ]
    assert total.item() == pytest.approx(loss.item() + 0.1 * sum(per_sequence) / 4)
    assert metrics["kl_ref"] == pytest.approx(sum(per_sequence) / 4)
    total.backward()
    lp_split = old.clone().requires_grad_(True)
    parts = []
    for rows in (slice(0, 1), slice(1, 4)):
        part, _ = gmpo_loss(lp_split[rows], old[rows], adv[rows], mask[rows], denominator=4)
        parts.append(add_kl_penalty(part, lp_split[rows], ref[rows], mask[rows], 0.1, denominator=4)[0])
    sum(parts).backward()
    torch.testing.assert_close(sum(parts), total)
    torch.testing.assert_close(lp_split.grad, lp_whole.grad)
    unchanged, _ = add_kl_penalty(loss, lp_whole, ref, mask, kl_coef=0.0)
    assert unchanged is loss


def test_masked_aggregation_empty_gives_zero():
    values = torch.tensor([[1.0, 2.0, float("nan")], [float("inf"), 5.0, 6.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    row_means = masked_mean(values, mask, dim=-1)
    torch.testing.assert_close(row_means, torch.tensor([1.5, 0.0]))
    assert masked_mean(values, mask).item() == 1.5 and masked_sum(values, mask).item() == 3.0
    row_means.sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert masked_mean(values, empty).item() == 0.0 and masked_var(values, empty).item() == 0.0
    assert masked_quantile(values, empty, 0.99) == 0.0
    assert masked_var(values.detach(), mask).item() == pytest.approx(0.25)
    assert masked_quantile(torch.arange(101.0), torch.ones(101), 0.99) == pytest.approx(99.0)


def test_registry_names_signature_and_errors():
    assert {str(name) for name in LossName} == {
        "gmpo",
        "gmpo_noclip",
        "gmpo_seqclip",
        "gmpo_nonorm",
        "hmpo",
        "grpo",
        "gspo",
        "drgrpo",
    }
    assert set(POLICY_LOSSES) == set(LossName) and LossName.GMPO == "gmpo"
    expected_params = ["logprobs", "old_logprobs", "advantages", "response_mask", "clip_low", "clip_high"]
    for name, fn in POLICY_LOSSES.items():
        params = inspect.signature(fn).parameters
        positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in positional] == [*expected_params, "denominator"], name
        assert params["denominator"].default is None
        assert get_policy_loss(str(name)) is fn
    assert inspect.signature(POLICY_LOSSES["gmpo"]).parameters["clip_low"].default == 0.4
    assert inspect.signature(POLICY_LOSSES["grpo"]).parameters["clip_high"].default == 0.2
    with pytest.raises(UserError, match="did you mean 'gmpo'"):
        get_policy_loss("gmpoo")
    with pytest.raises(UserError, match="algorithm.loss"):
        get_policy_loss("ppo")
    with pytest.raises(UserError, match="max_response_length"):
        get_policy_loss("gmpo", max_response_length=3)
