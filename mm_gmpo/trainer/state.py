"""Small pure pieces of the loop's bookkeeping: the trainer state, the data order, timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from mm_gmpo.seeds import derive_seed


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
    generator = torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
    return torch.randperm(num_items, generator=generator).tolist()


def minibatch_permutation(num_rows: int, seed: int, round_index: int, rank: int) -> list[int]:
    """``trainer.minibatch_order: shuffle``: the order this process's rows of round ``round_index`` are put in
    before the strided split (:func:`mm_gmpo.trainer.plan.minibatch_rows`), so that each mini-batch is a random subset of the round,
    as the official GMPO code's per-GPU ``np.random.permutation``. Pure: seeded by (seed, round, rank) only, so
    an exact resume (which restores the round counter) replays the same mini-batches."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "minibatch_order", round_index, rank))
    return torch.randperm(num_rows, generator=generator).tolist()


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
