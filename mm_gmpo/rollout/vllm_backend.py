"""Colocated vLLM engine (one per training process): images as ``multi_modal_data``, weights synced after updates.

The prompt tokens of the :class:`RolloutBatch` come from our own processor (the trainer recomputes log-probs on
exactly those); vLLM's expanded prompt must equal them, which is checked on every call (a different image resize
rule would silently shift the image). Suppressed tokens are excluded with ``allowed_token_ids`` (an exact -inf
mask), and the engine runs with ``logprobs_mode="processed_logprobs"`` so the returned log-prob of each sampled
token is that of the distribution it was drawn from (after temperature, the mask, top-k/top-p).

Weight sync: ``collective_rpc("reload_weights")`` with the Hugging Face state dict (the in-place reload path;
``load_weights`` on the model fails on CPU, whose linear weights are repacked). On CPU this needs the in-process
engine: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and ``distributed_executor_backend="uni"``, set here. Sleep mode
(freeing weights and KV cache during the update) exists on CUDA only; elsewhere ``sleep``/``wake`` do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from pathlib import Path

import torch

from mm_gmpo.errors import UserError, require
from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.batching import (
    assemble_batch,
    cut_at_stop,
    encode_prompts,
    model_vocab_size,
    stop_token_ids,
    suppressed_token_ids,
)
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)


def _gathered(model: torch.nn.Module):
    """Context in which a ZeRO-3 partitioned model has its full parameters (no-op for a plain model)."""
    params = list(model.parameters())
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def _patch_image_only_processor(model_path: str) -> None:
    """Where torchvision is missing (our CPU machines), run vLLM's Qwen2.5-VL on the PIL image processor.

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
    from vllm.model_executor.models import qwen2_5_vl, registry

    from mm_gmpo.models import load_processor

    # vLLM inspects model classes in a fresh interpreter (to keep CUDA uninitialised there), which would not
    # have the stand-in module; without CUDA there is nothing to protect, so inspect in this process.
    registry._run_in_subprocess = lambda fn: fn()

    cache: dict = {}

    def get_hf_processor(self, **kwargs):
        if "processor" not in cache:
            cache["processor"] = load_processor(model_path)
        return cache["processor"]

    qwen2_5_vl.Qwen2_5_VLProcessingInfo.get_hf_processor = get_hf_processor
    qwen2_5_vl.Qwen2_5_VLProcessingInfo.get_supported_mm_limits = lambda self: {"image": None}  # no video here
    log.info("torchvision is not importable: vLLM uses the PIL image processor and the image-only processor")


class VLLMRollout:
    """A vLLM ``LLM`` beside the training model in this process."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        *,
        model_path: str | None = None,
        gpu_memory_utilization: float = 0.5,
        enable_sleep: bool = True,
        max_model_len: int | None = None,
        max_images_per_prompt: int = 4,
        dtype: torch.dtype | None = None,
    ):
        """``dtype``: the engine's (the policy's compute dtype: bf16 for a run whose fp32 master weights stay in the
        trainer); default the parameters' dtype."""
        on_cuda = torch.cuda.is_available()
        if not on_cuda:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        vllm = require("vllm", "rollout.backend=vllm", "pip install -e .[gpu]")
        path = model_path or getattr(model, "name_or_path", "") or model.config._name_or_path
        if not path or not Path(path).exists() and "/" not in path:
            raise UserError(f"rollout.backend=vllm needs the model's checkpoint folder or hub id, got {path!r}")
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.is_vision = hasattr(processor, "image_processor")
        if self.is_vision:
            _patch_image_only_processor(path)
        self.sleep_enabled = enable_sleep and on_cuda
        self.asleep = False
        dtype = dtype or next(model.parameters()).dtype
        config_len = getattr(model.config.get_text_config(), "max_position_embeddings", 8192)
        kwargs = dict(
            model=str(path),
            dtype=str(dtype).removeprefix("torch."),
            seed=0,
            logprobs_mode="processed_logprobs",
            max_model_len=max_model_len or min(config_len, 8192),
            enable_sleep_mode=self.sleep_enabled,
            enable_prefix_caching=False,
        )
        if self.is_vision:
            kwargs["limit_mm_per_prompt"] = {"image": max_images_per_prompt, "video": 0}
            size = self.processor.image_processor.size
            kwargs["mm_processor_kwargs"] = {
                "min_pixels": size.get("shortest_edge"),
                "max_pixels": size.get("longest_edge"),
            }
        if on_cuda:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            kwargs.update(enforce_eager=True, distributed_executor_backend="uni")
        self.llm = vllm.LLM(**kwargs)
        self._vllm = vllm
        self.vocab_size = model_vocab_size(model)
        suppressed = set(suppressed_token_ids(self.tokenizer, self.vocab_size).tolist())
        self.allowed_token_ids = [i for i in range(len(self.tokenizer)) if i not in suppressed]
        self.sync_weights(model)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy the training model's current weights into the engine (in place; caches of old weights dropped)."""
        self.wake()
        with _gathered(model), torch.no_grad():
            weights = [(name, t.detach()) for name, t in model.state_dict().items()]
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        # The worker dropped its encoder and multimodal caches with the old weights; the scheduler and the input
        # processor must forget theirs too, or they point at embeddings that no longer exist.
        engine = self.llm.llm_engine
        if hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Offload the weights and drop the KV cache (level 1) until :meth:`wake`; CUDA only."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> RolloutBatch:
        self.wake()
        encoded = encode_prompts(self.processor, prompts)
        stops = stop_token_ids(self.tokenizer)
        requests, params = [], []
        for g, prompt in enumerate(prompts):
            request = {"prompt": prompt.text}
            if prompt.images:
                request["multi_modal_data"] = {"image": list(prompt.images)}
            requests.append(request)
            params.append(
                self._vllm.SamplingParams(
                    n=n,
                    temperature=max(sampling.temperature, 0.0),
                    top_p=sampling.top_p,
                    top_k=sampling.top_k if sampling.top_k > 0 else 0,
                    max_tokens=sampling.max_new_tokens,
                    seed=(sampling.seed * 1_000_003 + (sampling.first_prompt + g) * 9_973) % (2**31),
                    logprobs=0,
                    stop_token_ids=stops,
                    allowed_token_ids=self.allowed_token_ids,
                    skip_special_tokens=True,
                )
            )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        responses, logprobs, reasons = [], [], []
        for g, out in enumerate(outputs):
            self._check_prompt(g, out.prompt_token_ids, encoded)
            for completion in out.outputs:
                tokens, reason = cut_at_stop(list(completion.token_ids), set(stops))
                token_logprobs = [
                    float(step[tok].logprob)
                    for step, tok in zip(completion.logprobs[: len(tokens)], tokens, strict=True)
                ]
                responses.append(tokens)
                logprobs.append(token_logprobs)
                reasons.append(reason)
        suppressed = suppressed_token_ids(self.tokenizer, self.vocab_size)
        return assemble_batch(
            self.processor, encoded, prompts, n, responses, logprobs, reasons, suppressed=suppressed, sampling=sampling
        )

    @staticmethod
    def _check_prompt(g: int, vllm_ids, encoded) -> None:
        ours = encoded.input_ids[g][encoded.attention_mask[g].bool()].tolist()
        if list(vllm_ids) != ours:
            raise RuntimeError(
                f"vLLM expanded prompt {g} to {len(vllm_ids)} tokens, our processor to {len(ours)}: the image "
                "resize settings differ (min_pixels/max_pixels), so the trainer would score other positions"
            )
