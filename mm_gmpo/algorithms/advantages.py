"""Group-relative advantages: one scalar per response, from the rewards of the responses to the same prompt."""

from __future__ import annotations

import torch

from mm_gmpo.errors import UserError

ADVANTAGE_EPS = 1e-6


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    normalize_std: bool = True,
    eps: float = ADVANTAGE_EPS,
) -> torch.Tensor:
    """GRPO advantages ``[B]`` from rewards ``[B]`` laid out as consecutive groups of ``group_size``.

    A_i = (r_i - mean_g) / (std_g + eps) with the group's mean and its sample std (Bessel-corrected, as in
    GRPO implementations; 0 for a group of one), or A_i = r_i - mean_g with ``normalize_std=False``
    (Dr.GRPO: no std division). A group whose rewards are all equal gets exactly 0 (float rounding in its mean
    would otherwise leave +-1e-17 residues, which the std division could blow up). Vectorised: one reshape to
    ``[B / group_size, group_size]``. Computed in float64, returned in the rewards' float dtype (float32 for
    integer or bool rewards).
    """
    if rewards.dim() != 1:
        raise UserError(f"rewards must be one-dimensional [B], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise UserError(f"group_size must be a positive integer, got {group_size!r}")
    num = rewards.shape[0]
    if num % group_size:
        raise UserError(
            f"{num} rewards do not split into groups of group_size={group_size} "
            f"({num} is not divisible by {group_size})"
        )
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    values = rewards.detach().to(torch.float64)
    if not torch.isfinite(values).all():
        bad = torch.nonzero(~torch.isfinite(values)).flatten()[:5].tolist()
        raise UserError(f"rewards must be finite; non-finite at rows {bad}")
    groups = values.view(-1, group_size)  # [B / G, G]
    centred = groups - groups.mean(dim=1, keepdim=True)
    constant = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)  # [B / G, 1]
    if normalize_std:
        std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
        centred = centred / (std + eps)
    advantages = torch.where(constant, torch.zeros_like(centred), centred)
    return advantages.reshape(num).to(out_dtype)
