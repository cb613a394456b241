"""The same tokens on every process: rows move between processes before the round's log-prob passes.

With responses of very different lengths, the processes of one optimizer step hold very different amounts of work
and every step waits for the busiest. After the advantages are computed a row needs nothing of its group, so rows
can change process. For each optimizer step (the strided rows ``i % K == k`` of every process), the processes
swap rows, the heaviest with the lightest, until no swap evens them further; every process keeps its row count
(so count-based micro-batches stay equal) and every step keeps its rows (so the update is the same one: the loss's
denominator is global). Only moved rows cross, once, to their new process.

:func:`swap_plan` is the pure plan; :func:`balance_rows` carries it out (its one collective is
``dist.exchange_objects``, after one ``gather_objects`` of the row lengths).
"""

from __future__ import annotations

import bisect
from dataclasses import replace

import torch

from mm_gmpo.rollout.types import RolloutBatch, concat_batches
from mm_gmpo.trainer import dist
from mm_gmpo.trainer.plan import minibatch_rows

Slot = tuple[int, int]  # (source process, row on that process)


def swap_plan(lengths: list[list[int]], max_swaps: int = 10_000) -> list[list[Slot]]:
    """The rows each process gets: ``lengths[p]`` are process p's rows' token counts (the same number on every
    process); returns for each process the (source process, source row) in each of its slots. Pure.

    Each swap exchanges a row of the heaviest process with a lighter row of the lightest, the pair whose difference
    is closest to half the gap; it strictly lowers the sum of squared loads, so the loop ends. Rows stay home
    unless a swap moves them.
    """
    slots = [[(p, i) for i in range(len(rows))] for p, rows in enumerate(lengths)]
    size = {(p, i): n for p, rows in enumerate(lengths) for i, n in enumerate(rows)}
    loads = [sum(rows) for rows in lengths]
    for _ in range(max_swaps):
        heavy = max(range(len(loads)), key=loads.__getitem__)
        light = min(range(len(loads)), key=loads.__getitem__)
        gap = loads[heavy] - loads[light]
        if gap <= 1:
            break
        lighter = sorted(range(len(slots[light])), key=lambda j: size[slots[light][j]])
        light_sizes = [size[slots[light][j]] for j in lighter]
        best = None  # (distance of the difference from gap / 2, slot on heavy, slot on light, difference)
        for a, slot in enumerate(slots[heavy]):
            want = size[slot] - gap / 2  # the light row that halves the gap
            at = bisect.bisect_left(light_sizes, want)
            for b in (at - 1, at):
                if 0 <= b < len(light_sizes):
                    diff = size[slot] - light_sizes[b]
                    if 0 < diff < gap and (best is None or abs(diff - gap / 2) < best[0]):
                        best = (abs(diff - gap / 2), a, lighter[b], diff)
        if best is None:
            break
        _, a, b, diff = best
        slots[heavy][a], slots[light][b] = slots[light][b], slots[heavy][a]
        loads[heavy] -= diff
        loads[light] += diff
    return slots


def row_tokens(batch: RolloutBatch) -> list[int]:
    """[N] prompt + response tokens of each row (what its forward computes, packed or trimmed)."""
    return batch.attention_mask.sum(dim=1).tolist()


def _portable(batch: RolloutBatch) -> RolloutBatch:
    """The batch as it crosses processes: on the CPU (a pickled CUDA tensor would land on the sender's GPU index),
    no tokenizer, examples without their decoded images (the rows' pixel values travel; the answers stay)."""
    return replace(batch.to("cpu"), tokenizer=None, examples=[replace(ex, images=[]) for ex in batch.examples])


def balance_rows(
    ctx: dist.DistContext, batch: RolloutBatch, advantages: torch.Tensor, updates_per_round: int, pad_token_id: int
) -> tuple[RolloutBatch, torch.Tensor, dict[str, float]]:
    """(this process's rows after balancing, their advantages, ``perf/token_imbalance_{before,after}``: the busiest
    process's tokens over the mean, the worst step of the round). One process: unchanged."""
    if ctx.world_size == 1:
        return batch, advantages, {}
    k = updates_per_round
    all_lengths = dist.gather_objects(ctx, row_tokens(batch))
    slots_by_step, before, after = [], 1.0, 1.0
    for step in range(k):
        step_rows = [minibatch_rows(len(lengths), k, step) for lengths in all_lengths]
        lengths = [[all_lengths[p][i] for i in rows] for p, rows in enumerate(step_rows)]
        plan = swap_plan(lengths)
        slots_by_step.append([[(src, step_rows[src][j]) for src, j in own] for own in plan])
        before = max(before, _imbalance([sum(x) for x in lengths]))
        after = max(after, _imbalance([sum(all_lengths[s][i] for s, i in own) for own in slots_by_step[-1]]))

    def rows_from(source: int, dest: int) -> list[int]:  # rows of ``source`` that ``dest`` gets, in row order
        return sorted(i for slots in slots_by_step for s, i in slots[dest] if s == source)

    outgoing = []
    for dest in range(ctx.world_size):
        rows = rows_from(ctx.rank, dest) if dest != ctx.rank else []
        outgoing.append((_portable(batch.select(rows)), advantages[rows].cpu()) if rows else None)
    incoming = dist.exchange_objects(ctx, outgoing)
    parts = {s: part for s, part in enumerate(incoming) if part is not None and s != ctx.rank}
    parts[ctx.rank] = (batch.to("cpu"), advantages.cpu())  # all its rows: those that left are not selected
    index, offset = {}, 0  # (source, row) -> row of the joined batch
    for source in sorted(parts):
        rows = range(batch.num_rows) if source == ctx.rank else rows_from(source, ctx.rank)
        index.update({(source, i): offset + j for j, i in enumerate(rows)})
        offset += len(rows)
    joined = concat_batches([parts[s][0] for s in sorted(parts)], pad_token_id)
    joined_advantages = torch.cat([parts[s][1] for s in sorted(parts)])
    order = [0] * batch.num_rows
    for step, slots in enumerate(slots_by_step):
        for j, slot in enumerate(slots[ctx.rank]):
            order[step + j * k] = index[slot]  # slot j of step k is local row step + j*K (strided mini-batches)
    balanced = replace(joined.select(order), tokenizer=batch.tokenizer)
    metrics = {"perf/token_imbalance_before": before, "perf/token_imbalance_after": after}
    return balanced, joined_advantages[order], metrics


def _imbalance(loads: list[int]) -> float:
    mean = sum(loads) / max(len(loads), 1)
    return max(loads) / mean if mean else 1.0
