"""Lower bounds on the host and device memory one sampling batch needs, to refuse a group size that cannot fit.

Every response row carries, per token of prompt + response, its id and attention mask (int64) and a few float32
per-token arrays (sampler log-probs, old/reference log-probs, the response mask): :data:`BYTES_PER_TOKEN` bytes
at the least, before the model's KV cache and logits (which only add to it). A batch whose bound exceeds the
machine's physical memory would be killed for memory part-way, after minutes of sampling.

On a GPU, HF generation keeps the KV cache of every row of the batch on the device (:func:`kv_bytes_per_token`
bytes per token: keys and values of every layer's key-value heads) and the next-token scores (one float32 row of the
vocabulary per sequence): :func:`device_memory_problem` refuses a batch whose cache and scores alone exceed the
device's free memory, before the model's weights (which only add to it).
"""

from __future__ import annotations

import os

BYTES_PER_TOKEN = 32  # 2 x int64 (ids, attention mask) + 4 x float32 (log-probs, masks)
SCORE_BYTES = 4  # float32 next-token scores, one vocabulary row per sequence


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def sampling_memory_bytes(rows: int, tokens_per_row: int) -> int:
    """Lower bound of the host memory of ``rows`` sequences of up to ``tokens_per_row`` tokens each."""
    return rows * tokens_per_row * BYTES_PER_TOKEN


def memory_problem(rows: int, tokens_per_row: int, available: int | None = None) -> str | None:
    """None when the bound fits ``available`` (default: physical memory), else the reason in words."""
    available = physical_memory_bytes() if available is None else available
    need = sampling_memory_bytes(rows, tokens_per_row)
    if available is None or need <= available:
        return None
    return (
        f"{rows} responses of up to {tokens_per_row} tokens need at least {need / 2**30:.1f} GiB of host memory "
        f"({BYTES_PER_TOKEN} bytes per token before the model's cache), more than this machine's "
        f"{available / 2**30:.1f} GiB"
    )


def kv_bytes_per_token(config, dtype_bytes: int) -> int | None:
    """Device bytes of one token's KV cache for a transformers ``config`` (a VLM's ``text_config``): 2 (keys,
    values) x layers x key-value heads x head size x ``dtype_bytes``; None when the config does not say."""
    text = getattr(config, "text_config", None) or config
    try:
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        return 2 * int(text.num_hidden_layers) * kv_heads * head_dim * dtype_bytes
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None


def device_memory_problem(
    rows: int, tokens_per_row: int, *, kv_per_token: int, vocab_size: int, available: int
) -> str | None:
    """None when ``rows`` sequences' KV cache (``tokens_per_row`` tokens each) and next-token scores fit the
    device's ``available`` bytes, else the reason in words."""
    need = rows * (tokens_per_row * kv_per_token + vocab_size * SCORE_BYTES)
    if need <= available:
        return None
    return (
        f"{rows} responses of up to {tokens_per_row} tokens need at least {need / 2**30:.1f} GiB of device memory "
        f"for their KV cache and next-token scores (before the model's weights), more than the "
        f"{available / 2**30:.1f} GiB free on the GPU"
    )
