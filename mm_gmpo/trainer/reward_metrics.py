"""Metrics of a user's reward function (``reward.function``): ``reward/custom/<name>`` means and the error count."""

from __future__ import annotations

from mm_gmpo.reward import RewardScores
from mm_gmpo.trainer import dist


def named_reward_metrics(ctx: dist.DistContext, scores: RewardScores) -> dict[str, float]:
    """``reward/custom/<name>``: the mean of every named score over all processes' responses (a name a response did
    not return counts 0), ``reward/function_errors``: responses whose call failed (scored 0), summed.

    The names are gathered from every process first, so processes that saw different names (or only failures)
    still reduce lists of the same length. ``total`` is left out: it is ``reward/mean``."""
    names = sorted({name for local in dist.gather_objects(ctx, sorted(scores.named)) for name in local} - {"total"})
    count = len(scores.total)
    local = [float(sum(scores.named.get(name, [0.0] * count))) for name in names]
    *sums, total_count, errors = dist.all_reduce_sum(ctx, [*local, float(count), float(scores.function_errors)])
    # under reward/custom/: a function's own names (accuracy, mean, ...) can never overwrite the trainer's
    metrics = {f"reward/custom/{name}": value / (total_count or 1.0) for name, value in zip(names, sums, strict=True)}
    metrics["reward/function_errors"] = errors
    return metrics
