"""How a rollout round divides, decided in one place: each process's share (:class:`RoundShape`), the optimizer
steps' strided rows and their micro-batches (:class:`MicroBatchPlan`). Pure: the actor agrees the plans of several
processes (:meth:`mm_gmpo.trainer.actor.Actor.plan`).

A round is ``rollout.prompts_per_round`` prompts x ``rollout.n`` responses over all processes, split into
``trainer.updates_per_round`` (K) optimizer steps. Each process holds a contiguous share of the prompts; step k
takes its rows ``i % K == k`` (strided, so one global batch splits into the same steps on 1 or N processes). Each
step runs in micro-batches of ``trainer.micro_batch_size`` rows, or of rows grouped up to a token budget
(``trainer.max_tokens_per_micro_batch``; padded tokens, or with ``trainer.packing`` real tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mm_gmpo.rollout.types import RolloutBatch


@dataclass(frozen=True)
class RoundShape:
    """The round's arithmetic for one process (divisibility is checked at load: ``setup.check_config``)."""

    prompts_per_round: int  # all processes
    n: int  # responses per prompt
    updates_per_round: int  # K
    world_size: int = 1
    rank: int = 0

    @property
    def prompts_per_process(self) -> int:
        return self.prompts_per_round // self.world_size

    @property
    def first_prompt(self) -> int:
        """The global index of this process's first prompt of the round."""
        return self.rank * self.prompts_per_process

    @property
    def rows_per_process(self) -> int:
        return self.prompts_per_process * self.n

    @property
    def sequences_per_step(self) -> int:
        """Rows of one optimizer step over all processes: every loss's denominator."""
        return self.rows_per_process * self.world_size // self.updates_per_round

    def micro_batches_per_step(self, micro_batch_size: int) -> int:
        """Micro-batches of a step by row count (what DeepSpeed's gradient accumulation counts)."""
        return math.ceil(self.rows_per_process // self.updates_per_round / micro_batch_size)

    def mine(self, items: list) -> list:
        """This process's contiguous share of the round's globally ordered ``items``."""
        share = len(items) // self.world_size
        return items[self.rank * share : (self.rank + 1) * share]


def minibatch_rows(num_rows: int, updates_per_round: int, update: int) -> list[int]:
    """Rows of this process's round batch that go into mini-batch ``update`` (strided: row % K == update).

    Strided so that one global batch splits into the same mini-batches on 1 or N processes, as long as every
    process holds a multiple of K rows (checked at load time).
    """
    return list(range(update, num_rows, updates_per_round))


def micro_batches(rows: list[int], size: int) -> list[list[int]]:
    """``rows`` cut into consecutive pieces of at most ``size``."""
    return [rows[start : start + size] for start in range(0, len(rows), max(size, 1))]


def token_budget_bins(
    prompt_lengths: list[int], response_lengths: list[int], budget: int, packed: bool = False
) -> list[list[int]]:
    """Indices of the rows in bins whose cost stays within ``budget`` tokens; a row over the budget gets a bin of
    its own. Pure.

    Padded (``packed=False``): a trimmed micro-batch costs rows x (its longest prompt + its longest response), since
    prompts are left-padded and responses right-padded the two maxima add up even when no single row has both.
    Longest rows first into the open bin, so each bin's rows are of similar length.
    Packed: a micro-batch costs the sum of its rows' lengths; first fit, longest first (no padding to share).
    """
    order = sorted(range(len(prompt_lengths)), key=lambda i: -(prompt_lengths[i] + response_lengths[i]))
    bins: list[list[int]] = []
    if packed:
        loads: list[int] = []
        for i in order:
            size = prompt_lengths[i] + response_lengths[i]
            fits = next((b for b, load in enumerate(loads) if load + size <= budget), None)
            if fits is None:
                bins.append([i])
                loads.append(size)
            else:
                bins[fits].append(i)
                loads[fits] += size
        return bins
    longest = (0, 0)  # the open bin's longest prompt and response
    for i in order:
        grown = (max(longest[0], prompt_lengths[i]), max(longest[1], response_lengths[i]))
        if bins and (len(bins[-1]) + 1) * sum(grown) <= budget:
            bins[-1].append(i)
            longest = grown
        else:
            bins.append([i])
            longest = (prompt_lengths[i], response_lengths[i])
    return bins


def split_to_count(bins: list[list[int]], count: int) -> list[list[int]]:
    """``bins`` split (the largest first) until there are ``count`` of them; every process then runs the same
    number of forwards and backwards. Pure; needs at least ``count`` items."""
    bins = [list(b) for b in bins]
    while len(bins) < count:
        largest = max(range(len(bins)), key=lambda j: len(bins[j]))
        if len(bins[largest]) < 2:
            raise ValueError(f"cannot make {count} micro-batches of {sum(map(len, bins))} rows")
        half = len(bins[largest]) // 2
        bins[largest : largest + 1] = [bins[largest][:half], bins[largest][half:]]
    return bins


@dataclass(frozen=True)
class MicroBatchPlan:
    """The micro-batches of every optimizer step of a round, and how often each calls the LM head."""

    steps: list[list[list[int]]]  # steps[k]: the rows of each micro-batch of step k
    chunks: list[list[int]]  # chunks[k][m]: LM-head calls of micro-batch m (the most of any process under ZeRO-3)
    # per step, this process's (or, agreed by the actor, all processes') response tokens, and computed and real
    # tokens of its micro-batches (each trimmed to its rows, or packed: see padding_stats)
    step_tokens: list[float]
    computed_tokens: list[float]
    real_tokens: list[float]


def step_micro_batches(
    batch: RolloutBatch, rows: list[int], micro_batch_size: int, max_tokens: int = 0, packed: bool = False
) -> list[list[int]]:
    """The micro-batches of ``rows``: by count, or by the token budget ``max_tokens`` (this process alone)."""
    if not max_tokens:
        return micro_batches(rows, micro_batch_size)
    prompt = batch.attention_mask[rows, : batch.prompt_length].sum(dim=1).tolist()
    response = batch.response_mask[rows].sum(dim=1).tolist()
    return [[rows[i] for i in b] for b in token_budget_bins(prompt, response, max_tokens, packed=packed)]


def lm_head_calls(batch: RolloutBatch, rows: list[int], chunk_size: int) -> int:
    """LM-head calls of the micro-batch ``rows``: its response tokens in chunks of ``chunk_size``."""
    return math.ceil(int(batch.response_mask[rows].sum()) / max(chunk_size, 1))


def plan_round(batch: RolloutBatch, settings, bins_per_step: list[int] | None = None) -> MicroBatchPlan:
    """This process's :class:`MicroBatchPlan` of ``batch`` under ``settings`` (an ``UpdateSettings``).
    ``bins_per_step``: split each step's token-budget micro-batches up to that many (the busiest process's)."""
    k = settings.updates_per_round
    steps = [
        step_micro_batches(
            batch,
            minibatch_rows(batch.num_rows, k, update),
            settings.micro_batch_size,
            settings.max_tokens_per_micro_batch,
            settings.packing,
        )
        for update in range(k)
    ]
    if bins_per_step is not None:
        steps = [split_to_count(step, count) for step, count in zip(steps, bins_per_step, strict=True)]
    chunks = [[lm_head_calls(batch, rows, settings.chunk_size) for rows in step] for step in steps]
    step_tokens = [float(batch.response_mask[[r for rows in step for r in rows]].sum()) for step in steps]
    padding = [padding_stats(batch, step, packed=settings.packing) for step in steps]
    return MicroBatchPlan(steps, chunks, step_tokens, [c for c, _ in padding], [r for _, r in padding])


def padding_stats(
    batch: RolloutBatch, plan: list[list[int]], trim: bool = True, packed: bool = False
) -> tuple[float, float]:
    """(computed tokens, real tokens) of ``plan``'s micro-batches, each trimmed to its own longest row (or, with
    ``trim=False``, as wide as the whole batch; with ``packed``, its real tokens only)."""
    real = float(batch.attention_mask[[r for rows in plan for r in rows]].sum())
    if packed:
        return real, real
    computed = 0
    for rows in plan:
        width = sum(batch.select(rows).padded_width()) if trim else batch.input_ids.shape[1]
        computed += len(rows) * width
    return float(computed), real
