"""Synthetic text tasks with long, worked responses, sized for learning on a CPU.

- ``chain_sum``: "Start at 4 and apply the steps in order: a) +5 b) -3 c) +2. What is the result?" for 3..5
  steps of +d or -d, the running value kept in 0..9. The gold response works every step on its own line (the step
  restated, then the sum), then boxes the last value::

      <think>
      a) +5: 4+5=9
      b) -3: 9-3=6
      c) +2: 6+2=8
      </think>
      \\boxed{8}

  The reasoning matters: the answer is the last line's value, and each line applies the prompt's step of the same
  label to the value the line before wrote. One wrong step anywhere (a sum, a step copied from the wrong label)
  makes the answer wrong, so a policy that is right on most single steps is wrong on many chains: room for RL to
  improve. The most frequent answer (0 or 9, where the value is pushed back) is right for about 1 in 6 items. In
  the toy tokenizer's tokens the response (with ``<|im_end|>``) is 45..69 tokens long, 57 on average, 12 per step
  (``tests/test_synthetic_text.py`` checks it).

Every item carries its worked solution in ``Example.meta["reasoning"]`` (what goes inside ``<think>``), which the
supervised warm start writes as its target instead of ``warmstart.reasoning``.

Determinism: as for the image tasks (:mod:`mm_gmpo.data.synthetic`), item ``i`` of split ``s`` of task ``t`` is
drawn from its own generator seeded with ``"mm-gmpo/synthetic/{t}/{s}/{i}"``. Unlike an image, a short chain can
come up twice (there are about 7,000 chains of 3 steps), so a hash of the problem text decides which split may hold
it (:func:`split_bucket`): held-out problems are never training problems.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from mm_gmpo.types import Example

LABELS = "abcdefgh"  # step labels, one per step (at most len(LABELS) steps)


@dataclass(frozen=True)
class TextItem:
    """One generated problem: the question, its gold answer and the worked solution that leads there."""

    problem: str
    answer: str
    reasoning: str  # the gold text inside <think>...</think>, one line per step
    meta: dict


@dataclass(frozen=True)
class TextTask:
    """One synthetic text task: how to draw an item, and what the task looks like for docs and tests."""

    name: str
    draw: Callable[[random.Random], TextItem]
    description: str  # one line, for error messages and docs


def chain_sum_item(rng: random.Random, min_steps: int = 3, max_steps: int = 5) -> TextItem:
    """A start value 0..9, then ``min_steps..max_steps`` steps of +d / -d (d >= 1) that keep the value in 0..9:
    the sign is drawn first (flipped at 0 and at 9), then d uniformly among the operands that stay in range."""
    start = rng.randint(0, 9)
    steps = rng.randint(min_steps, max_steps)
    value, ops, lines = start, [], []
    for label in LABELS[:steps]:
        sign = rng.choice("+-")
        if value == 0 or value == 9:
            sign = "+" if value == 0 else "-"
        operand = rng.randint(1, 9 - value if sign == "+" else value)
        new = value + operand if sign == "+" else value - operand
        ops.append(f"{label}) {sign}{operand}")
        lines.append(f"{label}) {sign}{operand}: {value}{sign}{operand}={new}")
        value = new
    problem = f"Start at {start} and apply the steps in order: {' '.join(ops)}. What is the result?"
    meta = {"start": start, "steps": steps, "operations": ops}
    return TextItem(problem=problem, answer=str(value), reasoning="\n".join(lines), meta=meta)


TEXT_TASKS: dict[str, TextTask] = {
    "chain_sum": TextTask(
        "chain_sum", chain_sum_item, "3..5 steps of +d/-d on one digit from a start value, each on its own line"
    ),
}


def split_bucket(problem: str) -> str:
    """The split a problem text belongs to: test for a tenth of all texts, val for another tenth, train for the
    rest (by a hash of the text, so no split ever holds a problem of another: the task has few short chains)."""
    bucket = int.from_bytes(hashlib.sha256(problem.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def text_example(item: int, *, task: str, split: str, source: str = "") -> Example:
    """Item number ``item`` of a split of a text task, drawn from its own seeded generator (drawing again until
    the problem falls in the split's bucket, :func:`split_bucket`)."""
    rng = random.Random(f"mm-gmpo/synthetic/{task}/{split}/{item}")
    drawn = TEXT_TASKS[task].draw(rng)
    while split_bucket(drawn.problem) != split:
        drawn = TEXT_TASKS[task].draw(rng)
    return Example(
        id=f"{task}-{split}-{item:05d}",
        problem=drawn.problem,
        answer=drawn.answer,
        source=source or f"synthetic:{task}:{split}",
        meta={"task": task, "synthetic": True, "reasoning": drawn.reasoning, **drawn.meta},
    )
