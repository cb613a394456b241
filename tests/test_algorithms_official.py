"""The losses as the official code computes them (callsys/GMPO ``train_zero_math_*.py``, EasyR1's PPO-clip loss):
``gmpo_nonorm`` without the +-20 clamp, ``hmpo``, ``grpo`` with the wider clip, the dual clip and token-mean
aggregation; ``policy_loss_for``'s option checks; the advantage epsilon. Each against an independent
transcription of the official formula (one sequence at a time, as the official micro-batches of one row) or
against values worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.algorithms import add_kl_penalty, get_policy_loss, gmpo_nonorm_loss, group_advantages, hmpo_loss
from mm_gmpo.algorithms.registry import loss_unit, policy_loss_for
from mm_gmpo.errors import UserError


def official_gmpo_sequence(new_logps, old_logps, mask, advantage, cliprange, *, mode):
    """callsys/GMPO, one row: ``sgn_advantage = -1 if A >= 0 else 1``; clamp the signed log-ratio to
    [-cliprange, cliprange] and take the max with the unclamped one; then ``gmpo_without_norm``:
    exp(sum) (no normalisation, no clamp) or ``hmpo``: |o| / sum(1 / exp(c)). Returns -A * ratio."""
    sgn_advantage = -1 if advantage >= 0 else 1
    logprobs_diff = new_logps - old_logps
    sgn_logprobs_diff = sgn_advantage * logprobs_diff
    sgn_clamp = torch.clamp(sgn_logprobs_diff, -cliprange, cliprange)
    logprobs_diff_max = sgn_advantage * torch.max(sgn_logprobs_diff, sgn_clamp)
    if mode == "nonorm":
        ratio = torch.exp(logprobs_diff_max[mask].sum())
    else:
        ratio = mask.sum() / (1 / torch.exp(logprobs_diff_max))[mask].sum()
    return -advantage * ratio


def official_mean_loss(new, old, mask, adv, cliprange, mode):
    """The official update: one row per micro-batch, gradient accumulation over the B rows (a mean)."""
    return sum(official_gmpo_sequence(new[i], old[i], mask[i], float(adv[i]), cliprange, mode=mode) for i in range(len(adv))) / len(adv)  # fmt: skip


def random_case(seed: int, b: int = 5, t: int = 9, scale: float = 0.5):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=generator, dtype=torch.float64) * 3
    delta = torch.randn(b, t, generator=generator, dtype=torch.float64) * scale
    mask = torch.rand(b, t, generator=generator) < 0.7
    mask[:, 0] = True
    adv = torch.tensor([1.3, -0.6, 0.4, -2.1, 0.8], dtype=torch.float64)[:b]
    return old, delta, mask, adv


@pytest.mark.parametrize("mode", ["nonorm", "hmpo"])
def test_nonorm_and_hmpo_equal_the_official_transcription_in_value_and_gradient(mode):
    ours_fn = gmpo_nonorm_loss if mode == "nonorm" else hmpo_loss
    for seed in range(3):
        old, delta, mask, adv = random_case(seed)
        ours = (old + delta).requires_grad_(True)
        loss, _ = ours_fn(ours, old, adv, mask)
        loss.backward()
        theirs = (old + delta).requires_grad_(True)
        reference = official_mean_loss(theirs, old, mask, adv, 0.4, mode)
        reference.backward()
        torch.testing.assert_close(loss, reference)
        # the official code lets padded positions carry gradient 0 only through the mask; ours selects them away
        torch.testing.assert_close(ours.grad, torch.where(mask, theirs.grad, 0.0))


def test_nonorm_exponentiates_the_sum_beyond_the_old_clamp():
    """The issue's case: 200 tokens at +0.15 each (A < 0: nothing clips above) -> exp(30), with its gradient;
    the old +-20 clamp gave exp(20) and zero gradient."""
    old = torch.zeros(1, 200, dtype=torch.float64)
    logprobs = torch.full((1, 200), 0.15, dtype=torch.float64, requires_grad=True)
    loss, metrics = gmpo_nonorm_loss(logprobs, old, torch.tensor([-1.0], dtype=torch.float64), torch.ones(1, 200))
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(30.0), rel=1e-12)
    assert metrics["seq_ratio_max"] == pytest.approx(math.exp(30.0), rel=1e-12)
    torch.testing.assert_close(logprobs.grad, torch.full((1, 200), math.exp(30.0), dtype=torch.float64))
    reference = official_mean_loss(logprobs.detach(), old, torch.ones(1, 200, dtype=torch.bool), [-1.0], 0.4, "nonorm")
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    # far below: exp(-60) (the old clamp made it exp(-20)), still with its (tiny) gradient
    loss, _ = gmpo_nonorm_loss(
        -logprobs.detach() * 2, old, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 200)
    )
    assert loss.item() == pytest.approx(-math.exp(-60.0), rel=1e-12)


def test_nonorm_clamps_only_where_float32_overflows():
    """Above 88 (exp(88.72) is float32's max) the exponent stops at 88 with zero gradient; a row with A = 0 gives 0,
    where 0 * inf would be NaN."""
    old = torch.zeros(2, 100)
    logprobs = torch.full((2, 100), 0.95, requires_grad=True)  # A < 0 keeps every token: sum 95 > 88
    loss, metrics = gmpo_nonorm_loss(logprobs, old, torch.tensor([-1.0, 0.0]), torch.ones(2, 100))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(math.exp(88.0) / 2, rel=1e-5)
    assert metrics["seq_ratio_max"] == pytest.approx(math.exp(88.0), rel=1e-5)
    assert torch.count_nonzero(logprobs.grad) == 0
    below = torch.full((1, 100), 0.875, requires_grad=True)  # sum 87.5 (exact in float32), with its gradient
    loss, _ = gmpo_nonorm_loss(below, torch.zeros(1, 100), torch.tensor([-1.0]), torch.ones(1, 100))
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(87.5), rel=1e-5)
    assert below.grad[0, 0].item() == pytest.approx(math.exp(87.5), rel=1e-5)


def test_hmpo_hand_values():
    # Row 0 (A = 1): x = [0.1, 0.6, -0.8] -> c = [0.1, 0.4, -0.8] (only x > 0.4 clips), h = 3 / (e^-0.1 + e^-0.4
    # + e^0.8). Row 1 (A = -2): x = [-0.5, 0.7] -> c = [-0.4, 0.7], h = 2 / (e^0.4 + e^-0.7). Row 2: empty mask.
    old = torch.zeros(3, 4, dtype=torch.float64)
    logprobs = torch.tensor(
        [[0.1, 0.6, -0.8, 9.0], [-0.5, 0.7, 3.0, -7.0], [0.2, 0.2, 0.2, 0.2]], dtype=torch.float64, requires_grad=True
    )
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    h0 = 3 / (math.exp(-0.1) + math.exp(-0.4) + math.exp(0.8))
    h1 = 2 / (math.exp(0.4) + math.exp(-0.7))
    loss, metrics = hmpo_loss(logprobs, old, adv, mask)
    assert loss.item() == pytest.approx((-h0 + 2 * h1) / 3, rel=1e-12)
    assert metrics["seq_ratio_min"] == pytest.approx(h0) and metrics["seq_ratio_max"] == pytest.approx(h1)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 5) and metrics["clip_frac_low"] == pytest.approx(1 / 5)
    loss.backward()
    # d l_0 / d x_t = -A h w_t with w_t = e^-c_t / sum e^-c; clipped tokens 0; divided by B = 3.
    s0 = math.exp(-0.1) + math.exp(-0.4) + math.exp(0.8)
    assert logprobs.grad[0, 0].item() == pytest.approx(-h0 * math.exp(-0.1) / s0 / 3, rel=1e-12)
    assert logprobs.grad[0, 1].item() == 0.0 and logprobs.grad[0, 3].item() == 0.0
    assert logprobs.grad[0, 2].item() == pytest.approx(-h0 * math.exp(0.8) / s0 / 3, rel=1e-12)
    assert logprobs.grad[1, 0].item() == 0.0  # clipped from below for A < 0
    assert logprobs.grad[1, 1].item() == pytest.approx(2 * h1 * math.exp(-0.7) / (2 / h1) / 3, rel=1e-12)
    assert torch.count_nonzero(logprobs.grad[2]) == 0
    # harmonic <= geometric: the same row under GMPO has the larger ratio
    assert h0 < math.exp((0.1 + 0.4 - 0.8) / 3)


def official_grpo_clip_wider(new, old, mask, adv):
    """callsys/GMPO grpo_clip_wider: -A r vs -A clamp(r, 0.67, 1.49), the max, token mean per row, row mean."""
    ratio = torch.exp(new - old)
    pg = torch.max(-adv[:, None] * ratio, -adv[:, None] * torch.clamp(ratio, 0.67, 1.49))
    return ((pg * mask).sum(1) / mask.sum(1)).mean()


def test_grpo_clip_wider_config_equals_the_official_ablation():
    old, delta, mask, adv = random_case(7, scale=0.6)
    loss, metrics = get_policy_loss("grpo")(old + delta, old, adv, mask, clip_low=0.33, clip_high=0.49)
    torch.testing.assert_close(loss, official_grpo_clip_wider(old + delta, old, mask, adv))
    assert metrics["clip_frac"] > 0  # the case reaches the wider bounds


def easyr1_token_losses(log_ratio, adv, low, high, dual):
    """EasyR1 compute_policy_loss (loss_type default), per token, in python."""
    out = []
    for x in log_ratio:
        ratio = math.exp(min(max(x, -20.0), 20.0))
        clipped = math.exp(min(max(x, math.log(1 - low)), math.log(1 + high)))
        higher = max(-adv * ratio, -adv * clipped)
        out.append(min(higher, -adv * dual) if adv < 0 else higher)
    return out


def test_grpo_dual_clip_and_token_mean_hand_values():
    # Row 0 (A = +1): r = e^0.1 (inside), e^1.5 (> 1.3: clipped high), e^-2.0 (below, not clipped for A > 0).
    # Row 1 (A = -2): r = e^-0.5 < 0.8 (clipped low -> 0.8), e^0.5 (inside the dual bound), e^1.5 = 4.48 > 3
    # (dual clip -> 3). Row 2 (A = -1): r = e^1.2 = 3.32 > 3 (dual). Row 3: empty mask.
    log_ratio = [[0.1, 1.5, -2.0, 0.0], [-0.5, 0.5, 1.5, 0.0], [1.2, 0.0, 0.0, 0.0], [0.3, 0.3, 0.0, 0.0]]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -2.0, -1.0, 0.7], dtype=torch.float64)
    old = torch.zeros(4, 4, dtype=torch.float64)
    row0 = [-math.exp(0.1), -1.3, -math.exp(-2.0)]
    row1 = [2 * 0.8, 2 * math.exp(0.5), 2 * 3.0]
    row2 = [3.0]
    rows = [[x for x, m in zip(r, mr, strict=True) if m] for r, mr in zip(log_ratio, mask.tolist(), strict=True)]
    for hand, xs, a in zip((row0, row1, row2), rows, adv.tolist(), strict=False):
        assert easyr1_token_losses(xs, a, 0.2, 0.3, 3.0) == pytest.approx(hand, rel=1e-12)

    def run(**options):
        logprobs = torch.tensor(log_ratio, dtype=torch.float64, requires_grad=True)
        loss, metrics = get_policy_loss("grpo", **options)(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.3)
        loss.backward()
        return loss.item(), metrics, logprobs.grad

    seq, m_seq, g_seq = run(clip_dual=3.0)
    assert seq == pytest.approx((sum(row0) / 3 + sum(row1) / 3 + 3.0 + 0.0) / 4, rel=1e-12)
    assert m_seq["clip_frac_dual"] == pytest.approx(2 / 7) and m_seq["clip_frac_low"] == pytest.approx(1 / 7)
    assert m_seq["clip_frac"] == pytest.approx(4 / 7)  # high 1, low 1, dual 2
    assert g_seq[1, 2].item() == 0.0 and g_seq[2, 0].item() == 0.0  # dual-clipped: constant
    assert g_seq[1, 1].item() == pytest.approx(2 * math.exp(0.5) / 3 / 4, rel=1e-12)  # inside: -A r / |o| / B
    no_dual, m_plain, g_plain = run()
    assert no_dual == pytest.approx(
        (sum(row0) / 3 + (1.6 + 2 * math.exp(0.5) + 2 * math.exp(1.5)) / 3 + math.exp(1.2)) / 4, rel=1e-12
    )
    assert "clip_frac_dual" not in m_plain and g_plain[1, 2].item() != 0.0
    token, m_tok, g_tok = run(clip_dual=3.0, aggregation="token_mean")
    assert token == pytest.approx((sum(row0) + sum(row1) + 3.0) / 7, rel=1e-12)
    assert m_tok["pg_loss"] == pytest.approx(token, rel=1e-12)
    assert g_tok[0, 0].item() == pytest.approx(-math.exp(0.1) / 7, rel=1e-12)  # -A r / N
    assert g_tok[1, 1].item() == pytest.approx(2 * math.exp(0.5) / 7, rel=1e-12)
    # a positive advantage is never dual-clipped, however large the ratio
    big = torch.tensor([[2.0]], dtype=torch.float64)
    loss, m = get_policy_loss("grpo", clip_dual=3.0)(
        big, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.3
    )
    assert loss.item() == pytest.approx(-1.3) and m["clip_frac_dual"] == 0.0


def test_token_mean_micro_batches_with_the_global_token_count_equal_one_call():
    old, delta, mask, adv = random_case(3, b=5, t=8)
    mask[2] = False  # an empty row
    loss_fn = get_policy_loss("grpo", aggregation="token_mean", clip_dual=3.0)
    whole = (old + delta).requires_grad_(True)
    loss, _ = loss_fn(whole, old, adv, mask)
    loss.backward()
    split = (old + delta).requires_grad_(True)
    tokens = float(mask.sum())
    total = sum(loss_fn(split[r], old[r], adv[r], mask[r], denominator=tokens)[0] for r in (slice(0, 2), slice(2, 5)))
    total.backward()
    torch.testing.assert_close(total, loss.detach())
    torch.testing.assert_close(split.grad, whole.grad)
    empty, metrics = loss_fn(whole.detach(), old, adv, torch.zeros_like(mask))
    assert empty.item() == 0.0 and metrics["num_tokens"] == 0.0 and math.isfinite(metrics["pg_loss"])


def test_kl_token_mean_hand_values():
    # k3(d) = e^d - d - 1 with d = ref - logprobs: tokens d = 0.5, -0.2 (row 0) and 1.0 (row 1).
    logprobs = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[0.5, -0.2], [1.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    k3 = [math.exp(d) - d - 1 for d in (0.5, -0.2, 1.0)]
    loss, metrics = add_kl_penalty(
        torch.zeros((), dtype=torch.float64), logprobs, ref, mask, 0.01, aggregation="token_mean"
    )
    assert loss.item() == pytest.approx(0.01 * sum(k3) / 3, rel=1e-12)
    assert metrics["kl_ref"] == pytest.approx(sum(k3) / 3, rel=1e-12)
    loss, metrics = add_kl_penalty(torch.zeros((), dtype=torch.float64), logprobs, ref, mask, 0.01, denominator=6.0, aggregation="token_mean")  # fmt: skip
    assert loss.item() == pytest.approx(0.01 * sum(k3) / 6, rel=1e-12)
    seq, _ = add_kl_penalty(torch.zeros((), dtype=torch.float64), logprobs, ref, mask, 0.01)
    assert seq.item() == pytest.approx(0.01 * ((k3[0] + k3[1]) / 2 + k3[2]) / 2, rel=1e-12)


def test_policy_loss_for_binds_and_refuses_options_naming_the_key():
    fn, _ = policy_loss_for("grpo", max_response_length=3000, normalize_std=True, clip_dual=3.0, aggregation="token_mean")  # fmt: skip
    assert fn.keywords == {"clip_dual": 3.0, "aggregation": "token_mean"}
    plain, _ = policy_loss_for("gmpo", max_response_length=3000, normalize_std=True)
    assert plain is get_policy_loss("gmpo")
    fn, _ = policy_loss_for("drgrpo", max_response_length=100, normalize_std=False, clip_dual=2.5)
    assert fn.keywords == {"max_response_length": 100, "clip_dual": 2.5}
    with pytest.raises(UserError, match=r"algorithm.clip_dual=3.0: algorithm.loss=gmpo has no dual clip"):
        policy_loss_for("gmpo", max_response_length=3000, normalize_std=True, clip_dual=3.0)
    with pytest.raises(UserError, match=r"algorithm.clip_dual=0.5 must be 0 \(off\) or > 1"):
        policy_loss_for("grpo", max_response_length=3000, normalize_std=True, clip_dual=0.5)
    with pytest.raises(UserError, match=r"algorithm.loss_aggregation=token_mean: algorithm.loss=hmpo supports"):
        policy_loss_for("hmpo", max_response_length=3000, normalize_std=True, aggregation="token_mean")
    assert loss_unit("token_mean") == "tokens" and loss_unit("seq_mean") == "sequences"


def test_advantage_epsilon_hand_values():
    # Group [1, 0, 0, 0]: mean 0.25, sample std sqrt(0.75 / 3) = 0.5 -> A_0 = 0.75 / (0.5 + eps).
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert group_advantages(rewards, 4, eps=1e-8)[0].item() == pytest.approx(0.75 / (0.5 + 1e-8), rel=1e-15)
    assert group_advantages(rewards, 4)[0].item() == pytest.approx(0.75 / (0.5 + 1e-6), rel=1e-15)
    assert group_advantages(rewards, 4, eps=1e-8)[0].item() != group_advantages(rewards, 4)[0].item()
