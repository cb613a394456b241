"""Policy losses: hand-computed values, the GMPO gradient form, micro-batch splitting, numerics, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from mm_gmpo.algorithms import POLICY_LOSSES, get_policy_loss, gmpo_loss, grpo_loss

METRIC_NAMES = {
    "clip_frac",
    "clip_frac_low",
    "clip_frac_high",
    "log_ratio_min",
    "log_ratio_max",
    "log_ratio_mean",
    "log_ratio_std",
    "log_ratio_abs_p99",
    "approx_kl",
    "advantage_mean",
    "advantage_std",
    "advantage_frac_zero",
    "pg_loss",
    "num_tokens",
    "num_sequences",
}
SEQ_RATIO_LOSSES = {"gmpo", "gmpo_noclip", "gmpo_seqclip", "gmpo_nonorm", "hmpo", "gspo"}

# Four sequences, T = 4. Row 0: A = +1, three tokens, one above +0.4 (clipped for A > 0), one far below (not
# clipped for A > 0), then a padded position holding garbage. Row 1: A = -2, two tokens, one below -0.4 (clipped
# for A < 0), one far above (not clipped for A < 0). Row 2: A = 0.5 with an empty mask. Row 3: A = 0.
LOG_RATIO = [[0.1, 0.6, -0.8, 9.0], [-0.5, 0.7, 3.0, -7.0], [0.2, 0.2, 0.2, 0.2], [0.3, -0.3, 0.0, 0.0]]
MASK = [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
ADV = [1.0, -2.0, 0.5, 0.0]


def make_case(dtype=torch.float64):
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0]] * 4, dtype=dtype)
    logprobs = (old + torch.tensor(LOG_RATIO, dtype=dtype)).requires_grad_(True)
    return logprobs, old, torch.tensor(ADV, dtype=dtype), torch.tensor(MASK, dtype=torch.bool)


def ref_gmpo_sequence(xs: list[float], adv: float, low: float, high: float) -> float:
    """The paper's per-sequence GMPO term, token by token with python min/max."""
    if not xs or adv == 0:
        return 0.0
    clamp = [min(max(x, -low), high) for x in xs]
    clipped = [min(x, c) if adv > 0 else max(x, c) for x, c in zip(xs, clamp, strict=True)]
    return -adv * math.exp(sum(clipped) / len(xs))


def ref_grpo_tokens(xs: list[float], adv: float, low: float, high: float) -> list[float]:
    """-min(r A, clip(r, 1 - low, 1 + high) A) per token."""
    return [-min(math.exp(x) * adv, min(max(math.exp(x), 1 - low), 1 + high) * adv) for x in xs]


def masked_rows() -> list[list[float]]:
    return [[x for x, m in zip(row, mrow, strict=True) if m] for row, mrow in zip(LOG_RATIO, MASK, strict=True)]


def test_gmpo_hand_values_and_clip_metrics():
    logprobs, old, adv, mask = make_case()
    loss, metrics = gmpo_loss(logprobs, old, adv, mask)
    # Row 0: c = [0.1, 0.4, -0.8] -> exp(-0.1); row 1: c = [-0.4, 0.7] -> exp(0.15); rows 2, 3 contribute 0.
    expected = (-1.0 * math.exp(-0.3 / 3) + 2.0 * math.exp(0.3 / 2) + 0.0 + 0.0) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    reference = sum(ref_gmpo_sequence(xs, a, 0.4, 0.4) for xs, a in zip(masked_rows(), ADV, strict=True)) / 4
    assert loss.item() == pytest.approx(reference, rel=1e-12)
    assert metrics["num_tokens"] == 7.0 and metrics["num_sequences"] == 4.0
    assert metrics["clip_frac_high"] == pytest.approx(1 / 7)  # row 0, x = 0.6
    assert metrics["clip_frac_low"] == pytest.approx(1 / 7)  # row 1, x = -0.5
    assert metrics["clip_frac"] == pytest.approx(2 / 7)
    assert metrics["seq_ratio_min"] == pytest.approx(math.exp(-0.1))
    # Row 3 (A = 0) has no clipping: its ratio is exp(mean(0.3, -0.3)) = 1; row 1's exp(0.15) is the max.
    assert metrics["seq_ratio_max"] == pytest.approx(math.exp(0.15))
    assert metrics["pg_loss"] == pytest.approx(expected)


