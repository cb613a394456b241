"""Policy losses by name: ``algorithm.loss`` in the config selects one; every entry has the same signature.

A loss is registered in one place, where it is defined::

    @register_loss("gmpo")
    def gmpo_loss(logprobs, old_logprobs, advantages, response_mask, clip_low=..., clip_high=...,
                  denominator=None, *, clip_mode="token", length_norm=True): ...

    gmpo_noclip_loss = register_loss("gmpo_noclip", clip_mode="none")(gmpo_loss)   # an ablation: a partial

``LossSpec`` says what else the trainer needs to know about it. The config's choices for ``algorithm.loss``, the
``LossName`` enum and the did-you-mean of a typo all come from this registry (:func:`loss_names`). This module
imports no loss: ``mm_gmpo.algorithms`` imports ``losses``, which registers them (no import cycle).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mm_gmpo.errors import UserError


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


@dataclass(frozen=True)
class LossSpec:
    """What the trainer needs to know about a loss besides the function: the settings it takes from the run's
    config, and the advantage normalisation it is meant for (a mismatch is warned about, not refused).

    Every registered loss must also be *linear in the advantages with sign-determined clipping* (l_i(c A) =
    c l_i(A) for c > 0) and depend on ``logprobs`` only through each token's value: the rollout importance
    correction (:mod:`mm_gmpo.algorithms.rollout_is`) relies on both, and a test checks them for every entry."""

    takes_max_response_length: bool = False  # a constant length normaliser: rollout.max_new_tokens
    normalize_std: bool | None = None  # the group-std normalisation it pairs with; None: either
    takes_clip_dual: bool = False  # a PPO-style ratio clip that algorithm.clip_dual can bound for A < 0
    aggregations: tuple[str, ...] = ("seq_mean",)  # algorithm.loss_aggregation values it supports


POLICY_LOSSES: dict[str, PolicyLoss] = {}  # name -> the function (an ablation: a partial of one)
LOSS_SPECS: dict[str, LossSpec] = {}


def register_loss(name: str, spec: LossSpec | None = None, **options: Any) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as ``algorithm.loss=name``; with ``options``, register (and return)
    ``functools.partial(fn, **options)`` instead (an ablation of ``fn``), leaving ``fn`` itself unchanged."""

    def decorator(fn: Callable) -> Callable:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is registered twice")
        entry = functools.partial(fn, **options) if options else fn
        POLICY_LOSSES[name] = entry
        LOSS_SPECS[name] = spec or LossSpec()
        return entry if options else fn

    return decorator


def loss_names() -> tuple[str, ...]:
    """The registered names, in registration order (the choices of ``algorithm.loss``)."""
    return tuple(POLICY_LOSSES)


def check_loss_name(name: str, key: str = "algorithm.loss") -> None:
    """A :class:`UserError` naming ``key``, the closest registered name and the valid ones, for an unknown name."""
    valid = loss_names()
    if name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{key}: unknown policy loss {name!r}{hint}; choose one of {', '.join(valid)}")


def loss_spec(name: str) -> LossSpec:
    check_loss_name(name)
    return LOSS_SPECS[name]


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
    rollout_is=None,
) -> tuple[PolicyLoss, list[str]]:
    """The loss ``algorithm.loss`` with the settings its spec asks for bound, and warnings about the config.

    ``clip_dual`` (``algorithm.clip_dual``, 0: off) and ``aggregation`` (``algorithm.loss_aggregation``) are
    bound only when they differ from the defaults, and refused (naming the key) for a loss that has no such
    setting. ``rollout_is`` (a :class:`~mm_gmpo.algorithms.rollout_is.RolloutIS` that is on): the loss wrapped
    by the rollout importance correction, which then takes ``sampler_logprobs=`` as well.
    """
    spec = loss_spec(name)  # an unknown name: UserError with a did-you-mean
    options: dict[str, Any] = {"max_response_length": max_response_length} if spec.takes_max_response_length else {}
    if clip_dual:
        if not spec.takes_clip_dual:
            takers = ", ".join(n for n, s in LOSS_SPECS.items() if s.takes_clip_dual)
            raise UserError(f"algorithm.clip_dual={clip_dual}: algorithm.loss={name} has no dual clip ({takers} do)")
        if not clip_dual > 1.0:
            raise UserError(f"algorithm.clip_dual={clip_dual} must be 0 (off) or > 1 (EasyR1 uses 3.0)")
        options["clip_dual"] = clip_dual
    if aggregation not in spec.aggregations:
        takers = ", ".join(n for n, s in LOSS_SPECS.items() if aggregation in s.aggregations)
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
    fn = get_policy_loss(name, **options)
    if rollout_is is not None and rollout_is.on:
        from mm_gmpo.algorithms.rollout_is import corrected

        fn = corrected(fn, rollout_is)
    return fn, warnings


def get_policy_loss(name: str, **options: Any) -> PolicyLoss:
    """The registered loss called ``name`` (``algorithm.loss``), with keyword ``options`` bound if given.

    ``options`` are the loss's own keyword-only settings, e.g.
    ``get_policy_loss("drgrpo", max_response_length=cfg.rollout.max_new_tokens)``; an option the loss does not
    take raises :class:`UserError`. Unknown names raise :class:`UserError` listing the valid ones.
    """
    check_loss_name(name)
    fn = POLICY_LOSSES[name]
    if not options:
        return fn
    params = inspect.signature(fn).parameters
    unknown = [key for key in options if key not in params or params[key].kind is not inspect.Parameter.KEYWORD_ONLY]
    if unknown:
        allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise UserError(f"policy loss {name!r} takes no option(s) {unknown}; its options: {allowed or 'none'}")
    return functools.partial(fn, **options)
