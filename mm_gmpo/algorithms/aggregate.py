"""Masked reductions over response tokens.

Every sum and count in the losses goes through these helpers, so that prompt, image and padding positions never
enter a value or a gradient: masked positions are *selected away* (``torch.where``), not multiplied by zero, so a
``-inf`` or ``nan`` log-prob at a padded position cannot turn into ``0 * inf = nan``. An empty mask gives 0, not NaN.
"""

from __future__ import annotations

import torch


def as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool view of a ``bool`` or 0/1 mask (any numeric dtype; nonzero means "counts")."""
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set (over all elements, or along ``dim``); masked-out entries ignored."""
    selected = torch.where(as_bool_mask(mask), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_count(mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Number of set mask entries (over all, or along ``dim``), as an int64 tensor."""
    bool_mask = as_bool_mask(mask)
    return bool_mask.sum() if dim is None else bool_mask.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the set entries of ``mask``; 0 where there are none (and a zero gradient there).

    ``values`` and ``mask`` have the same shape (e.g. ``[B, T]``); ``dim=None`` gives a scalar, ``dim=-1`` one
    mean per row (``[B]``).
    """
    total = masked_sum(values, mask, dim)
    count = masked_count(mask, dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Population variance (divides by the count) over the set entries of ``mask``; 0 for fewer than 2 entries."""
    mean = masked_mean(values, mask, dim)
    centred = values - (mean if dim is None else mean.unsqueeze(dim))
    return masked_mean(centred.square(), mask, dim)


def masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> float:
    """The ``q`` quantile (linear interpolation, as ``numpy.quantile``) of the set entries; 0.0 if none.

    Sort-based rather than ``torch.quantile``, which refuses inputs above 16M elements.
    """
    selected = values[as_bool_mask(mask)].detach()
    n = selected.numel()
    if n == 0:
        return 0.0
    ordered = selected.double().sort().values
    position = q * (n - 1)
    lower = int(position)
    upper = min(lower + 1, n - 1)
    weight = position - lower
    return float(ordered[lower] * (1.0 - weight) + ordered[upper] * weight)
