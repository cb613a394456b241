"""Train mode, gradient checkpointing and fp32 master weights on the real update (issue 19, items 2 and 3)."""

from __future__ import annotations

import pytest
import torch

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.config import load_config
from mm_gmpo.models import load_processor
from mm_gmpo.testing.batches import sample_train_batch
from mm_gmpo.trainer.actor import Actor
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.policy import PolicyLogprobs
from mm_gmpo.trainer.precision import Precision, resolve_precision
from mm_gmpo.trainer.setup import build_policy
from mm_gmpo.trainer.update import UpdateSettings

SETTINGS = UpdateSettings(
    temperature=1.0, chunk_size=512, micro_batch_size=3, updates_per_round=1, sequences_per_step=6
)


def _policy(folder, checkpointing: bool, dtype: str = "float32"):
    cfg = load_config(
        None, [f"model.path={folder}", f"model.gradient_checkpointing={checkpointing}", f"model.dtype={dtype}"]
    )
    precision = resolve_precision(cfg.model.dtype, deepspeed=False, device=torch.device("cpu"))
    return build_policy(cfg, str(folder), precision), precision


def _count_layer_calls(model) -> list[int]:
    calls = [0]
    layer = model.model.language_model.layers[0] if hasattr(model.model, "language_model") else model.model.layers[0]
    # transformers checkpoints the layer's forward, and module hooks do not fire in the recomputation: count the
    # calls of a forward inside the layer instead
    forward = layer.mlp.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    layer.mlp.forward = counted
    return calls


def test_gradient_checkpointing_recomputes_in_the_update_with_the_same_numbers(tiny_vl_dir):
    processor = load_processor(tiny_vl_dir, min_pixels=3136, max_pixels=12544)
    batch = sample_train_batch(processor, with_images=True)
    results = {}
    for checkpointing in (False, True):
        model, _ = _policy(tiny_vl_dir, checkpointing)
        model.eval()  # as from_pretrained leaves it: the update must switch to train mode itself
        calls = _count_layer_calls(model)
        updater = TorchUpdater(
            DistContext(), PolicyLogprobs(model), lr=0.0, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=0.0, warmup=0
        )
        actor = Actor(updater, get_policy_loss("gmpo"), SETTINGS)
        old = actor.logprobs(batch.rollout)
        assert calls[0] == 2 and not model.training  # one forward per micro-batch, eval mode for no-grad passes
        grads: dict[str, torch.Tensor] = {}

        def keep_gradients(skip, model=model, grads=grads):
            grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            return 0.0, True

        updater.step = keep_gradients
        rows = actor.update(TrainBatch(batch.rollout, batch.advantages, old, None))
        assert model.training
        # two micro-batches: forward only, or forward plus the recomputation in backward
        results[checkpointing] = (calls[0] - 2, old, grads, rows[0]["actor/pg_loss"])
    assert results[False][0] == 2 and results[True][0] == 4
    assert torch.equal(results[False][1], results[True][1])
    assert results[False][3] == pytest.approx(results[True][3], abs=1e-7)
    for name, grad in results[False][2].items():
        assert torch.allclose(grad, results[True][2][name], atol=1e-6, rtol=1e-5), name


def test_bf16_trains_with_fp32_master_weights_at_the_recipes_learning_rate(tiny_text_dir):
    """10 steps at lr 1e-6: with fp32 masters and bf16 autocast the parameters move as in fp32 (every element that
    gets a gradient, mean movement within 10%); plain bf16 parameters barely move (the bug this prevents)."""
    processor = load_processor(tiny_text_dir)
    batch = sample_train_batch(processor, with_images=False)
    batch = TrainBatch(batch.rollout, batch.advantages, None, None)

    def train(model, precision: Precision):
        updater = TorchUpdater(
            DistContext(), PolicyLogprobs(model), lr=1e-6, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=1.0, warmup=0
        )
        actor = Actor(updater, get_policy_loss("gmpo"), SETTINGS, precision=precision)
        start = {n: p.detach().float().clone() for n, p in model.named_parameters()}
        for _ in range(10):
            actor.update(batch)
        deltas = {n: (p.detach().float() - start[n]).abs() for n, p in model.named_parameters()}
        layers = [n for n in deltas if ".layers." in n]  # every decoder weight gets a gradient
        moved = sum(int((deltas[n] > 0).sum()) for n in layers) / sum(deltas[n].numel() for n in layers)
        mean = sum(float(deltas[n].sum()) for n in layers) / sum(deltas[n].numel() for n in layers)
        return moved, mean

    fp32_model, fp32 = _policy(tiny_text_dir, False, "float32")
    bf16_model, bf16 = _policy(tiny_text_dir, False, "bfloat16")
    assert bf16.param_dtype == torch.float32 and bf16.compute_dtype == torch.bfloat16
    assert next(bf16_model.parameters()).dtype == torch.float32
    moved_fp32, mean_fp32 = train(fp32_model, fp32)
    moved_bf16, mean_bf16 = train(bf16_model, bf16)
    assert moved_fp32 > 0.99 and moved_bf16 > 0.99
    assert mean_bf16 == pytest.approx(mean_fp32, rel=0.1)
    plain = _policy(tiny_text_dir, False, "float32")[0].to(torch.bfloat16)  # what dtype: bfloat16 did before
    moved_plain, mean_plain = train(plain, Precision(torch.bfloat16, torch.bfloat16, "cpu"))
    assert moved_plain < 0.2 and mean_plain < 0.2 * mean_fp32
