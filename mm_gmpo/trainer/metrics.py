"""Metrics over processes: each value is made as a :class:`Metric` that carries its own reduction rule, and
:func:`reduce_metrics` reduces a whole dict of them in at most two collectives (one sum, one max).

The policy losses' micro-batch diagnostics (``mm_gmpo.algorithms.diagnostics``) follow their documented naming
contract instead (:func:`loss_metric`): ``*_min``/``*_max`` extremes, ``num_*`` counts, means per sequence
(``SEQUENCE_MEANS``, declared there) or per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mm_gmpo.algorithms.diagnostics import SEQUENCE_MEANS
from mm_gmpo.trainer import dist

Reduce = Literal["mean", "sum", "max", "min"]


@dataclass(frozen=True)
class Metric:
    """One process's part of a metric. ``mean``: ``value`` is a sum over ``count`` items (the result is the sum of
    the values over the sum of the counts, 0 items counting as 1); ``sum``/``max``/``min``: over processes."""

    value: float
    count: float = 1.0
    reduce: Reduce = "mean"


def mean(total: float, count: float) -> Metric:
    return Metric(float(total), float(count), "mean")


def total(value: float) -> Metric:
    return Metric(float(value), 1.0, "sum")


def largest(value: float) -> Metric:
    return Metric(float(value), 1.0, "max")


def smallest(value: float) -> Metric:
    return Metric(float(value), 1.0, "min")


def reduce_metrics(ctx: dist.DistContext, metrics: dict[str, Metric]) -> dict[str, float]:
    """Every metric reduced over processes by its own rule. Every process must pass the same names."""
    keys = sorted(metrics)
    summed = [k for k in keys if metrics[k].reduce in ("mean", "sum")]
    extreme = [k for k in keys if metrics[k].reduce in ("max", "min")]
    sums = dist.all_reduce_sum(ctx, [v for k in summed for v in (metrics[k].value, metrics[k].count)])
    out = {}
    for i, key in enumerate(summed):
        value, count = sums[2 * i], sums[2 * i + 1]
        out[key] = value / (count or 1.0) if metrics[key].reduce == "mean" else value
    if extreme:  # one MAX reduces both extremes
        sign = [-1.0 if metrics[k].reduce == "min" else 1.0 for k in extreme]
        maxes = dist.all_reduce_max(ctx, [s * metrics[k].value for s, k in zip(sign, extreme, strict=True)])
        out.update({k: s * m for k, s, m in zip(extreme, sign, maxes, strict=True)})
    return out


# Means over sequences (one value per response), combined by sequence count; every other mean is per token.


def metric_weight(key: str, row: dict[str, float]) -> float:
    """What a micro-batch's mean ``key`` is weighted by when micro-batches are combined."""
    return row.get("num_sequences", 1.0) if key in SEQUENCE_MEANS else row.get("num_tokens", 1.0)


def loss_metric(key: str, row: dict[str, float]) -> Metric:
    """A loss diagnostic ``key`` of ``row`` (micro-batches already combined) as a :class:`Metric`."""
    if key.endswith("_max"):
        return largest(row[key])
    if key.endswith("_min"):
        return smallest(row[key])
    if key.startswith("num_"):
        return total(row[key])
    weight = metric_weight(key, row)
    return mean(row[key] * weight, weight)


def reduce_metric_rows(rows: list[dict[str, float]], weight_key: str = "num_tokens") -> dict[str, float]:
    """Combine per-micro-batch metric dicts by :func:`loss_metric`'s rules (min of *_min, max of *_max, counts
    summed, per-token means weighted by tokens and per-sequence means by sequences), so the result does not depend
    on how the rows were cut into micro-batches."""
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
            weight = sum(metric_weight(key, r) for r in rows if key in r) or 1.0
            out[key] = sum(r[key] * metric_weight(key, r) for r in rows if key in r) / weight
    return out


def reduce_loss_metrics(ctx: dist.DistContext, micro_metrics: list[dict[str, float]]) -> dict[str, float]:
    """A step's micro-batch diagnostics -> one dict, over micro-batches then processes."""
    local = reduce_metric_rows(micro_metrics)
    if ctx.world_size == 1:
        return local
    return reduce_metrics(ctx, {key: loss_metric(key, local) for key in local})


def quantile(ctx: dist.DistContext, values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile (linear interpolation, as ``numpy.quantile``) of every process's ``values`` together;
    0.0 if there are none. Each process sends only its largest values, as many as the upper tail needs."""
    local = values.detach().double().flatten().cpu()
    count = int(dist.all_reduce_sum(ctx, [float(local.numel())])[0])
    tail = upper_tail(local, count, q)
    tails = dist.gather_objects(ctx, tail) if ctx.world_size > 1 else [tail]
    return quantile_from_tails(tails, count, q)


def _ranks(count: int, q: float) -> tuple[int, int, float]:
    """(lower rank, upper rank, weight of the upper) of the ``q`` quantile of ``count`` ascending values."""
    position = q * (count - 1)
    lower = int(position)
    return lower, min(lower + 1, count - 1), position - lower


def upper_tail(values: torch.Tensor, count: int, q: float) -> torch.Tensor:
    """The largest of one process's ``values`` (descending) that the ``q`` quantile of all ``count`` values can be:
    those of ascending rank >= its lower rank are the ``count - lower`` largest overall, and each process's share of
    them is among its own ``count - lower`` largest. Pure."""
    if count == 0:
        return values[:0]
    lower, _, _ = _ranks(count, q)
    return values.sort(descending=True).values[: count - lower]


def quantile_from_tails(tails: list[torch.Tensor], count: int, q: float) -> float:
    """The ``q`` quantile of ``count`` values from every process's :func:`upper_tail`. Pure."""
    if count == 0:
        return 0.0
    lower, upper, weight = _ranks(count, q)
    top = torch.cat(tails).sort(descending=True).values
    return float(top[count - 1 - lower] * (1.0 - weight) + top[count - 1 - upper] * weight)
