"""Rollout importance sampling: the correction is right, not only that it runs.

A small categorical policy (3 tokens, responses of L = 1 or 2 tokens, the second conditioned on the first) whose
exact on-policy gradient is computable by enumerating every response. Responses are drawn from a sampler mu
that differs from pi_old; the Monte-Carlo mean of the corrected loss's gradient must converge to the exact
gradient (its error falls with the sample count), while the uncorrected loss stays biased.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mm_gmpo.algorithms import POLICY_LOSSES, RolloutIS, corrected, get_policy_loss
from mm_gmpo.algorithms.registry import policy_loss_for
from mm_gmpo.algorithms.rollout_is import bounded_weights, raw_log_weights, rollout_is_metrics, rollout_is_stats
from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError

K = 3  # vocabulary
LEVELS = ("token", "sequence", "geometric")
MODES = ("truncate", "mask")


def token_logprobs(params: list[torch.Tensor], responses: torch.Tensor) -> torch.Tensor:
    """[N, L] log-probs of each token: the first from params[0] [K], token t from params[t][previous token]."""
    columns = [torch.log_softmax(params[0], -1)[responses[:, 0]]]
    for t in range(1, responses.shape[1]):
        columns.append(torch.log_softmax(params[t], -1)[responses[:, t - 1], responses[:, t]])
    return torch.stack(columns, 1)


class Problem:
    """pi_old's logits, the sampler's (pi_old's plus a fixed perturbation), a reward per response."""

    def __init__(self, length: int, shift: float, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.length = length
        self.theta = [torch.randn(K, generator=g)] + [torch.randn(K, K, generator=g) for _ in range(length - 1)]
        self.sampler = [t + shift * torch.randn(t.shape, generator=g) for t in self.theta]
        self.reward = torch.rand((K,) * length, generator=g)
        self.responses = torch.tensor(list(itertools.product(range(K), repeat=length)))  # every response
        self.sampler_logprobs = token_logprobs(self.sampler, self.responses)

    def sequence_ratios(self) -> torch.Tensor:
        pi = token_logprobs(self.theta, self.responses).sum(1)
        return (pi - self.sampler_logprobs.sum(1)).exp()

    def exact_gradient(self) -> torch.Tensor:
        """d loss / d theta on-policy: GMPO's and GRPO's both equal -(1/L) d E_pi[r] / d theta (A = r - b)."""
        params = [t.clone().requires_grad_() for t in self.theta]
        value = (token_logprobs(params, self.responses).sum(1).exp() * self.reward[tuple(self.responses.T)]).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(-value / self.length, params)])

    def estimate(self, loss_fn, count: int, correct: bool, seed: int = 1) -> torch.Tensor:
        """The gradient of ``loss_fn`` on ``count`` responses drawn from the sampler (its mean over them)."""
        g = torch.Generator().manual_seed(seed)
        index = torch.multinomial(self.sampler_logprobs.sum(1).exp(), count, replacement=True, generator=g)
        drawn = self.responses[index]
        params = [t.clone().requires_grad_() for t in self.theta]
        logprobs = token_logprobs(params, drawn)
        advantages = self.reward[tuple(drawn.T)] - 0.5
        mask = torch.ones_like(logprobs, dtype=torch.bool)
        extra = {"sampler_logprobs": self.sampler_logprobs[index]} if correct else {}
        loss, _ = loss_fn(logprobs, logprobs.detach(), advantages, mask, **extra)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def relative_errors(problem: Problem, loss_fn, correct: bool) -> tuple[float, float]:
    exact = problem.exact_gradient()
    return tuple(
        float((problem.estimate(loss_fn, count, correct) - exact).norm() / exact.norm()) for count in (1000, 64000)
    )


@pytest.mark.parametrize("name", ["gmpo", "grpo"])
def test_one_token_responses_every_level_and_mode_converges_to_the_on_policy_gradient(name):
    problem = Problem(length=1, shift=0.3)
    ratios = problem.sequence_ratios()
    assert ratios.min() > 0.5 and ratios.max() < 2.0  # neither truncation nor masking acts: an unbiased estimator
    biased_small, biased_large = relative_errors(problem, get_policy_loss(name), correct=False)
    assert biased_large > 0.1  # uncorrected: more samples do not help
    for level, mode in itertools.product(LEVELS, MODES):
        small, large = relative_errors(problem, corrected(get_policy_loss(name), RolloutIS(mode, level)), True)
        assert large < 0.02 and large < small / 3, (level, mode, small, large)  # error falls with samples
        assert large < biased_large / 5, (level, mode)


@pytest.mark.parametrize("name", ["gmpo", "grpo"])
def test_two_token_responses_the_sequence_weight_is_exact_token_and_geometric_only_reduce_the_bias(name):
    """The response's reward depends on both tokens and the second token on the first: only the product of the
    token weights is the response's weight. Per-token and geometric weights correct each token's own
    distribution, not its prefix's: closer than no correction, not exact (docs/algorithms.md)."""
    problem = Problem(length=2, shift=0.2)
    ratios = problem.sequence_ratios()
    assert ratios.min() > 0.5 and ratios.max() < 2.0
    _, biased = relative_errors(problem, get_policy_loss(name), correct=False)
    assert biased > 0.1
    for mode in MODES:
        small, large = relative_errors(problem, corrected(get_policy_loss(name), RolloutIS(mode, "sequence")), True)
        assert large < 0.02 and large < small / 3, (mode, small, large)
    for level in ("token", "geometric"):
        _, large = relative_errors(problem, corrected(get_policy_loss(name), RolloutIS("truncate", level)), True)
        assert large < biased, level


