"""Pass@1 over a list of prompts: generate, grade with the verifier, count; every sample's verdict is kept (pass@k,
:mod:`mm_gmpo.trainer.passk`). Used by validation and `mm-gmpo eval`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mm_gmpo.paper_eval import gold_of
from mm_gmpo.reward import format_reward


@dataclass
class EvalResult:
    correct: float = 0.0  # sum over prompts of the fraction of correct samples (Pass@1 numerator)
    formatted: float = 0.0  # same, for the answer format
    length_sum: float = 0.0  # sum of mean response lengths (tokens)
    count: int = 0  # prompts
    items: list[dict] = field(default_factory=list)  # one record per prompt

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0


def evaluate_prompts(
    engine,
    prompts,
    verifier,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    format_kind: str,
    seed: int,
    num_scored: int | None = None,
    top_p: float = 1.0,
    stop_tokens: tuple[str, ...] | None = None,
) -> EvalResult:
    """Sample ``n`` responses per prompt and grade them. ``num_scored``: only the first that many prompts count
    (the rest pad a process's share to the size of the others', so that every process generates equally often,
    which ZeRO-3 needs; they are generated and dropped). ``stop_tokens``: as ``SamplingParams.stop_tokens``."""
    from mm_gmpo.rollout import SamplingParams

    scored = len(prompts) if num_scored is None else num_scored
    result = EvalResult()
    sampling = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        seed=seed,
        stop_tokens=stop_tokens,
    )
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = engine.generate(chunk, n, sampling)
        golds = [gold_of(ex) for ex in batch.examples]  # an official-suite row: its list of golds
        grades = verifier.grade_batch(batch.response_text, golds, [ex.choices for ex in batch.examples])
        lengths = batch.response_mask.sum(dim=1).tolist()
        for p, prompt in enumerate(chunk):
            if start + p >= scored:
                break
            rows = range(p * n, (p + 1) * n)
            correct = sum(bool(grades[r].correct) for r in rows) / n
            formatted = sum(format_reward(batch.response_text[r], format_kind) for r in rows) / n
            length = sum(lengths[r] for r in rows) / n
            result.correct += correct
            result.formatted += formatted
            result.length_sum += length
            result.count += 1
            result.items.append(
                {
                    "id": prompt.example.id,
                    "source": prompt.example.source,
                    "answer": prompt.example.answer,
                    "responses": [batch.response_text[r] for r in rows],
                    "extracted": [grades[r].extracted for r in rows],
                    "verdicts": [bool(grades[r].correct) for r in rows],
                    "finish_reasons": [batch.finish_reason[r] for r in rows],
                    "response_lengths": [int(lengths[r]) for r in rows],
                    "correct": correct,
                    "num_correct": sum(bool(grades[r].correct) for r in rows),
                }
            )
    return result
