"""Preflight: does the trainer's forward reproduce the sampler's log-probs on a real rollout batch?

Run on the first round before training on it, and measured on every round whose trainer log-probs are
computed (``rollout/logprob_diff_*``). A mismatch here means every importance ratio of the run is biased (the pain list's
"on-policy ratio far from 1": wrong mrope positions, padding side, temperature not applied). A batch sampled with
top-k/top-p is compared on the truncated distribution on both sides (the trainer applies the sampler's truncation,
:mod:`mm_gmpo.trainer.forward`). What remains (bf16 sampling, other kernels) the rollout importance correction
can weigh out (``algorithm.rollout_is_mode``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mm_gmpo.errors import UserError
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


# Default gates on (mean, p99) of |trainer - sampler| log-prob by compute dtype. A broken setup (wrong rope
# positions, padding side, temperature not applied) is off by 0.1-1 nats on most tokens; bf16 rounding gives a
# mean near 1e-2 with a tail of single tokens far out, which is why the maximum is reported but not gated.
PREFLIGHT_TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (0.05, 0.5),
    torch.float16: (0.02, 0.2),
}


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(mean, p99) gates for a run computing in ``dtype``."""
    return PREFLIGHT_TOLERANCES.get(dtype, PREFLIGHT_TOLERANCES[torch.bfloat16])


@dataclass
class ParityReport:
    max_abs_diff: float  # over all response tokens (0 when there are none)
    mean_abs_diff: float
    p99_abs_diff: float  # 99th percentile of |diff| over response tokens
    num_tokens: int  # response tokens compared
    mean_tolerance: float
    p99_tolerance: float
    max_tolerance: float = math.inf  # gated only when a caller asks (small fp32 checks)
    worst: list[TokenDiff] = field(default_factory=list)  # largest differences first
    note: str = ""  # a known reason for a mismatch (e.g. another temperature), when there is one
    # the sequence-level mismatch: the mean over responses of |sum_t (trainer - sampler)| = |log pi_old(y)/mu(y)|
    seq_mean_abs_diff: float = 0.0
    num_sequences: int = 0  # responses with at least one token

    @property
    def tolerance(self) -> float:
        return self.max_tolerance

    @property
    def ok(self) -> bool:
        return (
            self.mean_abs_diff <= self.mean_tolerance
            and self.p99_abs_diff <= self.p99_tolerance
            and self.max_abs_diff <= self.max_tolerance
        )

    def metrics(self) -> dict[str, float]:
        """``rollout/logprob_diff_{mean,p99,max}`` (per token) and ``rollout/logprob_diff_seq_mean`` (per
        response, the log of its importance weight): logged every round whose trainer log-probs were computed."""
        return {
            "rollout/logprob_diff_mean": self.mean_abs_diff,
            "rollout/logprob_diff_p99": self.p99_abs_diff,
            "rollout/logprob_diff_max": self.max_abs_diff,
            "rollout/logprob_diff_seq_mean": self.seq_mean_abs_diff,
        }

    def describe(self) -> str:
        gates = f"tolerance mean {self.mean_tolerance:.1e}, p99 {self.p99_tolerance:.1e}"
        if math.isfinite(self.max_tolerance):
            gates += f", max {self.max_tolerance:.1e}"
        lines = [
            f"trainer/sampler log-prob |diff| mean {self.mean_abs_diff:.3e}, p99 {self.p99_abs_diff:.3e}, max "
            f"{self.max_abs_diff:.3e} over {self.num_tokens} response tokens ({gates})"
        ]
        for d in self.worst:
            lines.append(
                f"  row {d.row} position {d.position} token {d.token_id} {d.token!r}: sampler {d.sampler_logprob:.6f}"
                f" trainer {d.trainer_logprob:.6f} (diff {d.abs_diff:.2e})"
            )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def parity_report(
    trainer_logprobs: torch.Tensor,
    batch: RolloutBatch,
    *,
    temperature: float,
    mean_tolerance: float,
    p99_tolerance: float,
    max_tolerance: float = math.inf,
    tokenizer=None,
    top: int = 5,
) -> ParityReport:
    """Compare the trainer's log-probs [N, R] (computed by the caller, e.g. in the update's micro-batches) with
    ``batch.sampler_logprobs`` on every response token. Pure; never raises."""
    trainer = trainer_logprobs.detach().cpu().double()
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
    if s.temperature != temperature and not (s.greedy and temperature <= 0):
        note = f"sampled at temperature {s.temperature}, compared at temperature {temperature}"
    signed = torch.where(mask, trainer - sampler, torch.zeros_like(trainer)).sum(dim=1).abs()  # [N]
    sequences = mask.any(dim=1)
    return ParityReport(
        max_abs_diff=float(diff.max()) if count else 0.0,
        mean_abs_diff=float(diff.sum() / count) if count else 0.0,
        p99_abs_diff=float(torch.quantile(diff[mask], 0.99)) if count else 0.0,
        num_tokens=count,
        mean_tolerance=mean_tolerance,
        p99_tolerance=p99_tolerance,
        max_tolerance=max_tolerance,
        worst=worst,
        note=note,
        seq_mean_abs_diff=float(signed[sequences].mean()) if bool(sequences.any()) else 0.0,
        num_sequences=int(sequences.sum()),
    )


def assert_parity(report: ParityReport) -> None:
    """Raise :class:`LogprobParityError` with the worst tokens when ``report`` is over a gate."""
    if not report.ok:
        raise LogprobParityError(
            "preflight failed: " + report.describe() + "\n(training refuses to start; raise "
            "rollout.preflight_mean_tolerance / rollout.preflight_p99_tolerance or set rollout.preflight=false "
            "to override)"
        )