def test_gmpo_asymmetric_clip_range():
    logprobs, old, adv, mask = make_case()
    loss, metrics = gmpo_loss(logprobs, old, adv, mask, clip_low=0.6, clip_high=0.2)
    # Row 0: c = [0.1, 0.2, -0.8]; row 1: -0.5 is inside [-0.6, 0.2] on A < 0's side -> c = [-0.5, 0.7].
    expected = (-1.0 * math.exp(-0.5 / 3) + 2.0 * math.exp(0.2 / 2)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert metrics["clip_frac_low"] == 0.0 and metrics["clip_frac_high"] == pytest.approx(1 / 7)


def test_gmpo_ablations_hand_values():
    logprobs, old, adv, mask = make_case()
    noclip, nonorm, seqclip = POLICY_LOSSES["gmpo_noclip"], POLICY_LOSSES["gmpo_nonorm"], POLICY_LOSSES["gmpo_seqclip"]
    loss, m = noclip(logprobs, old, adv, mask)
    assert loss.item() == pytest.approx((-math.exp(-0.1 / 3) + 2.0 * math.exp(0.2 / 2)) / 4, rel=1e-12)
    assert m["clip_frac"] == 0.0
    loss, _ = nonorm(logprobs, old, adv, mask)  # token clip as GMPO, exp of the sum
    assert loss.item() == pytest.approx((-math.exp(-0.3) + 2.0 * math.exp(0.3)) / 4, rel=1e-12)
    # Sequence clip (the paper's code: the log-ratio *sum* is clipped, then divided by |o|): row 0 (A > 0, sum
    # -0.1) is not clipped from below, row 1 (A < 0, sum 0.2) is not clipped from above.
    loss, m = seqclip(logprobs, old, adv, mask, clip_low=0.02, clip_high=0.02)
    assert loss.item() == pytest.approx((-math.exp(-0.1 / 3) + 2.0 * math.exp(0.1)) / 4, rel=1e-12)
    assert m["clip_frac"] == 0.0
    flipped = -adv  # row 0 now A = -1 (sum -0.1 < -0.02: clipped), row 1 A = +2 (sum 0.2 > 0.02: clipped)
    loss, m = seqclip(logprobs, old, flipped, mask, clip_low=0.02, clip_high=0.02)
    assert loss.item() == pytest.approx((math.exp(-0.02 / 3) - 2.0 * math.exp(0.02 / 2)) / 4, rel=1e-12)
    assert m["clip_frac_low"] == pytest.approx(3 / 7) and m["clip_frac_high"] == pytest.approx(2 / 7)
    loss.backward()
    assert torch.count_nonzero(logprobs.grad) == 0  # both sequences clipped, rows 2-3 contribute nothing


def test_gspo_hand_values():
    logprobs, old, adv, mask = make_case()
    gspo_loss = POLICY_LOSSES["gspo"]
    # s_0 = exp(-0.1/3) = 0.967 (A > 0, inside [0.8, 1.2]); s_1 = exp(0.1) = 1.105 (A < 0, inside).
    loss, _ = gspo_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx((-math.exp(-0.1 / 3) + 2.0 * math.exp(0.1)) / 4, rel=1e-12)
    # Defaults 3e-4 / 4e-4: s_0 < 1 - 3e-4 is not clipped for A > 0; s_1 > 1 + 4e-4 is not clipped for A < 0.
    loss, _ = gspo_loss(logprobs, old, adv, mask)
    assert loss.item() == pytest.approx((-math.exp(-0.1 / 3) + 2.0 * math.exp(0.1)) / 4, rel=1e-12)
    loss, m = gspo_loss(logprobs, old, -adv, mask)  # flipped signs: both clipped, -min(sA, clip(s) A)
    assert loss.item() == pytest.approx(((1 - 3e-4) * 1.0 - 2.0 * (1 + 4e-4)) / 4, rel=1e-12)
    assert m["clip_frac"] == pytest.approx(5 / 7)


def test_grpo_hand_values():
    logprobs, old, adv, mask = make_case()
    loss, metrics = grpo_loss(logprobs, old, adv, mask)
    # Row 0 (A = 1): r = e^0.1 (inside), e^0.6 > 1.2 -> 1.2, e^-0.8 (below, not clipped for A > 0).
    row0 = -(math.exp(0.1) + 1.2 + math.exp(-0.8)) / 3
    # Row 1 (A = -2): e^-0.5 < 0.8 -> 0.8 * 2; e^0.7 (above, not clipped for A < 0) -> 2 e^0.7.
    row1 = (0.8 * 2.0 + 2.0 * math.exp(0.7)) / 2
    assert loss.item() == pytest.approx((row0 + row1) / 4, rel=1e-12)
    reference = [sum(t) / len(t) if t else 0.0 for t in map(ref_grpo_tokens, masked_rows(), ADV, [0.2] * 4, [0.2] * 4)]
    assert loss.item() == pytest.approx(sum(reference) / 4, rel=1e-12)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 7) and metrics["clip_frac_low"] == pytest.approx(1 / 7)
    assert "seq_ratio_min" not in metrics


