"""The README's "Add a loss" example, run as a user would paste it: it registers, is a choice of
``algorithm.loss``, gives a finite loss with a gradient, and on-policy equals GRPO's unclipped objective."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mm_gmpo.algorithms import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def _add_a_loss_block() -> str:
    text = README.read_text()
    section = text.split("## Add a loss", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's 'Add a loss' section should hold one python block"
    return blocks[0]


@pytest.fixture
def readme_loss():
    name = re.search(r'@register_loss\("(\w+)"', _add_a_loss_block()).group(1)
    namespace: dict = {}
    exec(compile(_add_a_loss_block(), str(README), "exec"), namespace)  # noqa: S102 (our own README)
    yield name
    registry.POLICY_LOSSES.pop(name, None)
    registry.LOSS_SPECS.pop(name, None)


def test_readme_loss_registers_and_trains(readme_loss):
    assert readme_loss in registry.loss_names()
    registry.check_loss_name(readme_loss)  # a valid algorithm.loss now
    loss_fn, _ = registry.policy_loss_for(readme_loss, max_response_length=8, normalize_std=True)

    torch.manual_seed(0)
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, 5:] = False
    old = -torch.rand(4, 8) - 0.1
    logprobs = old.clone().requires_grad_(True)
    advantages = torch.tensor([1.0, -1.0, 0.5, 0.0])
    loss, metrics = loss_fn(logprobs, old, advantages, mask, denominator=4.0)
    loss.backward()

    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-advantages.sum().item() / 4.0)  # every ratio is 1 on-policy
    assert logprobs.grad is not None and logprobs.grad[0, 0] < 0 < logprobs.grad[1, 0]  # up for A > 0, down for A < 0
    assert logprobs.grad[1, 5:].abs().sum() == 0  # padding gets no gradient
    assert all(isinstance(v, float) for v in metrics.values())
