"""The GPU path on a CPU: every tensor that meets the model or the loss is on the model's device.

The model is put on an emulated ``cuda:0`` (mm_gmpo.testing.device_emulation: real CPU values, CUDA's device
checks), the data comes from the CPU as the loaders make it, and the update, the no-grad passes, the warm start and
`mm-gmpo eval` run through our real code. A batch that nobody moved raises here as it would on a GPU; the first
test shows that the emulation does raise.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.models import load_model, load_processor
from mm_gmpo.testing.batches import sample_prompts, sample_train_batch
from mm_gmpo.testing.device_emulation import EMULATED, DeviceMismatch, emulated_device, is_emulated, to_emulated
from mm_gmpo.trainer.actor import Actor, no_grad_logprobs
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.plan import plan_round
from mm_gmpo.trainer.policy import PolicyLogprobs
from mm_gmpo.trainer.update import UpdateSettings


def _settings(**kw) -> UpdateSettings:
    base = dict(temperature=1.0, chunk_size=4, micro_batch_size=2, updates_per_round=2, sequences_per_step=3)
    return UpdateSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def vl(tiny_vl_dir):
    return tiny_vl_dir, load_processor(tiny_vl_dir, min_pixels=3136, max_pixels=12544)


def test_the_emulation_raises_where_cuda_would(vl):
    folder, processor = vl
    batch = sample_train_batch(processor, with_images=True)
    with emulated_device():
        logprobs = torch.zeros(batch.response_mask.shape, device="cuda")
        assert is_emulated(logprobs) and logprobs.device == EMULATED
        with pytest.raises(DeviceMismatch, match="same device"):  # the bug of issue 19: a mask left on the CPU
            get_policy_loss("gmpo")(logprobs, logprobs, batch.advantages, batch.response_mask)
        moved = batch.to("cuda")
        loss, _ = get_policy_loss("gmpo")(logprobs, moved.old_logprobs, moved.advantages, moved.response_mask)
        assert is_emulated(loss) and float(loss) == pytest.approx(float(loss.cpu()))


@pytest.mark.parametrize("kind,packing", [("vl", False), ("text", False), ("vl", True), ("text", True)])
def test_update_and_no_grad_passes_keep_everything_on_the_model_device(kind, packing, vl, tiny_text_dir):
    folder, processor = vl if kind == "vl" else (tiny_text_dir, load_processor(tiny_text_dir))
    batch = sample_train_batch(processor, with_images=kind == "vl")
    model = load_model(folder, "float32", "eager")  # sdpa would pick CUDA-only kernels for an emulated tensor
    ctx = DistContext(device=EMULATED)
    with emulated_device() as mode:
        to_emulated(model)
        updater = TorchUpdater(
            ctx, PolicyLogprobs(model), lr=1e-3, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=1.0, warmup=0
        )
        before = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
        actor = Actor(updater, get_policy_loss("gmpo"), _settings(kl_coef=0.1, packing=packing), ctx=ctx)
        old = actor.logprobs(batch.rollout)
        assert old.device.type == "cpu" and torch.isfinite(old).all()
        wide = _settings(chunk_size=512, packing=packing)
        ref = no_grad_logprobs(model, batch.rollout, plan_round(batch.rollout, wide), wide)
        assert torch.allclose(old, ref, atol=1e-5)  # chunking changes no value
        rows = actor.update(TrainBatch(batch.rollout, batch.advantages, old, ref))
        assert mode.ops > 1000  # the model really ran on the emulated device
        moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[n])]
    assert [r["actor/skipped"] for r in rows] == [0.0, 0.0]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert moved and all(is_emulated(p) for p in model.parameters())


def test_warm_start_keeps_everything_on_the_model_device(vl):
    from mm_gmpo.trainer.sft import warm_start

    folder, processor = vl
    model = load_model(folder, "float32", "eager")
    with emulated_device():
        to_emulated(model)
        losses = warm_start(
            model, processor, sample_prompts(processor, 4, True), template="geo3k", reasoning="Look.", steps=2, lr=1e-3,
            batch_size=2, seed=0, chunk_size=8,
        )  # fmt: skip
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert model.training  # the warm start trains in train mode


def test_eval_runs_on_the_device(vl, tmp_path, monkeypatch):
    """`mm-gmpo eval --backend hf` moves the model to the device and generates there (per-row generators on it)."""
    import mm_gmpo.rollout.hf as hf
    import mm_gmpo.trainer.dist as dist
    from mm_gmpo import evaluate

    folder, _ = vl
    requested = []

    def generators(sampling, num_prompts, n, device):  # a CUDA generator cannot exist on a CPU build
        requested.append(torch.device(device))
        return [torch.Generator().manual_seed(sampling.seed + i) for i in range(num_prompts * n)]

    monkeypatch.setattr(hf, "row_generators", generators)
    monkeypatch.setattr(dist, "local_device", lambda local_rank=0: EMULATED)
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(
        ["--model", str(folder), "--data", "geometry3k:test", "--limit", "2", "--max-new-tokens", "4",
         "--attn-implementation", "eager", "--output", str(tmp_path)]
    )  # fmt: skip
    with emulated_device() as mode:
        assert evaluate.run(args) == 0
        assert mode.ops > 100
    assert requested and all(d == EMULATED for d in requested)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cuda:0" and summary["sampling"]["max_new_tokens"] == 4
    assert summary["max_pixels"] == load_processor(folder).image_processor.size["longest_edge"]  # its own budget
    item = json.loads((tmp_path / "items-geometry3k_test.jsonl").read_text().splitlines()[0])
    assert item["finish_reasons"][0] in ("stop", "length") and item["response_lengths"][0] >= 1