def test_drgrpo_constant_length_normaliser():
    logprobs, old, adv, mask = make_case()
    loss_fn = get_policy_loss("drgrpo", max_response_length=10)
    loss, _ = loss_fn(logprobs, old, adv, mask)
    token_sums = [sum(ref_grpo_tokens(xs, a, 0.2, 0.2)) for xs, a in zip(masked_rows(), ADV, strict=True)]
    assert loss.item() == pytest.approx(sum(token_sums) / (4 * 10), rel=1e-12)
    default, _ = POLICY_LOSSES["drgrpo"](logprobs, old, adv, mask)
    assert default.item() == pytest.approx(sum(token_sums) / (4 * 3000), rel=1e-12)


def test_gmpo_gradient_is_weighted_policy_gradient():
    torch.manual_seed(0)
    b, t = 6, 9
    old = -torch.rand(b, t, dtype=torch.float64) * 3
    logprobs = (old + torch.randn(b, t, dtype=torch.float64) * 0.5).requires_grad_(True)
    mask = torch.rand(b, t) < 0.7
    mask[:, 0] = True
    adv = torch.tensor([1.5, -0.7, 0.3, -2.0, 0.9, -0.1], dtype=torch.float64)
    loss, metrics = gmpo_loss(logprobs, old, adv, mask)
    loss.backward()
    x = (logprobs - old).detach()
    clipped = ((adv[:, None] > 0) & (x > 0.4)) | ((adv[:, None] < 0) & (x < -0.4))
    lengths = mask.sum(-1, keepdim=True).double()
    c = torch.where(clipped, torch.where(x > 0, 0.4, -0.4), x)
    ratio = torch.exp((c * mask).sum(-1, keepdim=True) / lengths)
    expected = torch.where(mask & ~clipped, -adv[:, None] * ratio / lengths / b, 0.0)
    assert (clipped & mask).any() and (~clipped & mask).any()  # the case exercises both branches
    torch.testing.assert_close(logprobs.grad, expected)
    assert metrics["clip_frac"] == pytest.approx(float((clipped & mask).sum() / mask.sum()))


