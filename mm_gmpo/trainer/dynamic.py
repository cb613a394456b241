"""Dynamic sampling (DAPO): keep only the groups whose rewards differ, and sample further prompts until the round
holds enough of them.

A group whose ``n`` rewards are all equal has advantages of zero: it costs a forward and a backward and moves
nothing. With ``algorithm.dynamic_sampling`` the trainer samples rounds of prompts (each from the data order, so
resume stays exact) until every process holds its share of informative groups, at most
``rollout.max_sampling_rounds`` times; when the bound is hit the round is filled up with uninformative groups in
sampling order (their advantages are zero) and the shortfall is logged. These functions are the pure part.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from mm_gmpo.reward import RewardScores
from mm_gmpo.rollout.types import RolloutBatch, concat_batches


def informative_groups(total: list[float], n: int) -> list[bool]:
    """For each group of ``n`` consecutive rewards: do they differ (is any advantage non-zero)?"""
    rewards = torch.tensor(total, dtype=torch.float64).view(-1, n)
    return (rewards.max(dim=1).values > rewards.min(dim=1).values).tolist()


def choose_groups(informative: list[list[bool]], want: int) -> list[tuple[int, int]]:
    """(sampling round, group) of the groups a round trains on: the first ``want`` informative ones in sampling
    order, then, if there are too few, the first uninformative ones; returned in sampling order."""
    order = [(k, g) for k, flags in enumerate(informative) for g in range(len(flags))]
    good = [kg for kg in order if informative[kg[0]][kg[1]]][:want]
    fill = [kg for kg in order if not informative[kg[0]][kg[1]]][: want - len(good)]
    return sorted(good + fill)


def _select_scores(scores: RewardScores, rows: list[int]) -> RewardScores:
    """The rows' entries of every per-response field (lists, or dicts of lists); counts stay as they are."""
    out = {}
    for f in fields(scores):
        value = getattr(scores, f.name)
        if isinstance(value, list):
            out[f.name] = [value[i] for i in rows]
        elif isinstance(value, dict):
            out[f.name] = {k: [v[i] for i in rows] for k, v in value.items()}
    return replace(scores, **out)


def _concat_scores(parts: list[RewardScores], sampled: list[RewardScores]) -> RewardScores:
    """Per-response fields of ``parts`` joined; counts (timeouts, errors) summed over everything ``sampled``."""
    out = {}
    for f in fields(parts[0]):
        values = [getattr(p, f.name) for p in parts]
        if isinstance(values[0], list):
            out[f.name] = [x for v in values for x in v]
        elif isinstance(values[0], dict):  # named scores: a name one part lacks is 0 for its rows
            names = sorted({k for v in values for k in v})
            out[f.name] = {
                k: [x for v, p in zip(values, parts, strict=True) for x in v.get(k, [0.0] * len(p.total))]
                for k in names
            }
        elif isinstance(values[0], int | float):
            out[f.name] = sum(getattr(s, f.name) for s in sampled)
    return replace(parts[0], **out)


def assemble_round(
    sampled: list[tuple[RolloutBatch, RewardScores]], n: int, want: int, pad_token_id: int
) -> tuple[RolloutBatch, RewardScores, dict[str, float]]:
    """The round's batch and scores from the sampled rounds: ``want`` groups chosen by :func:`choose_groups`.
    Metrics (this process): groups sampled, informative among them, and uninformative groups filled in."""
    informative = [informative_groups(scores.total, n) for _, scores in sampled]
    chosen = choose_groups(informative, want)
    batches, parts = [], []
    for k, (batch, scores) in enumerate(sampled):
        rows = [g * n + j for kk, g in chosen if kk == k for j in range(n)]
        if rows:
            batches.append(batch.select(rows))
            parts.append(_select_scores(scores, rows))
    counts = {
        "groups_sampled": float(sum(len(f) for f in informative)),
        "groups_informative": float(sum(sum(f) for f in informative)),
        "groups_filled": float(sum(not informative[k][g] for k, g in chosen)),
    }
    batch = concat_batches(batches, pad_token_id)
    batch = replace(batch, group_index=torch.arange(batch.num_rows) // n)  # groups 0..want-1 of the round
    return batch, _concat_scores(parts, [scores for _, scores in sampled]), counts
