"""`RolloutEngine`: one interface over the HF and vLLM backends, plus the rollout metrics.

The HF backend samples with the training model itself (nothing to sync, nothing to put to sleep). The vLLM
backend keeps its own copy of the weights in a colocated engine: ``sync_weights`` after every update, and
``sleep``/``wake`` around the update where the platform supports it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from mm_gmpo.errors import UserError
from mm_gmpo.rollout.hf import hf_generate
from mm_gmpo.rollout.types import RolloutBatch, SamplingParams
from mm_gmpo.types import Prompt

log = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")


def rollout_metrics(batch: RolloutBatch, seconds: float | None = None) -> dict[str, float]:
    """Response length mean/max (tokens), fraction cut at the limit, vision tokens per row, tokens per second."""
    lengths = batch.response_mask.sum(dim=1).double()
    rows = max(batch.num_rows, 1)
    metrics = {
        "response_length/mean": float(lengths.mean()) if batch.num_rows else 0.0,
        "response_length/max": float(lengths.max()) if batch.num_rows else 0.0,
        "response_length/clip_frac": sum(r == "length" for r in batch.finish_reason) / rows,
        "rollout/vision_tokens_per_sample": float(batch.num_vision_tokens.double().mean()) if batch.num_rows else 0.0,
    }
    if seconds is not None:
        metrics["rollout/tokens_per_s"] = float(lengths.sum()) / max(seconds, 1e-9)
    return metrics


def vllm_settings(config: Any, seed: int = 0, max_model_len: int | None = None):
    """:class:`~mm_gmpo.rollout.vllm_backend.VLLMSettings` from the ``rollout.vllm_*`` keys (defaults without);
    ``max_model_len``: the engine's context (prompt + response), None: the model's, at most 8192."""
    from mm_gmpo.rollout.vllm_backend import VLLMSettings

    defaults = VLLMSettings()
    sleep_level = getattr(config, "vllm_sleep_level", defaults.sleep_level)
    return VLLMSettings(
        gpu_memory_utilization=getattr(config, "vllm_gpu_memory_utilization", defaults.gpu_memory_utilization),
        tensor_parallel_size=getattr(config, "vllm_tensor_parallel_size", defaults.tensor_parallel_size),
        sync_bucket_mb=getattr(config, "vllm_sync_bucket_mb", defaults.sync_bucket_mb),
        sleep_level=sleep_level if getattr(config, "vllm_sleep", True) else 0,
        seed=seed,
        max_model_len=max_model_len,
    )


class RolloutEngine:
    """Samples ``n`` responses per prompt with the chosen backend (``hf`` or ``vllm``)."""

    def __init__(
        self,
        backend: str,
        model: torch.nn.Module,
        processor,
        *,
        config: Any = None,
        synced: bool = False,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
    ):
        """``synced``: the policy's parameters are partitioned over processes (ZeRO-3); see ``hf_generate``.
        ``dtype``: the compute dtype (vLLM's engine dtype; HF generation runs in the caller's autocast).
        ``seed``: vLLM's engine seed (plus the data-parallel group index); requests carry their own seeds.
        ``max_model_len``: vLLM's context length (prompt + response; None: the model's, at most 8192); the HF
        backend has no such limit, its callers cap each prompt's ``max_new_tokens`` instead."""
        if backend not in BACKENDS:
            raise UserError(f"rollout.backend={backend!r} is not one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.model = model
        self.processor = processor
        self.synced = synced
        self._vllm = None
        if backend == "vllm":
            from mm_gmpo.rollout.vllm_backend import VLLMRollout

            settings = vllm_settings(config, seed, max_model_len)
            self._vllm = VLLMRollout(model, processor, settings=settings, dtype=dtype)

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> RolloutBatch:
        """``n`` responses per prompt; rows ``g*n .. g*n+n-1`` belong to prompt g (``group_index`` g)."""
        if n < 1:
            raise UserError(f"rollout.n={n} must be at least 1")
        if not prompts:
            raise UserError("no prompts to roll out (was every prompt dropped as too long?)")
        start = time.perf_counter()
        if self._vllm is not None:
            batch = self._vllm.generate(prompts, n, sampling)
        else:
            batch = hf_generate(self.model, self.processor, prompts, n, sampling, synced=self.synced)
        batch.generation_seconds = time.perf_counter() - start
        log.debug("rolled out %d rows in %.2f s", batch.num_rows, batch.generation_seconds)
        return batch

    def metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Metrics of ``batch`` (see :func:`rollout_metrics`)."""
        return rollout_metrics(batch, batch.generation_seconds or None)

    def sync_weights(self, model: torch.nn.Module) -> dict[str, float]:
        """Copy the training model's weights into the sampler; its ``perf/weight_sync_*`` metrics (none for hf: it
        samples with that model)."""
        if self._vllm is not None:
            return self._vllm.sync_weights(model)
        self.model = model
        return {}

    def sleep(self) -> None:
        """Free the sampler's memory for the log-prob passes and the update (vLLM; no-op for hf)."""
        if self._vllm is not None:
            self._vllm.sleep()

    def close(self) -> None:
        """Release the sampler (vLLM: shut the engine down, before the process group goes)."""
        if self._vllm is not None:
            self._vllm.close()
            self._vllm = None
