"""Colocated vLLM engine (one per training process): images as ``multi_modal_data``, weights streamed in after updates.

Placement: under torchrun/deepspeed (a process group exists) every training process builds its own engine with
vLLM's ``external_launcher`` executor, which puts it on that process's device (``LOCAL_RANK``) and joins the
training processes' group instead of spawning workers. With ``tensor_parallel_size`` k > 1, consecutive groups of
k processes share one engine sharded over their k GPUs: the group gathers its members' prompts, samples them once
(every member computes the same tokens: same prompts, same per-request seeds) and each member keeps its own rows.
Alone (one process, no group), the in-process ``uni`` executor. The engine always runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights reach it as tensors on the device, never through host memory.

The prompt tokens of the :class:`RolloutBatch` come from our own processor (the trainer recomputes log-probs on
exactly those); vLLM's expanded prompt must equal them, which is checked on every call (a different image resize
rule would silently shift the image). Suppressed tokens are excluded with a ``logit_bias`` of -inf on each of them
(an exact mask: :func:`suppression_logit_bias`; ``allowed_token_ids`` would list the whole rest of the vocabulary,
which vLLM 0.32's GPU model runner refuses above 1024 ids), and the engine runs with ``logprobs_mode="processed_logprobs"`` so the returned log-prob of each sampled
token is that of the distribution it was drawn from (after temperature, the mask, top-k/top-p).

Weight sync (:meth:`VLLMRollout.sync_weights`): one ``reload_weights`` call (vLLM's in-place reload, which also
works on CPU where linear weights are repacked) consumes :func:`~mm_gmpo.rollout.weight_sync.stream_weights`, a
generator that gathers ZeRO-3 parameters one bucket at a time. A LoRA policy sends merged weights.

Memory around the update: :meth:`sleep` after sampling (level 1 offloads the weights to host memory, level 2
drops them: every wake is followed by a full sync) and empties the allocator cache, so the old/reference log-prob
passes and the update have the GPU; :meth:`sync_weights` wakes the weights only, loads, empties the cache again
and only then wakes the KV cache. On CPU, vLLM's workers accept sleep/wake and do nothing (no memory pool), so the
same calls run there.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from mm_gmpo.errors import UserError, require
from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.batching import (
    encode_prompts,
    model_vocab_size,
    sampled_batch,
    stop_token_ids,
    suppressed_token_ids,
)
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams
from mm_gmpo.rollout.weight_sync import SyncStats, stream_weights
from mm_gmpo.seeds import derive_seed
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)

SLEEP_LEVELS = (0, 1, 2)
# vLLM 0.32's GPU model runner (V2, the default on CUDA) holds per-request logit biases in fixed tables:
# MAX_NUM_LOGIT_BIAS_TOKENS and MAX_NUM_ALLOWED_TOKEN_IDS in vllm/v1/worker/gpu/sample/logit_bias.py. The CPU
# platform's runner (V1) has no such limit, so only this check stands between a CPU-tested request and a GPU refusal.
VLLM_MAX_LOGIT_BIAS_TOKENS = 1024


def suppression_logit_bias(suppressed: list[int]) -> dict[int, float]:
    """{token id: -inf} for the ids sampling must never draw (vision placeholders, the LM head's padding rows): the
    same exact exclusion as the HF backend's ``index_fill_(-inf)``, within V2's table size."""
    if len(suppressed) > VLLM_MAX_LOGIT_BIAS_TOKENS:
        raise UserError(
            f"{len(suppressed)} token ids to suppress (vision tokens and the LM head's rows past the tokenizer): "
            f"vLLM's GPU runner takes at most {VLLM_MAX_LOGIT_BIAS_TOKENS} logit-bias ids per request"
        )
    return {int(i): float("-inf") for i in suppressed}


def _token_logprobs(completion) -> list[float]:
    """The log-prob of each sampled token of a vLLM completion (``logprobs=0``: the sampled token's entry only)."""
    tokens = completion.token_ids
    return [float(step[tok].logprob) for step, tok in zip(completion.logprobs[: len(tokens)], tokens, strict=True)]


@dataclass(frozen=True)
class VLLMSettings:
    """How the colocated engine is built and fed (the ``rollout.vllm_*`` keys)."""

    gpu_memory_utilization: float = 0.5  # the engine's share of the GPU while awake (weights + KV cache)
    tensor_parallel_size: int = 1  # processes (GPUs) per engine
    sync_bucket_mb: int = 512  # weight-sync bucket: about the extra memory of a sync
    sleep_level: int = 2  # 0: never sleep; 1: offload weights to host memory; 2: drop them (re-synced on wake)
    seed: int = 0  # the engine seed of data-parallel group g is seed + g
    max_model_len: int | None = None
    max_images_per_prompt: int = 4

    def __post_init__(self):
        if self.sleep_level not in SLEEP_LEVELS:
            raise UserError(f"rollout.vllm_sleep_level={self.sleep_level} is not one of {SLEEP_LEVELS}")
        if self.sync_bucket_mb < 1:
            raise UserError(f"rollout.vllm_sync_bucket_mb={self.sync_bucket_mb} must be at least 1")


def _empty_cache() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _placement(tensor_parallel_size: int) -> tuple[str, int, int]:
    """(executor backend, data-parallel group index, processes) of this process."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if tensor_parallel_size != 1:
            raise UserError(
                f"rollout.vllm_tensor_parallel_size={tensor_parallel_size} needs that many processes "
                "(torchrun/deepspeed), this is a single process"
            )
        return "uni", 0, 1
    world = dist.get_world_size()
    if tensor_parallel_size < 1 or world % tensor_parallel_size:
        raise UserError(
            f"rollout.vllm_tensor_parallel_size={tensor_parallel_size} must divide the {world} training processes"
        )
    return "external_launcher", dist.get_rank() // tensor_parallel_size, world


def _patch_image_only_processor(model_path: str) -> None:
    """Where torchvision is missing (our CPU machines), run vLLM's Qwen2.5-VL and Qwen3-VL on the PIL image
    processor.

    vLLM imports ``smart_resize`` from transformers' torchvision image-processor module and builds the stock
    processor (which needs a video processor, hence torchvision). This reaches into vLLM 0.32 internals and is
    only for CPU development machines. The PIL module has the same ``smart_resize``
    and image processing, so it stands in for that module, and our image-only processor for the stock one.
    A machine with a working torchvision (any GPU install) is left untouched.
    """
    from mm_gmpo.models.processor import torchvision_available

    if torchvision_available():
        return
    import sys

    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil_module

    name = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    if name not in sys.modules:
        shim = types.ModuleType(name)
        shim.smart_resize = pil_module.smart_resize
        shim.Qwen2VLImageProcessor = pil_module.Qwen2VLImageProcessorPil
        sys.modules[name] = shim
    from vllm.model_executor.models import qwen2_5_vl, qwen3_vl, registry
    from vllm.multimodal.processing.context import BaseProcessingInfo

    from mm_gmpo.models import load_processor

    # vLLM inspects model classes in a fresh interpreter (to keep CUDA uninitialised there), which would not
    # have the stand-in module; without CUDA there is nothing to protect, so inspect in this process.
    registry._run_in_subprocess = lambda fn: fn()

    cache: dict = {}

    def get_hf_processor(self, **kwargs):
        if "processor" not in cache:
            cache["processor"] = load_processor(model_path)
        return cache["processor"]

    for info in (qwen2_5_vl.Qwen2_5_VLProcessingInfo, qwen3_vl.Qwen3VLProcessingInfo):
        info.get_hf_processor = get_hf_processor
        info.get_supported_mm_limits = lambda self: {"image": None}  # no video here
    # Qwen3-VL's info asks its video processor for keywords and token counts even with no video allowed
    qwen3_info = qwen3_vl.Qwen3VLProcessingInfo
    qwen3_info.get_supported_mm_processor_kwargs = BaseProcessingInfo.get_supported_mm_processor_kwargs
    qwen3_info.get_mm_max_tokens_per_item = lambda self, seq_len, mm_counts: {"image": self.get_max_image_tokens()}
    log.info("torchvision is not importable: vLLM uses the PIL image processor and the image-only processor")


# model types the vLLM backend refuses, and why
UNSUPPORTED_MODEL_TYPES = {
    "qwen3_vl_moe": "Qwen3-VL MoE is not supported yet: vLLM 0.32's expert loader refuses the fused expert weights "
    "as transformers 5 saves them (a shape mismatch in its down projection), so neither a checkpoint of ours nor a "
    "weight sync loads; use rollout.backend=hf",
}


class VLLMRollout:
    """A vLLM ``LLM`` beside the training model in this process (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        *,
        settings: VLLMSettings = VLLMSettings(),
        model_path: str | None = None,
        dtype: torch.dtype | None = None,
    ):
        """``dtype``: the engine's (the policy's compute dtype: bf16 for a run whose fp32 master weights stay in the
        trainer); default the parameters' dtype."""
        if getattr(model.config, "model_type", "") in UNSUPPORTED_MODEL_TYPES:
            raise UserError(f"rollout.backend=vllm: {UNSUPPORTED_MODEL_TYPES[model.config.model_type]}")
        executor, self.dp_group_index, world = _placement(settings.tensor_parallel_size)
        vllm = require("vllm", "rollout.backend=vllm", "pip install -e '.[gpu]'")
        on_cuda = torch.cuda.is_available()
        # the engine core in this process: weights pass as device tensors, and external_launcher requires it
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not on_cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        path = model_path or _checkpoint_path(model)
        if not path or not Path(path).exists() and "/" not in path:
            raise UserError(f"rollout.backend=vllm needs the model's checkpoint folder or hub id, got {path!r}")
        self.settings = settings
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.is_vision = hasattr(processor, "image_processor")
        if self.is_vision:
            _patch_image_only_processor(path)
        self.group = _tensor_parallel_group(settings.tensor_parallel_size, world)
        self.asleep: set[str] = set()  # the tags still asleep: "weights", "kv_cache"
        self.dtype = dtype or next(model.parameters()).dtype
        config_len = getattr(model.config.get_text_config(), "max_position_embeddings", 8192)
        kwargs = dict(
            model=str(path),
            dtype=str(self.dtype).removeprefix("torch."),
            seed=settings.seed + self.dp_group_index,
            logprobs_mode="processed_logprobs",
            max_model_len=settings.max_model_len or min(config_len, 8192),
            enable_prefix_caching=False,
            distributed_executor_backend=executor,
            tensor_parallel_size=settings.tensor_parallel_size,
        )
        if self.is_vision:
            kwargs["limit_mm_per_prompt"] = {"image": settings.max_images_per_prompt, "video": 0}
            size = self.processor.image_processor.size
            kwargs["mm_processor_kwargs"] = {
                "min_pixels": size.get("shortest_edge"),
                "max_pixels": size.get("longest_edge"),
            }
        if on_cuda:
            kwargs.update(
                gpu_memory_utilization=settings.gpu_memory_utilization, enable_sleep_mode=settings.sleep_level > 0
            )
        else:
            # vLLM's CPU runner: a prompt prefilled in chunks has its sampled token discarded and its seeded generator
            # wound back by set_offset, which a CPU generator refuses ("CPU Generator does not use offset", seen at
            # 32 prompts of ~100 tokens): every prompt is prefilled whole there (batches still span several steps)
            kwargs.update(enforce_eager=True, enable_chunked_prefill=False)
        start = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        log.info(
            "vLLM %s engine (%s, tensor parallel %d, engine seed %d) started in %.1f s",
            vllm.__version__, executor, settings.tensor_parallel_size, kwargs["seed"], time.perf_counter() - start,
        )  # fmt: skip
        self._vllm = vllm
        self.vocab_size = model_vocab_size(model)
        self.logit_bias = suppression_logit_bias(suppressed_token_ids(self.tokenizer, self.vocab_size).tolist())
        self.synced_once = False
        self.sync_weights(model)

    # ------------------------------------------------------------------ memory
    def sleep(self) -> None:
        """Free the engine's weights and KV cache until the next sync (no-op at level 0 or when asleep)."""
        if self.settings.sleep_level and not self.asleep:
            self.llm.sleep(level=self.settings.sleep_level)
            self.asleep = {"weights", "kv_cache"}
            _empty_cache()

    def _wake(self, tag: str) -> None:
        if tag in self.asleep:
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def wake(self) -> None:
        """Fully awake (weights, then KV cache). After a level-2 sleep only a sync restores the weights."""
        self._wake("weights")
        self._wake("kv_cache")

    def sync_weights(self, model: torch.nn.Module) -> dict[str, float]:
        """Stream the training model's weights into the engine: wake the weights, load bucket by bucket, empty the
        cache, wake the KV cache. Returns ``perf/weight_sync_s``, ``perf/weight_sync_mb``, the bucket count and
        largest bucket, under ZeRO-3 the most that was gathered at once (``perf/weight_sync_gathered_mb``), and on
        a GPU the peak memory the sync added (``perf/weight_sync_extra_gib``)."""
        start = time.perf_counter()
        self._wake("weights")
        on_cuda = torch.cuda.is_available()
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        stats = SyncStats()
        # frozen tensors (vision parts, a LoRA base) are sent once; later only if the sleep dropped the weights
        skip_frozen = self.synced_once and self.settings.sleep_level != 2
        bucket = self.settings.sync_bucket_mb * 2**20
        weights = stream_weights(model, bucket, self.dtype, stats, skip_frozen=skip_frozen)
        with _quiet_partial_reload(skip_frozen):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.synced_once = True
        # The worker dropped its encoder and multimodal caches with the old weights; the scheduler and the input
        # processor must forget theirs too, or they point at embeddings that no longer exist.
        engine = self.llm.llm_engine
        if hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()
        metrics = {
            "perf/weight_sync_mb": stats.bytes / 2**20,
            "perf/weight_sync_buckets": float(stats.buckets),
            "perf/weight_sync_max_bucket_mb": stats.max_bucket_bytes / 2**20,
        }
        if stats.partitioned:  # ZeRO-3: the most of the model that was ever gathered at once (about one bucket)
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            metrics["perf/weight_sync_gathered_mb"] = stats.max_gathered_numel * itemsize / 2**20
        if on_cuda:
            metrics["perf/weight_sync_extra_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
        _empty_cache()
        self._wake("kv_cache")
        metrics["perf/weight_sync_s"] = time.perf_counter() - start
        self.last_sync_stats = stats
        return metrics

    def close(self) -> None:
        """Shut the engine down now. vLLM's teardown also destroys the default process group, so this comes
        before the trainer's own shutdown (left to interpreter exit, it runs after and fails)."""
        self.llm.llm_engine.engine_core.shutdown()

    # ------------------------------------------------------------------ sampling
    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> RolloutBatch:
        """``n`` responses for each of this process's prompts (its tensor-parallel group samples all members'
        prompts in one call and each member keeps its own)."""
        self.wake()
        members, mine = self._group_prompts(prompts, sampling.first_prompt)
        stops = stop_token_ids(self.tokenizer, sampling.stop_tokens)
        requests, params = [], []
        for first, member_prompts in members:
            for g, prompt in enumerate(member_prompts):
                request = {"prompt": prompt.text}
                if prompt.images:
                    request["multi_modal_data"] = {"image": list(prompt.images)}
                requests.append(request)
                params.append(self._sampling_params(n, sampling, first + g, stops))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        offset = sum(len(p) for _, p in members[:mine])
        outputs = outputs[offset : offset + len(prompts)]
        encoded = encode_prompts(self.processor, prompts)
        for g, out in enumerate(outputs):
            self._check_prompt(g, out.prompt_token_ids, encoded)
        sampled = [(list(c.token_ids), _token_logprobs(c)) for out in outputs for c in out.outputs]
        suppressed = suppressed_token_ids(self.tokenizer, self.vocab_size)
        return sampled_batch(
            self.processor, encoded, prompts, n, sampled, stops, suppressed=suppressed, sampling=sampling
        )

    def _sampling_params(self, n: int, sampling: SamplingParams, prompt_index: int, stops: list[int]):
        """vLLM's sampling parameters of one prompt; its seed depends on the round and the prompt's global index
        only, so a prompt samples the same responses on whichever process (or tensor-parallel group) holds it.
        With ``rollout.stop_tokens`` set, the listed tokens and only they end a response (``ignore_eos``: not the
        model's own EOS unless listed), as in the HF backend."""
        extra = {"ignore_eos": True} if sampling.stop_tokens is not None else {}
        return self._vllm.SamplingParams(
            n=n,
            temperature=max(sampling.temperature, 0.0),
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else 0,
            max_tokens=sampling.max_new_tokens,
            seed=derive_seed(sampling.seed, "prompt", prompt_index, bits=31),
            logprobs=0,
            stop_token_ids=stops,
            logit_bias=self.logit_bias,
            skip_special_tokens=True,
            **extra,
        )

    def _group_prompts(self, prompts: list[Prompt], first_prompt: int) -> tuple[list[tuple[int, list[Prompt]]], int]:
        """[(first global prompt index, prompts)] of every member of this process's tensor-parallel group, in
        group-rank order, and this process's place in it. The place is the group rank, not a search for this
        process's ``first_prompt``: two members may pass the same one (validation's shares are not numbered like
        a round's), and a search would hand both the first member's responses."""
        if self.group is None:
            return [(first_prompt, prompts)], 0
        import torch.distributed as dist

        gathered: list = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(gathered, (first_prompt, prompts), group=self.group)
        return [(first, list(member)) for first, member in gathered], dist.get_rank(self.group)

    @staticmethod
    def _check_prompt(g: int, vllm_ids, encoded) -> None:
        ours = encoded.input_ids[g][encoded.attention_mask[g].bool()].tolist()
        if list(vllm_ids) != ours:
            raise RuntimeError(
                f"vLLM expanded prompt {g} to {len(vllm_ids)} tokens, our processor to {len(ours)}: the image "
                "resize settings differ (min_pixels/max_pixels), so the trainer would score other positions"
            )


@contextlib.contextmanager
def _quiet_partial_reload(partial: bool):
    """vLLM's in-place reload warns once per layer it was sent nothing for (and keeps that layer's weights, which
    is what a partial sync wants): silence that logger while a partial sync runs."""
    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    level = logger.level
    if partial:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _checkpoint_path(model: torch.nn.Module) -> str:
    """Where the policy was loaded from (a peft model: its base model's folder)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "name_or_path", "") or base.config._name_or_path


def _tensor_parallel_group(size: int, world: int):
    """This process's group of ``size`` consecutive ranks (gloo: it carries pickled prompts); None when 1.

    Every process creates every group, in the same order, as ``torch.distributed.new_group`` requires."""
    if size == 1:
        return None
    import torch.distributed as dist

    mine = None
    for start in range(0, world, size):
        group = dist.new_group(list(range(start, start + size)), backend="gloo")
        if start <= dist.get_rank() < start + size:
            mine = group
    return mine
