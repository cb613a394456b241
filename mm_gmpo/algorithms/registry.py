"""Policy losses by name: ``algorithm.loss`` in the config selects one; every entry has the same signature."""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mm_gmpo.algorithms.losses import (
    drgrpo_loss,
    gmpo_loss,
    gmpo_noclip_loss,
    gmpo_nonorm_loss,
    gmpo_seqclip_loss,
    grpo_loss,
    gspo_loss,
)
from mm_gmpo.errors import UserError

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


class PolicyLoss(Protocol):
    """``(logprobs [B,T], old_logprobs [B,T], advantages [B], response_mask [B,T]) -> (scalar loss, metrics)``."""

    def __call__(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        clip_low: float = ...,
        clip_high: float = ...,
        denominator: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class LossName(StrEnum):
    GMPO = "gmpo"  # the paper: token-level sign-aware clip in log space, geometric mean, 1/|o|
    GMPO_NOCLIP = "gmpo_noclip"  # ablation: no clipping
    GMPO_SEQCLIP = "gmpo_seqclip"  # ablation: clip the sequence's mean log-ratio instead of each token
    GMPO_NONORM = "gmpo_nonorm"  # ablation: no 1/|o| (product of token ratios)
    GRPO = "grpo"  # PPO-clip, token mean per sequence, mean over sequences
    GSPO = "gspo"  # sequence-level ratio, ratio-space clip
    DRGRPO = "drgrpo"  # GRPO's token term over a constant length (pair with algorithm.normalize_std=false)


POLICY_LOSSES: dict[LossName, PolicyLoss] = {
    LossName.GMPO: gmpo_loss,
    LossName.GMPO_NOCLIP: gmpo_noclip_loss,
    LossName.GMPO_SEQCLIP: gmpo_seqclip_loss,
    LossName.GMPO_NONORM: gmpo_nonorm_loss,
    LossName.GRPO: grpo_loss,
    LossName.GSPO: gspo_loss,
    LossName.DRGRPO: drgrpo_loss,
}


@dataclass(frozen=True)
class LossSpec:
    """What the trainer needs to know about a loss besides the function: the settings it takes from the run's
    config, and the advantage normalisation it is meant for (a mismatch is warned about, not refused)."""

    takes_max_response_length: bool = False  # a constant length normaliser: rollout.max_new_tokens
    normalize_std: bool | None = None  # the group-std normalisation it pairs with; None: either


LOSS_SPECS: dict[LossName, LossSpec] = {
    LossName.DRGRPO: LossSpec(takes_max_response_length=True, normalize_std=False),
}


def loss_spec(name: str) -> LossSpec:
    return LOSS_SPECS.get(LossName(name), LossSpec())


def policy_loss_for(name: str, *, max_response_length: int, normalize_std: bool) -> tuple[PolicyLoss, list[str]]:
    """The loss ``algorithm.loss`` with the settings its spec asks for bound, and warnings about the config."""
    get_policy_loss(name)  # an unknown name: UserError with a did-you-mean
    spec = loss_spec(name)
    options = {"max_response_length": max_response_length} if spec.takes_max_response_length else {}
    warnings = []
    if spec.normalize_std is not None and spec.normalize_std != normalize_std:
        warnings.append(
            f"algorithm.loss={name} usually goes with algorithm.normalize_std={str(spec.normalize_std).lower()}"
        )
    return get_policy_loss(name, **options), warnings


def get_policy_loss(name: str, **options: Any) -> PolicyLoss:
    """The registered loss called ``name`` (``algorithm.loss``), with keyword ``options`` bound if given.

    ``options`` are the loss's own keyword-only settings, e.g.
    ``get_policy_loss("drgrpo", max_response_length=cfg.rollout.max_new_tokens)``; an option the loss does not
    take raises :class:`UserError`. Unknown names raise :class:`UserError` listing the valid ones.
    """
    valid = [member.value for member in LossName]
    if name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"algorithm.loss: unknown policy loss {name!r}{hint}; choose one of {', '.join(valid)}")
    fn = POLICY_LOSSES[LossName(name)]
    if not options:
        return fn
    params = inspect.signature(fn).parameters
    unknown = [key for key in options if key not in params or params[key].kind is not inspect.Parameter.KEYWORD_ONLY]
    if unknown:
        allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise UserError(f"policy loss {name!r} takes no option(s) {unknown}; its options: {allowed or 'none'}")
    return functools.partial(fn, **options)
