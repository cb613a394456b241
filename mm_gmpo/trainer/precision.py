"""Which dtype the policy's parameters hold and which dtype its matmuls run in.

A bf16 run needs fp32 master weights: at the recipes' learning rate of 1e-6, AdamW's step on a bf16 parameter is
mostly below bf16's resolution and rounds away (measured on CPU: 1.9% of the elements moved after 10 steps,
against all of them with fp32 masters). So:
- without DeepSpeed, the policy and AdamW's states stay fp32 and the forward passes (rollout, log-probs, update)
  run under bf16 autocast;
- with DeepSpeed on a GPU, the parameters are bf16 and DeepSpeed's bf16 mode keeps the fp32 masters and optimizer
  states in its ZeRO partitions (``trainer.engine.load_deepspeed_config`` switches it on);
- fp32 (``dtype: auto`` on a CPU) is fp32 everywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from mm_gmpo.errors import UserError
from mm_gmpo.models.loading import resolve_dtype


@dataclass(frozen=True)
class Precision:
    param_dtype: torch.dtype  # the policy's parameters (what from_pretrained loads, what AdamW steps)
    compute_dtype: torch.dtype  # the forward's matmuls
    device_type: str  # "cuda" or "cpu" (autocast's device)

    @property
    def autocast_needed(self) -> bool:
        return self.compute_dtype != self.param_dtype

    def autocast(self) -> AbstractContextManager:
        """The context every forward of the policy runs in."""
        if not self.autocast_needed:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute_dtype)


def resolve_precision(dtype: str, *, deepspeed: bool, device: torch.device) -> Precision:
    """``model.dtype`` (auto: bf16 on a GPU, fp32 on a CPU) -> where the fp32 masters live (see the module doc)."""
    compute = resolve_dtype(dtype)
    if compute == torch.float32:
        return Precision(torch.float32, torch.float32, device.type)
    if deepspeed and device.type == "cuda":
        return Precision(compute, compute, device.type)  # DeepSpeed's bf16 mode holds the fp32 masters
    if compute == torch.float16:
        raise UserError(
            "model.dtype=float16 without DeepSpeed would train without loss scaling: use bfloat16, or fp16 "
            "through a DeepSpeed JSON with its fp16 section"
        )
    return Precision(torch.float32, compute, device.type)
