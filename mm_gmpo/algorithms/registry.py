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
    hmpo_loss,
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
    GMPO_NONORM = "gmpo_nonorm"  # ablation: no 1/|o| (product of token ratios), exponent unclamped (official)
    HMPO = "hmpo"  # the official code's harmonic-mean variant: GMPO's token clip, harmonic mean of the ratios
    GRPO = "grpo"  # PPO-clip, token mean per sequence, mean over sequences
    GSPO = "gspo"  # sequence-level ratio, ratio-space clip
    DRGRPO = "drgrpo"  # GRPO's token term over a constant length (pair with algorithm.normalize_std=false)


POLICY_LOSSES: dict[LossName, PolicyLoss] = {
    LossName.GMPO: gmpo_loss,
    LossName.GMPO_NOCLIP: gmpo_noclip_loss,
    LossName.GMPO_SEQCLIP: gmpo_seqclip_loss,
    LossName.GMPO_NONORM: gmpo_nonorm_loss,
    LossName.HMPO: hmpo_loss,
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
    takes_clip_dual: bool = False  # a PPO-style ratio clip that algorithm.clip_dual can bound for A < 0
    aggregations: tuple[str, ...] = ("seq_mean",)  # algorithm.loss_aggregation values it supports


LOSS_SPECS: dict[LossName, LossSpec] = {
    LossName.DRGRPO: LossSpec(takes_max_response_length=True, normalize_std=False, takes_clip_dual=True),
    LossName.GRPO: LossSpec(takes_clip_dual=True, aggregations=("seq_mean", "token_mean")),
}


def loss_spec(name: str) -> LossSpec:
    return LOSS_SPECS.get(LossName(name), LossSpec())


def loss_unit(aggregation: str) -> str:
    """What the trainer's ``denominator`` counts for ``algorithm.loss_aggregation``: "sequences" or "tokens"
    (the response tokens of the global mini-batch, for ``token_mean``)."""
    return "tokens" if aggregation == "token_mean" else "sequences"


def policy_loss_for(
    name: str,
    *,
    max_response_length: int,
    normalize_std: bool,
    clip_dual: float = 0.0,
    aggregation: str = "seq_mean",
) -> tuple[PolicyLoss, list[str]]:
    """The loss ``algorithm.loss`` with the settings its spec asks for bound, and warnings about the config.

    ``clip_dual`` (``algorithm.clip_dual``, 0: off) and ``aggregation`` (``algorithm.loss_aggregation``) are
    bound only when they differ from the defaults, and refused (naming the key) for a loss that has no such
    setting.
    """
    get_policy_loss(name)  # an unknown name: UserError with a did-you-mean
    spec = loss_spec(name)
    options: dict[str, Any] = {"max_response_length": max_response_length} if spec.takes_max_response_length else {}
    if clip_dual:
        if not spec.takes_clip_dual:
            takers = ", ".join(n.value for n, s in LOSS_SPECS.items() if s.takes_clip_dual)
            raise UserError(f"algorithm.clip_dual={clip_dual}: algorithm.loss={name} has no dual clip ({takers} do)")
        if not clip_dual > 1.0:
            raise UserError(f"algorithm.clip_dual={clip_dual} must be 0 (off) or > 1 (EasyR1 uses 3.0)")
        options["clip_dual"] = clip_dual
    if aggregation not in spec.aggregations:
        takers = ", ".join(n.value for n, s in LOSS_SPECS.items() if aggregation in s.aggregations)
        raise UserError(
            f"algorithm.loss_aggregation={aggregation}: algorithm.loss={name} supports "
            f"{', '.join(spec.aggregations)} (token_mean: {takers or 'none'})"
        )
    if aggregation != "seq_mean":
        options["aggregation"] = aggregation
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
