"""Small real batches for tests and scripts: prompts from the shipped samples and teacher-forced responses of
different lengths, with advantages and old/reference log-probs, all on the CPU as the loaders make them."""

from __future__ import annotations

import torch

from mm_gmpo.data import build_prompts, load_examples
from mm_gmpo.rollout import teacher_forced_batch
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.types import Prompt

RESPONSES = ["<think>\nLook.\n</think>\n\\boxed{3}", "\\boxed{12}", "<think>\nThe angle is 30.\n</think>\n\\boxed{30}"]


def sample_prompts(processor, count: int, with_images: bool) -> list[Prompt]:
    """Real prompts from the shipped samples: Geometry3K diagrams of different sizes, or MATH text."""
    spec, template = ("geometry3k:train", "geo3k") if with_images else ("math_lvl3to5", "qwen_math")
    examples, _ = load_examples(spec, split_limit=count)
    prompts, _ = build_prompts(
        examples, processor, template=template, show_choices=False, max_prompt_length=4096, min_pixels=3136,
        max_pixels=12544,
    )  # fmt: skip
    if len(prompts) != count:
        raise ValueError(f"{spec}: {len(prompts)} prompts built, {count} asked")
    return prompts


def sample_train_batch(processor, with_images: bool) -> TrainBatch:
    """6 rows (3 response lengths), random advantages, old log-probs near -2, reference equal to 0."""
    prompts = sample_prompts(processor, 6, with_images)
    rollout = teacher_forced_batch(processor, prompts, [RESPONSES[i % 3] for i in range(6)])
    n, width = rollout.num_rows, rollout.response_length
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(n, width, generator=generator) * 0.1 - 2.0
    return TrainBatch(rollout, torch.randn(n, generator=generator), old * rollout.response_mask, old * 0.0)


def run_update_round(model, batch: TrainBatch, settings, ctx=None) -> tuple[torch.Tensor, dict, list[dict]]:
    """(old log-probs, the parameters after, per-step metrics) of one GMPO update round of ``batch`` on ``model``
    (AdamW at lr 1e-3, no clipping, no warm-up), the old log-probs from the no-grad pass in the same batching."""
    from mm_gmpo.algorithms import get_policy_loss
    from mm_gmpo.trainer.actor import Actor
    from mm_gmpo.trainer.dist import DistContext
    from mm_gmpo.trainer.engine import TorchUpdater
    from mm_gmpo.trainer.policy import PolicyLogprobs

    ctx = ctx or DistContext()
    updater = TorchUpdater(
        ctx, PolicyLogprobs(model), lr=1e-3, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=0.0, warmup=0
    )
    actor = Actor(updater, get_policy_loss("gmpo"), settings, ctx=ctx)
    old = actor.logprobs(batch.rollout)
    rows = actor.update(TrainBatch(batch.rollout, batch.advantages, old, None))
    return old, {name: p.detach().clone() for name, p in model.named_parameters()}, rows


def assert_same_update(a: dict, b: dict, atol: float = 1e-5, max_frac: float = 1e-3) -> None:
    """Two sets of weights after the same AdamW steps agree: all but a ``max_frac`` fraction of the elements within
    ``atol``. AdamW's first steps are about lr x sign(gradient), so float noise on a gradient that is ~0 can move
    that element by up to 2 lr: a few such elements are noise, a different update differs almost everywhere."""
    far = sum(int(((a[name] - b[name]).abs() > atol).sum()) for name in a)
    total = sum(t.numel() for t in a.values())
    assert a.keys() == b.keys() and far <= max_frac * total, f"{far} of {total} weights differ by more than {atol}"
