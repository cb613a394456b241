"""Supervised warm start on gold answers, before RL.

A random tiny model earns no reward, so every advantage would be 0 and RL would have nothing to learn from. A few
supervised steps on target responses in the reward's format (``<think>...</think>`` then ``\\boxed{answer}``) give
it the format and a prior over answers, so groups get mixed rewards. Real checkpoints need none (``warmstart.steps=0``).
The loss is the mean negative log-likelihood of the response tokens, computed with the same chunked log-prob
function as the RL update (no full-vocabulary logits over the prompt).
"""

from __future__ import annotations

import logging

import torch

from mm_gmpo.data.prompts import target_response
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)


def warm_start(
    module,
    processor,
    prompts: list[Prompt],
    *,
    template: str,
    reasoning: str,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    chunk_size: int,
) -> list[float]:
    """``steps`` supervised AdamW steps on a plain module (before any DeepSpeed wrapping) on seeded random batches,
    on the module's device, in train mode (the caller holds the autocast context of a bf16 run).

    Every process runs the same steps from the same seed; the optimizer wrappers then broadcast rank 0's weights.
    Returns the losses.
    """
    from mm_gmpo.rollout import teacher_forced_batch
    from mm_gmpo.trainer.forward import policy_logprobs

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on any device
    device = next(module.parameters()).device
    module.train()  # gradient checkpointing (and any dropout) act only in train mode
    losses = []
    for step in range(steps):
        idx = torch.randint(len(prompts), (batch_size,), generator=generator).tolist()
        chosen = [prompts[i] for i in idx]
        targets = [target_response(p, template, reasoning) for p in chosen]
        batch = teacher_forced_batch(processor, chosen, targets).to(device)
        logprobs, _ = policy_logprobs(module, batch, temperature=1.0, chunk_size=chunk_size)
        mask = batch.response_mask.to(logprobs.dtype)
        loss = -(logprobs * mask).sum() / mask.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            log.info("warm start step %d/%d: nll %.3f", step + 1, steps, losses[-1])
    optimizer.zero_grad(set_to_none=True)
    return losses


def warm_start_from_config(module, processor, prompts: list[Prompt], cfg) -> list[float]:
    """:func:`warm_start` with the settings of a :class:`~mm_gmpo.config.Config` (``warmstart.*``, the data
    template, the trainer's seed and log-prob chunk size): what ``mm-gmpo train`` and ``mm-gmpo sft`` both run."""
    w = cfg.warmstart
    return warm_start(
        module,
        processor,
        prompts,
        template=cfg.data.template,
        reasoning=w.reasoning,
        steps=w.steps,
        lr=w.lr,
        batch_size=w.batch_size,
        seed=cfg.trainer.seed,
        chunk_size=cfg.trainer.logprob_chunk_size,
    )
