"""model.freeze_vision_tower / model.freeze_merger: frozen parameters keep their weights, the optimizer holds none
of them, and the weight sync leaves them out once the sampler has them."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_dir

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError
from mm_gmpo.models import load_processor
from mm_gmpo.rollout.weight_sync import stream_weights
from mm_gmpo.testing.batches import sample_train_batch
from mm_gmpo.trainer.actor import Actor
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.policy import PolicyLogprobs
from mm_gmpo.trainer.precision import resolve_precision
from mm_gmpo.trainer.setup import build_policy
from mm_gmpo.trainer.update import UpdateSettings

SETTINGS = UpdateSettings(
    temperature=1.0, chunk_size=512, micro_batch_size=6, updates_per_round=1, sequences_per_step=6
)


def _policy(folder, *overrides: str):
    cfg = load_config(None, [f"model.path={folder}", *overrides])
    precision = resolve_precision(cfg.model.dtype, deepspeed=False, device=torch.device("cpu"))
    return build_policy(cfg, str(folder), precision)


def _train_steps(model, processor, steps: int = 2):
    batch = sample_train_batch(processor, with_images=True)
    updater = TorchUpdater(
        DistContext(), PolicyLogprobs(model), lr=1e-2, betas=[0.9, 0.95], weight_decay=0.1, grad_clip=0.0, warmup=0
    )
    actor = Actor(updater, get_policy_loss("gmpo"), SETTINGS)
    for _ in range(steps):
        actor.update(batch)
    return updater


@pytest.mark.parametrize(
    ("kind", "switches", "frozen_part"),
    [
        ("qwen2_5_vl", ["model.freeze_vision_tower=true"], "tower"),
        ("qwen2_5_vl", ["model.freeze_merger=true"], "merger"),
        ("qwen3_vl", ["model.freeze_merger=true"], "merger"),  # its DeepStack mergers are mergers too
    ],
)
def test_frozen_parts_keep_their_weights_and_are_not_in_the_optimizer(kind, switches, frozen_part, request):
    folder = tiny_dir(request, kind)
    processor = load_processor(folder, min_pixels=3136, max_pixels=12544)
    model = _policy(folder, *switches)
    names = dict(model.named_parameters())
    merger = {n for n in names if ".visual.merger." in n or ".visual.deepstack_merger_list." in n}
    tower = {n for n in names if ".visual." in n} - merger
    frozen = tower if frozen_part == "tower" else merger
    assert frozen and all(not names[n].requires_grad for n in frozen)
    assert all(p.requires_grad for n, p in names.items() if n not in frozen)
    before = {n: p.detach().clone() for n, p in names.items()}
    updater = _train_steps(model, processor)
    held = {id(p) for group in updater.optimizer.param_groups for p in group["params"]}
    assert not held & {id(names[n]) for n in frozen}  # no AdamW state for a frozen parameter
    assert all(torch.equal(names[n], before[n]) for n in frozen)  # weight decay 0.1 would move them otherwise
    trained = [n for n in names if n not in frozen and not torch.equal(names[n], before[n])]
    assert any(".language_model." in n for n in trained)
    assert any(n in trained for n in (merger if frozen_part == "tower" else tower))

    sent_once = dict(stream_weights(model, 1 << 20, torch.float32))
    later = dict(stream_weights(model, 1 << 20, torch.float32, skip_frozen=True))
    assert {n for n in sent_once if n not in later} == frozen and set(later) < set(sent_once)


def test_lora_sync_after_the_first_sends_only_the_merged_weights(tiny_vl_dir):
    pytest.importorskip("peft")
    model = _policy(tiny_vl_dir, "model.lora.enabled=true", "model.lora.target_modules=[q_proj,v_proj]")
    later = dict(stream_weights(model, 1 << 20, torch.float32, skip_frozen=True))
    assert later and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in later)
    assert all(".visual." not in n for n in later)  # the ViT's attention is a fused qkv: no LoRA there


def test_freezing_a_text_model_is_refused(tiny_text_dir):
    with pytest.raises(UserError, match="no vision tower"):
        _policy(tiny_text_dir, "model.freeze_vision_tower=true")
