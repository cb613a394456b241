"""Streaming the training model's weights into a sampler, bucket by bucket.

What is sent: the Hugging Face checkpoint names and tensors of the policy, as the sampler loads a checkpoint. A
LoRA model (peft) sends its merged weights (``base + B @ A * scaling``) under the base model's names and no
adapter tensors, so the sampler needs no LoRA support.

How: parameters are grouped, in model order and never splitting a module's tensors, into buckets of about
``bucket_bytes`` (in the sampler's dtype; a tensor larger than a bucket is a bucket of its own). Under ZeRO-3 a
bucket's parameters are gathered together and released before the next bucket is gathered, so the model is never
whole on one device: the extra memory of a sync is about one bucket. Every process must walk the same buckets in
the same order (each gather is a collective); :func:`sync_buckets` depends only on the model's structure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class SyncTensor:
    """One tensor the sampler loads: its checkpoint name and the parameters it is computed from."""

    name: str
    params: tuple[torch.nn.Parameter, ...]  # one parameter, or (base, lora_A, lora_B) for a merged LoRA weight
    lora: object | None = None  # the peft LoRA layer whose delta is added to params[0]
    adapter: str = ""

    def numel(self) -> int:
        return full_numel(self.params[0])


@dataclass
class SyncStats:
    """What one sync sent: bytes (sampler dtype), tensors, buckets, and the most elements gathered at once."""

    bytes: int = 0
    tensors: int = 0
    buckets: int = 0
    max_bucket_bytes: int = 0
    max_gathered_numel: int = 0  # ZeRO-3, measured: elements of full (gathered) parameters resident during a bucket
    max_gathered_outside_bucket: int = 0  # of those, elements that do not belong to the bucket being sent
    partitioned: bool = False  # the model's parameters were ZeRO-3 partitioned


def full_numel(param: torch.Tensor) -> int:
    """Elements of the whole parameter (ZeRO-3 keeps only a shard and records the full size in ``ds_numel``)."""
    return int(getattr(param, "ds_numel", param.numel()))


def checkpoint_name(name: str) -> str:
    """The base model's checkpoint name of a (possibly peft-wrapped) parameter name."""
    name = name.removeprefix(PEFT_PREFIX)
    return name.replace(".base_layer.", ".")


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")


def sync_tensors(model: torch.nn.Module) -> list[SyncTensor]:
    """The tensors a sync sends, in model order: every parameter under each of its names, LoRA layers merged.

    A tied parameter (``lm_head.weight`` = the input embedding) is sent under both names, as the state dict has
    it: vLLM's in-place reload rebuilds each layer from what it receives, so a tie it is not sent breaks (the LM
    head would keep the old weights).
    """
    out: list[SyncTensor] = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if ".lora_" in name:  # adapter tensors are merged into their base weight
            continue
        if "modules_to_save" in name or "original_module" in name:
            raise ValueError(f"{name}: peft modules_to_save are not supported by the weight sync")
        module_name, _, leaf = name.rpartition(".")
        owner = (
            model.get_submodule(module_name.removesuffix(".base_layer"))
            if module_name.endswith(".base_layer")
            else None
        )
        if owner is not None and leaf == "weight" and _is_lora_layer(owner):
            adapter = _active_adapter(module_name, owner)
            lora_params = (owner.lora_A[adapter].weight, owner.lora_B[adapter].weight)
            out.append(SyncTensor(checkpoint_name(name), (param, *lora_params), owner, adapter))
        else:
            out.append(SyncTensor(checkpoint_name(name), (param,)))
    return out


def _active_adapter(module_name: str, layer) -> str:
    adapters = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(adapters) != 1:
        raise ValueError(f"{module_name}: the weight sync merges exactly one active LoRA adapter, found {adapters}")
    if getattr(layer, "use_dora", {}).get(adapters[0], False):
        raise ValueError(f"{module_name}: DoRA adapters are not supported by the weight sync")
    return adapters[0]


def sync_buckets(tensors: list[SyncTensor], bucket_bytes: int, itemsize: int) -> list[list[SyncTensor]]:
    """Consecutive groups of about ``bucket_bytes``; the tensors of one module stay in one bucket."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes")
    buckets: list[list[SyncTensor]] = []
    current: list[SyncTensor] = []
    size = 0
    for _, group in _by_module(tensors):
        group_bytes = sum(t.numel() for t in group) * itemsize
        if current and size + group_bytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.extend(group)
        size += group_bytes
    if current:
        buckets.append(current)
    return buckets


def _by_module(tensors: list[SyncTensor]) -> Iterator[tuple[str, list[SyncTensor]]]:
    group: list[SyncTensor] = []
    owner = None
    for t in tensors:
        module = t.name.rpartition(".")[0]
        if group and module != owner:
            yield owner, group
            group = []
        owner = module
        group.append(t)
    if group:
        yield owner, group


def _gathered(params: list[torch.nn.Parameter]):
    """ZeRO-3: the full values of ``params`` inside the context (a collective: every process enters it)."""
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def _value(t: SyncTensor, dtype: torch.dtype) -> torch.Tensor:
    base = t.params[0].detach()
    if t.lora is None:
        return base.to(dtype)
    delta = t.lora.get_delta_weight(t.adapter).detach()
    return (base.to(torch.float32) + delta.to(torch.float32)).to(dtype)


def trainable(t: SyncTensor) -> bool:
    """Whether training can change the tensor (a merged LoRA weight can: its adapter trains)."""
    return any(p.requires_grad for p in t.params)


def stream_weights(
    model: torch.nn.Module,
    bucket_bytes: int,
    dtype: torch.dtype,
    stats: SyncStats | None = None,
    *,
    skip_frozen: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor in ``dtype``) for the whole model, gathering one bucket at a time.

    A generator: the gather of a bucket happens when the consumer reaches it, and its parameters are released
    (re-partitioned) before the next one is gathered. ``stats`` is filled as it goes. ``skip_frozen``: leave out
    the tensors no training step changes (frozen vision parts, a LoRA model's base), for a sampler that still
    holds them.
    """
    stats = stats if stats is not None else SyncStats()
    itemsize = torch.empty((), dtype=dtype).element_size()
    all_params = list(model.parameters())
    stats.partitioned = bool(all_params) and hasattr(all_params[0], "ds_id")
    tensors = [t for t in sync_tensors(model) if trainable(t) or not skip_frozen]
    for bucket in sync_buckets(tensors, bucket_bytes, itemsize):
        params = list({id(p): p for t in bucket for p in t.params}.values())
        with _gathered(params), torch.no_grad():
            if stats.partitioned:  # measured, not assumed: what is whole on this device while the bucket is sent
                resident = sum(p.data.numel() for p in all_params)
                outside = resident - sum(p.data.numel() for p in params)
                stats.max_gathered_numel = max(stats.max_gathered_numel, resident)
                stats.max_gathered_outside_bucket = max(stats.max_gathered_outside_bucket, outside)
            bucket_bytes_sent = 0
            for t in bucket:
                value = _value(t, dtype)
                bucket_bytes_sent += value.numel() * itemsize
                stats.tensors += 1
                yield t.name, value
        stats.buckets += 1
        stats.bytes += bucket_bytes_sent
        stats.max_bucket_bytes = max(stats.max_bucket_bytes, bucket_bytes_sent)