def test_weights_truncate_and_mask_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.4], [0.3, 0.3, 0.3]]))
    sampler = torch.log(torch.tensor([[0.5, 0.05, 0.9], [0.3, 0.5, 0.3]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    token = raw_log_weights(old, sampler, mask, "token").exp()
    torch.testing.assert_close(token, torch.tensor([[1.0, 4.0, 4 / 9], [1.0, 0.6, 1.0]]))
    torch.testing.assert_close(raw_log_weights(old, sampler, mask, "sequence").exp(), torch.tensor([16 / 9, 0.6]))
    geometric = raw_log_weights(old, sampler, mask, "geometric").exp()
    torch.testing.assert_close(geometric, torch.tensor([(16 / 9) ** (1 / 3), 0.6**0.5]))
    used, clipped = bounded_weights(token.log(), RolloutIS("truncate", "token", 2.0))
    torch.testing.assert_close(used, torch.tensor([[1.0, 2.0, 4 / 9], [1.0, 0.6, 1.0]]))
    assert clipped.tolist() == [[False, True, False], [False, False, False]]
    used, masked = bounded_weights(token.log(), RolloutIS("mask", "token", 2.0))
    torch.testing.assert_close(used, torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.6, 1.0]]))  # 4/9 < 1/2: masked too
    assert masked.tolist() == [[False, True, True], [False, False, False]]
    stats = rollout_is_stats(old, sampler, mask, RolloutIS("mask", "token", 2.0))
    metrics = rollout_is_metrics(stats, RolloutIS("mask", "token", 2.0))
    assert metrics["rollout/is_weight_mean"] == pytest.approx((1 + 4 + 4 / 9 + 1 + 0.6) / 5)
    assert metrics["rollout/is_weight_max"] == pytest.approx(4.0) and metrics["rollout/is_masked_frac"] == 0.4
    off = rollout_is_metrics(rollout_is_stats(old, sampler, mask, RolloutIS()), RolloutIS())
    assert off["rollout/is_clipped_frac"] == pytest.approx(0.2)  # off: what truncate would clip


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_registered_loss_takes_the_correction_as_its_estimator_needs(name):
    """Token level: the loss's values unchanged, each token's gradient times its weight; sequence level: each
    response's loss and gradient times its weight (every loss is linear in A with sign-determined clipping)."""
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 5, generator=g) - 0.5
    new = (old + 0.3 * torch.randn(4, 5, generator=g)).requires_grad_()
    sampler = old + 0.2 * torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    adv = torch.tensor([1.0, -0.5, 0.8, -1.2])
    plain = get_policy_loss(name)
    big = RolloutIS("truncate", "token", 1e6)  # no truncation: the raw weights
    weights = raw_log_weights(old, sampler, mask, "token").exp()
    for row in range(4):  # one response at a time: gradient per token
        rows = [row]
        base, _ = plain(new[rows], old[rows], adv[rows], mask[rows])
        (g_base,) = torch.autograd.grad(base, new)
        fixed, _ = corrected(plain, big)(new[rows], old[rows], adv[rows], mask[rows], sampler_logprobs=sampler[rows])
        (g_fixed,) = torch.autograd.grad(fixed, new)
        torch.testing.assert_close(fixed, base)
        torch.testing.assert_close(g_fixed[row], g_base[row] * weights[row])
    seq = RolloutIS("truncate", "sequence", 1e6)
    seq_weights = raw_log_weights(old, sampler, mask, "sequence").exp()
    per_row = [plain(new[[r]], old[[r]], adv[[r]], mask[[r]])[0] for r in range(4)]
    whole, metrics = corrected(plain, seq)(new, old, adv, mask, sampler_logprobs=sampler)
    torch.testing.assert_close(whole, sum(w * v for w, v in zip(seq_weights, per_row, strict=True)) / 4)
    assert metrics["advantage_mean"] == pytest.approx(float(adv.mean()))  # the advantages' own metrics
    same, _ = corrected(plain, RolloutIS("mask", "geometric"))(new, old, adv, mask, sampler_logprobs=old)
    torch.testing.assert_close(same, plain(new, old, adv, mask)[0])  # sampler == pi_old: no change


def test_settings_refused_naming_the_key():
    loss, _ = policy_loss_for("gmpo", max_response_length=8, normalize_std=True, rollout_is=RolloutIS())
    assert loss is get_policy_loss("gmpo")  # off: the loss itself
    with pytest.raises(ValueError, match="rollout_is_threshold must be > 1"):
        RolloutIS("truncate", "token", 1.0)
    with pytest.raises(UserError, match="algorithm.rollout_is_level='sequnce'.*did you mean sequence"):
        load_config(None, ["algorithm.rollout_is_level=sequnce"])
    with pytest.raises(UserError, match="algorithm.rollout_is_mode='truncated'.*did you mean truncate"):
        load_config(None, ["algorithm.rollout_is_mode=truncated"])
    with pytest.raises(UserError, match="algorithm.kl_estimator='low_var'.*did you mean low_var_kl"):
        load_config(None, ["algorithm.kl_estimator=low_var"])