def test_on_policy_gradient_is_minus_a_over_length_for_gmpo_and_grpo():
    old = torch.tensor([[-1.0, -2.0, -0.1, -5.0], [-0.3, -0.2, -4.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([0.8, -1.2], dtype=torch.float64)
    expected = torch.tensor([[-0.8 / 3] * 3 + [0.0], [1.2 / 2] * 2 + [0.0, 0.0]], dtype=torch.float64) / 2
    for fn in (gmpo_loss, grpo_loss):
        logprobs = old.clone().requires_grad_(True)
        loss, metrics = fn(logprobs, old, adv, mask)
        loss.backward()
        torch.testing.assert_close(logprobs.grad, expected)
        assert loss.item() == pytest.approx((-0.8 + 1.2) / 2)
        assert metrics["approx_kl"] == 0.0 and metrics["clip_frac"] == 0.0


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_micro_batches_with_denominator_equal_one_call(name):
    loss_fn = POLICY_LOSSES[name]
    torch.manual_seed(1)
    b, t = 6, 7
    old = -torch.rand(b, t, dtype=torch.float64) * 2
    delta = torch.randn(b, t, dtype=torch.float64) * 0.6
    mask = torch.rand(b, t) < 0.6
    mask[4] = False  # an empty row still counts in the denominator
    adv = torch.randn(b, dtype=torch.float64)
    adv[2] = 0.0
    whole = (old + delta).requires_grad_(True)
    loss_whole, _ = loss_fn(whole, old, adv, mask)
    loss_whole.backward()
    split = (old + delta).requires_grad_(True)
    total = sum(
        loss_fn(split[rows], old[rows], adv[rows], mask[rows], denominator=b)[0] for rows in (slice(0, 2), slice(2, 6))
    )
    total.backward()
    torch.testing.assert_close(total, loss_whole)
    torch.testing.assert_close(split.grad, whole.grad)
    with_denominator, _ = loss_fn(whole.detach(), old, adv, mask, denominator=b)
    torch.testing.assert_close(with_denominator, loss_whole.detach())


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_long_sequences_and_extreme_log_ratios_stay_finite(name):
    loss_fn = POLICY_LOSSES[name]
    t = 8192
    old = torch.full((4, t), -2.0)
    signs = torch.tensor([1.0, -1.0]).repeat(t // 2)
    delta = torch.stack([50 * signs, torch.full((t,), 50.0), torch.full((t,), -50.0), 50 * signs])
    logprobs = (old + delta).requires_grad_(True)
    mask = torch.ones(4, t, dtype=torch.bool)
    mask[3] = False
    for adv in (torch.tensor([1.0, 1.0, -1.0, 1.0]), torch.tensor([-1.0, -1.0, 1.0, 0.0])):
        logprobs.grad = None
        loss, metrics = loss_fn(logprobs, old, adv, mask)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["log_ratio_max"] == 50.0 and metrics["log_ratio_min"] == -50.0


def test_gmpo_far_off_policy_sequence_ratio_is_clamped():
    old = torch.zeros(2, 5)
    logprobs = torch.full((2, 5), 50.0, requires_grad=True)
    loss, metrics = POLICY_LOSSES["gmpo_noclip"](logprobs, old, torch.tensor([-1.0, 0.0]), torch.ones(2, 5))
    loss.backward()
    assert loss.item() == pytest.approx(math.exp(20.0) / 2, rel=1e-5)
    assert metrics["seq_ratio_max"] == pytest.approx(math.exp(20.0), rel=1e-5)
    assert torch.count_nonzero(logprobs.grad) == 0  # beyond the clamp: no gradient rather than an inf one


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_empty_masks_and_metrics_contract(name):
    loss_fn = POLICY_LOSSES[name]
    logprobs = torch.tensor([[0.0, float("-inf")], [float("nan"), 3.0]], requires_grad=True)
    old = torch.tensor([[float("-inf"), 1.0], [2.0, float("nan")]])
    loss, metrics = loss_fn(logprobs, old, torch.tensor([1.0, -1.0]), torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logprobs.grad) == 0
    expected_names = METRIC_NAMES | ({"seq_ratio_min", "seq_ratio_max"} if name in SEQ_RATIO_LOSSES else set())
    assert set(metrics) == expected_names
    assert all(type(v) is float and math.isfinite(v) for v in metrics.values())
    assert metrics["num_tokens"] == 0.0 and metrics["num_sequences"] == 2.0


def test_log_ratio_and_advantage_metrics_hand_values():
    logprobs, old, adv, mask = make_case()
    _, m = grpo_loss(logprobs, old, adv, mask)
    xs = [0.1, 0.6, -0.8, -0.5, 0.7, 0.3, -0.3]
    mean = sum(xs) / 7
    assert m["log_ratio_min"] == pytest.approx(-0.8) and m["log_ratio_max"] == pytest.approx(0.7)
    assert m["log_ratio_mean"] == pytest.approx(mean)
    assert m["log_ratio_std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in xs) / 7))
    # |x| sorted: 0.1 0.3 0.3 0.5 0.6 0.7 0.8; p99 at position 0.99 * 6 = 5.94 between 0.7 and 0.8.
    assert m["log_ratio_abs_p99"] == pytest.approx(0.7 + 0.94 * 0.1)
    assert m["approx_kl"] == pytest.approx(sum(math.exp(x) - 1 - x for x in xs) / 7)
    assert m["advantage_mean"] == pytest.approx(-0.125)
    assert m["advantage_std"] == pytest.approx(math.sqrt(sum((a + 0.125) ** 2 for a in ADV) / 4))
    assert m["advantage_frac_zero"] == 0.25


def test_float32_and_bfloat16_inputs_and_0_1_masks():
    logprobs, old, adv, mask = make_case(torch.float64)
    reference, _ = gmpo_loss(logprobs, old, adv, mask)
    for dtype in (torch.float32, torch.bfloat16):
        lp = logprobs.detach().to(dtype).requires_grad_(True)
        loss, _ = gmpo_loss(lp, old.to(dtype), adv.to(dtype), mask.to(torch.int64))
        loss.backward()
        assert loss.dtype == torch.float32 and lp.grad.dtype == dtype
        tolerance = 1e-6 if dtype == torch.float32 else 5e-2
        assert loss.item() == pytest.approx(reference.item(), rel=tolerance, abs=tolerance)


def test_old_logprobs_get_no_gradient_and_shapes_are_checked():
    logprobs, old, adv, mask = make_case()
    old = old.clone().requires_grad_(True)
    loss, _ = grpo_loss(logprobs, old, adv, mask)
    loss.backward()
    assert old.grad is None
    with pytest.raises(ValueError, match="advantages"):
        gmpo_loss(logprobs, old, adv[:3], mask)
    with pytest.raises(ValueError, match="response_mask"):
        gmpo_loss(logprobs, old, adv, mask[:, :3])
    with pytest.raises(ValueError, match="denominator"):
        gmpo_loss(logprobs, old, adv, mask, denominator=0)
    with pytest.raises(ValueError, match="clip_mode"):
        gmpo_loss(logprobs, old, adv, mask, clip_mode="tokens")
    with pytest.raises(ValueError, match="clip_low"):
        grpo_loss(logprobs, old, adv, mask, clip_low=1.5)
