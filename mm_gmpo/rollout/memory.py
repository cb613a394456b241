"""A lower bound on the host memory one sampling batch needs, to refuse a group size that cannot fit up front.

Every response row carries, per token of prompt + response, its id and attention mask (int64) and a few float32
per-token arrays (sampler log-probs, old/reference log-probs, the response mask): :data:`BYTES_PER_TOKEN` bytes
at the least, before the model's KV cache and logits (which only add to it). A batch whose bound exceeds the
machine's physical memory would be killed for memory part-way, after minutes of sampling.
"""

from __future__ import annotations

import os

BYTES_PER_TOKEN = 32  # 2 x int64 (ids, attention mask) + 4 x float32 (log-probs, masks)


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
