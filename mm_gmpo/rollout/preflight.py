"""Preflight: does the trainer's forward reproduce the sampler's log-probs on a real rollout batch?

Run once before training. A mismatch here means every importance ratio of the run is biased (the pain list's
"on-policy ratio far from 1": wrong mrope positions, padding side, temperature not applied, top-p truncation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mm_gmpo.errors import UserError
from mm_gmpo.models import tokenizer_of
from mm_gmpo.rollout.logprobs import policy_logprobs
from mm_gmpo.rollout.types import RolloutBatch


class LogprobParityError(UserError):
    """The trainer's log-probs disagree with the sampler's beyond the preflight tolerance."""


@dataclass
class TokenDiff:
    row: int  # batch row
    position: int  # index in the response
    token_id: int
    token: str  # the token as text ("" when no tokenizer was given)
    sampler_logprob: float
    trainer_logprob: float

    @property
    def abs_diff(self) -> float:
        return abs(self.sampler_logprob - self.trainer_logprob)


@dataclass
class ParityReport:
    max_abs_diff: float  # over all response tokens (0 when there are none)
    mean_abs_diff: float
    num_tokens: int  # response tokens compared
    tolerance: float
    worst: list[TokenDiff] = field(default_factory=list)  # largest differences first
    note: str = ""  # a known reason for a mismatch (e.g. top-p truncation), when there is one

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        lines = [
            f"trainer/sampler log-prob max abs diff {self.max_abs_diff:.3e} (mean {self.mean_abs_diff:.3e}) over "
            f"{self.num_tokens} response tokens, tolerance {self.tolerance:.1e}"
        ]
        for d in self.worst:
            lines.append(
                f"  row {d.row} position {d.position} token {d.token_id} {d.token!r}: sampler {d.sampler_logprob:.6f}"
                f" trainer {d.trainer_logprob:.6f} (diff {d.abs_diff:.2e})"
            )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def measure_logprob_parity(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    tolerance: float,
    tokenizer=None,
    top: int = 5,
    chunk_size: int = 512,
) -> ParityReport:
    """Compare ``batch.sampler_logprobs`` with :func:`policy_logprobs` on every response token; never raises."""
    with torch.no_grad():
        trainer, _ = policy_logprobs(model, batch, temperature=temperature, chunk_size=chunk_size)
    trainer = trainer.cpu().double()
    sampler = batch.sampler_logprobs.cpu().double()
    mask = batch.response_mask.cpu()
    diff = torch.where(mask, (trainer - sampler).abs(), torch.zeros_like(trainer))
    count = int(mask.sum())
    worst = []
    tokenizer = tokenizer if tokenizer is not None else batch.tokenizer
    if count:
        values, flat = torch.topk(diff.flatten(), min(top, count))
        response_ids = batch.response_ids.cpu()
        for value, index in zip(values.tolist(), flat.tolist(), strict=True):
            if value <= 0 and worst:
                break
            row, pos = divmod(index, diff.shape[1])
            token_id = int(response_ids[row, pos])
            worst.append(
                TokenDiff(
                    row=row,
                    position=pos,
                    token_id=token_id,
                    token=tokenizer.decode([token_id]) if tokenizer is not None else "",
                    sampler_logprob=float(sampler[row, pos]),
                    trainer_logprob=float(trainer[row, pos]),
                )
            )
    s = batch.sampling
    note = ""
    if s.truncates:
        note = (
            f"the batch was sampled with top_k={s.top_k} top_p={s.top_p}: the sampler's log-probs are those of the "
            "truncated distribution and the trainer's are not; use rollout.top_k=0 rollout.top_p=1.0"
        )
    elif s.temperature != temperature and not (s.greedy and temperature <= 0):
        note = f"sampled at temperature {s.temperature}, compared at temperature {temperature}"
    return ParityReport(
        max_abs_diff=float(diff.max()) if count else 0.0,
        mean_abs_diff=float(diff.sum() / count) if count else 0.0,
        num_tokens=count,
        tolerance=tolerance,
        worst=worst,
        note=note,
    )


def check_logprob_parity(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float,
    tolerance: float,
    processor=None,
    raise_on_failure: bool = True,
) -> ParityReport:
    """:func:`measure_logprob_parity`, raising :class:`LogprobParityError` (naming the tokens) over ``tolerance``."""
    tokenizer = tokenizer_of(processor) if processor is not None else None
    report = measure_logprob_parity(model, batch, temperature=temperature, tolerance=tolerance, tokenizer=tokenizer)
    if raise_on_failure:
        assert_parity(report)
    return report


def assert_parity(report: ParityReport) -> None:
    """Raise :class:`LogprobParityError` with the worst tokens when ``report`` is over its tolerance."""
    if not report.ok:
        raise LogprobParityError(
            "preflight failed: " + report.describe() + "\n(training refuses to start; raise "
            "rollout.preflight_tolerance or set rollout.preflight=false to override)"
        )
