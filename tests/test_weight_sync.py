"""Weight sync into a sampler (no vLLM needed): what is sent, in which buckets, LoRA merged, ZeRO-3 gathered one
bucket at a time (that one in tests/test_deepspeed_skip.py, on its ZeRO-3 engine); the reference offload; the vLLM
settings refused before an engine is built.

The engine side (vLLM loading these tensors, 2 processes, tensor parallelism) is scripts/check_vllm.sh.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mm_gmpo.errors import UserError
from mm_gmpo.models import load_model, load_processor
from mm_gmpo.rollout.weight_sync import SyncStats, stream_weights, sync_buckets, sync_tensors

REPO = Path(__file__).resolve().parents[1]


def test_sync_sends_every_state_dict_tensor_in_order_and_in_module_buckets(tiny_vl_dir):
    model = load_model(tiny_vl_dir, "float32")
    state = model.state_dict()
    stats = SyncStats()
    bucket = 256 * 1024
    sent = list(stream_weights(model, bucket, torch.bfloat16, stats))
    names = [name for name, _ in sent]
    # tied lm_head included: vLLM's in-place reload rebuilds every layer from what it is sent
    assert sorted(names) == sorted(state) and len(names) == len(set(names))
    assert model.lm_head.weight is model.get_input_embeddings().weight and "lm_head.weight" in names
    for name, value in sent:
        assert value.dtype == torch.bfloat16 and torch.equal(value, state[name].to(torch.bfloat16)), name
    assert stats.tensors == len(state) and stats.bytes == sum(v.numel() * 2 for _, v in sent)

    buckets = sync_buckets(sync_tensors(model), bucket, 2)
    assert len(buckets) == stats.buckets > 4
    owner = {}
    for i, b in enumerate(buckets):
        size = sum(t.numel() for t in b) * 2
        modules = {t.name.rpartition(".")[0] for t in b}
        assert size <= bucket or len(modules) == 1, (i, size, modules)  # only a single module may exceed a bucket
        for module in modules:
            assert owner.setdefault(module, i) == i, f"{module} split over buckets"
    assert [t.name for b in buckets for t in b] == names  # model order


def test_lora_sync_sends_merged_weights_under_the_base_names(tiny_text_dir):
    peft = pytest.importorskip("peft")
    base = load_model(tiny_text_dir, "float32")
    model = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    sent = dict(stream_weights(model, 1 << 20, torch.float32))
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert sorted(sent) == sorted(merged)  # no adapter tensor, no peft prefix
    changed = [name for name in sent if not torch.equal(sent[name], base.state_dict()[name])]
    assert changed and all(("q_proj" in n or "v_proj" in n) and n.endswith(".weight") for n in changed)
    for name, value in sent.items():
        torch.testing.assert_close(value, merged[name], rtol=0, atol=1e-6)


def test_reference_offload_runs_on_the_device_and_returns_to_host_memory(tiny_vl_dir):
    from mm_gmpo.testing.batches import sample_train_batch
    from mm_gmpo.testing.device_emulation import EMULATED, emulated_device, is_emulated
    from mm_gmpo.trainer.actor import no_grad_logprobs
    from mm_gmpo.trainer.offload import OffloadedModule
    from mm_gmpo.trainer.plan import plan_round
    from mm_gmpo.trainer.update import UpdateSettings

    processor = load_processor(tiny_vl_dir)
    reference = load_model(tiny_vl_dir, "float32", "eager")
    batch = sample_train_batch(processor, with_images=True).rollout
    settings = UpdateSettings(
        temperature=1.0, chunk_size=64, micro_batch_size=4, updates_per_round=1, sequences_per_step=batch.num_rows
    )
    plan = plan_round(batch, settings)
    expected = no_grad_logprobs(reference, batch, plan, settings)
    with emulated_device():
        offloaded = OffloadedModule(reference, EMULATED)
        with offloaded.on_device() as on_gpu:
            assert all(is_emulated(p) for p in on_gpu.parameters())
            got = no_grad_logprobs(on_gpu, batch, plan, settings)
        assert not any(is_emulated(p) for p in reference.parameters())
        assert reference.lm_head.weight is reference.get_input_embeddings().weight  # still tied
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_vllm_settings_are_refused_before_an_engine_is_built(tiny_vl_dir):
    from mm_gmpo.rollout.vllm_backend import VLLMRollout, VLLMSettings

    model = load_model(tiny_vl_dir, "float32")
    processor = load_processor(tiny_vl_dir)
    with pytest.raises(UserError, match="vllm_sleep_level=3"):
        VLLMRollout(model, processor, settings=VLLMSettings(sleep_level=3))
    with pytest.raises(UserError, match="vllm_sync_bucket_mb=0"):
        VLLMRollout(model, processor, settings=VLLMSettings(sync_bucket_mb=0))
    with pytest.raises(UserError, match="vllm_tensor_parallel_size=2 needs that many processes"):
        VLLMRollout(model, processor, settings=VLLMSettings(tensor_parallel_size=2))


def test_check_config_names_the_vllm_keys():
    from mm_gmpo.config import Config
    from mm_gmpo.trainer.setup import check_config

    cfg = Config()
    cfg.rollout.backend = "vllm"
    cfg.rollout.prompts_per_round = 6
    cfg.trainer.max_steps = cfg.trainer.save_every = 0
    cfg.trainer.max_steps = 2
    cfg.rollout.vllm_tensor_parallel_size = 4
    with pytest.raises(UserError, match="vllm_tensor_parallel_size=4 must divide the 6"):
        check_config(cfg, 6)
    cfg.rollout.vllm_tensor_parallel_size = 2
    cfg.rollout.vllm_sleep_level = 5
    with pytest.raises(UserError, match="vllm_sleep_level=5"):
        check_config(cfg, 6)


def test_reference_offload_packs_one_flat_host_buffer(tiny_vl_dir, monkeypatch):
    """The offloaded reference lives in one flat host buffer (views into it; tied weights once), so the pinned
    memory on a GPU is the weights' size, not the caching host allocator's power-of-two blocks (up to 2x); the
    buffer is registered once, whole, and the metric reports it."""
    from mm_gmpo.testing.device_emulation import EMULATED, emulated_device
    from mm_gmpo.trainer import offload

    reference = load_model(tiny_vl_dir, "float32", "eager")
    before = {name: t.clone() for name, t in reference.state_dict().items()}
    registered = []
    monkeypatch.setattr(offload, "register_pinned", lambda flat: registered.append(flat.numel()) or (lambda: None))
    with emulated_device():
        offloaded = offload.OffloadedModule(reference, EMULATED, pin=True)
        tensors = offloaded._tensors()
        base = offloaded.flat.untyped_storage().data_ptr()
        assert all(t.untyped_storage().data_ptr() == base for t in tensors)  # every tensor a view of the buffer
        assert registered == [offloaded.flat.numel()] == [offloaded.pinned_bytes]
        assert offloaded.weight_bytes <= offloaded.pinned_bytes <= 1.05 * offloaded.weight_bytes
        assert offloaded.metrics() == {"perf/ref_offload_pinned_gib": offloaded.pinned_bytes / 2**30}
        with offloaded.on_device():
            pass
    after = reference.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # the values survived packing
    assert reference.lm_head.weight is reference.get_input_embeddings().weight
    assert offload.OffloadedModule(load_model(tiny_vl_dir, "float32"), torch.device("cpu")).metrics() == {}
