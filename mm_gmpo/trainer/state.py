"""Small pure pieces of the loop's bookkeeping: the trainer state, the data order, metric reduction."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch


@dataclass
class TrainState:
    """Everything besides weights and optimizer that an exact resume needs."""

    step: int = 0  # optimizer steps done
    round: int = 0  # rollout rounds done
    epoch: int = 0  # passes over the training prompts started
    position: int = 0  # prompts of the current epoch already used
    nonfinite_in_a_row: int = 0  # consecutive skipped updates

    def to_dict(self) -> dict:
        return asdict(self)


def next_prompt_indices(state: TrainState, num_items: int, count: int, seed: int, shuffle: bool) -> list[int]:
    """The next ``count`` prompt indices of a seeded per-epoch order; advances ``state.epoch``/``position``."""
    out: list[int] = []
    while len(out) < count:
        if state.position >= num_items:
            state.epoch += 1
            state.position = 0
        order = _epoch_order(num_items, seed, state.epoch, shuffle)
        take = min(count - len(out), num_items - state.position)
        out.extend(order[state.position : state.position + take])
        state.position += take
    return out


def _epoch_order(num_items: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(num_items))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


def minibatch_rows(num_rows: int, updates_per_round: int, update: int) -> list[int]:
    """Rows of this process's round batch that go into mini-batch ``update`` (strided: row % K == update).

    Strided so that one global batch splits into the same mini-batches on 1 or N processes, as long as every
    process holds a multiple of K rows (checked at load time).
    """
    return list(range(update, num_rows, updates_per_round))


def minibatch_permutation(num_rows: int, seed: int, round_index: int, rank: int) -> list[int]:
    """``trainer.minibatch_order: shuffle``: the order this process's rows of round ``round_index`` are put in
    before the strided split (:func:`minibatch_rows`), so that each mini-batch is a random subset of the round,
    as the official GMPO code's per-GPU ``np.random.permutation``. Pure: seeded by (seed, round, rank) only, so
    an exact resume (which restores the round counter) replays the same mini-batches."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + round_index) * 1_009 + rank + 17)
    return torch.randperm(num_rows, generator=generator).tolist()


# Means over sequences (one value per response), combined by sequence count; every other mean is per token.
SEQUENCE_MEANS = frozenset({"pg_loss", "loss", "kl_ref", "advantage_mean", "advantage_std", "advantage_frac_zero"})


def metric_weight(key: str, row: dict[str, float]) -> float:
    """What a micro-batch's mean ``key`` is weighted by when micro-batches are combined."""
    return row.get("num_sequences", 1.0) if key in SEQUENCE_MEANS else row.get("num_tokens", 1.0)


def reduce_metric_rows(rows: list[dict[str, float]], weight_key: str = "num_tokens") -> dict[str, float]:
    """Combine per-micro-batch metric dicts: min of *_min, max of *_max, counts summed, per-token means weighted
    by tokens and per-sequence means (SEQUENCE_MEANS) by sequences, so the result does not depend on how the
    rows were cut into micro-batches."""
    non_empty = [r for r in rows if r.get(weight_key, 1.0) > 0]  # an empty micro-batch reports 0.0 for min/max
    rows = non_empty or rows[:1]
    if not rows:
        return {}
    out: dict[str, float] = {}
    for key in rows[0]:
        values = [r[key] for r in rows if key in r]
        if key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        elif key.startswith("num_"):
            out[key] = sum(values)
        else:
            total = sum(metric_weight(key, r) for r in rows if key in r) or 1.0
            out[key] = sum(r[key] * metric_weight(key, r) for r in rows if key in r) / total
    return out


def all_finite(values: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values() if isinstance(v, float))


@contextmanager
def timed(timings: dict[str, float], name: str, peaks: dict[str, float] | None = None) -> Iterator[None]:
    """Add the block's seconds to ``timings[name]``; on a GPU also its peak allocated memory (GiB) to ``peaks``."""
    on_gpu = peaks is not None and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    if on_gpu:
        peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
