"""``grade`` and ``verify``: extraction, choice letters, then equivalence. In-process and unbounded in time;
the trainer grades through ``VerifierPool``, which bounds each item's time and memory."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

from mm_gmpo.reward.equivalence import answers_equal, choice_letter, choice_text
from mm_gmpo.reward.extract import MAX_ANSWER_CHARS, Extraction, extract_answer
from mm_gmpo.reward.normalize import compact

logger = logging.getLogger(__name__)
_LABELLED_CHOICE_RE = re.compile(
    r"^\s*(?:(?i:option|choice)\s*:?\s*)?\(?([A-E])\)?(?:\s*[.:)]\s*|\s+)(\S.*)$"
)  # "C. 15", "(C) 15", "Option C: 15"


@dataclass(frozen=True)
class Grade:
    """One verdict. ``method`` says what decided it: string | number | time | symbolic | structure | text | choice |
    none (nothing to compare) | unsafe/unparsed (not comparable) | timeout | error (from the pool)."""

    correct: bool
    extracted: str | None  # the answer taken from the response (None: none found)
    method: str
    reason: str = ""
    extraction: str = ""  # boxed | answer_tag | final_answer | bare | last_math | last_number | none


@functools.lru_cache(maxsize=8192)
def _gold_answer(gold: str) -> str | None:
    return extract_answer(gold, gold=True).answer


def _letter_of(answer: str, choices: list[str]) -> str | None:
    text = choice_text(answer, choices)
    return None if text is None else compact(answer).strip("().:").upper()


def grade(response: str, gold: str, *, choices: list[str] | None = None) -> Grade:
    """Grade one response (a bare answer or a whole output with reasoning) against one gold answer.

    ``choices``: the option texts of a multiple-choice problem (Geometry3K), so that a letter answer ``B`` is
    graded as the text of option B; a letter gold is accepted as its letter or its text. Never raises on
    content: an internal failure is ``Grade(correct=False, method="error")``. A list gold (the official evaluation
    sets' Minerva and OlympiadBench answers) is answered when any of its items is: the first correct verdict, else
    the last item's.
    """
    if isinstance(gold, list | tuple):
        results = [grade(response, item, choices=choices) for item in gold]
        return next((r for r in results if r.correct), results[-1] if results else Grade(False, None, "none"))
    try:
        return _grade(response, gold, choices)
    except (MemoryError, RecursionError) as exc:
        return Grade(False, None, "error", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 (a grading bug must cost one reward, not a training run)
        logger.debug("grading failed", exc_info=True)
        return Grade(False, None, "error", f"{type(exc).__name__}: {str(exc)[:200]}")


def _grade(response: str, gold: str, choices: list[str] | None) -> Grade:
    response = "" if response is None else str(response)
    gold_text = _gold_answer("" if gold is None else str(gold))
    extraction: Extraction = extract_answer(response)
    pred = extraction.answer
    if pred is None:
        return Grade(False, None, "none", "no answer found in the response", extraction.method)
    if not gold_text:
        return Grade(False, pred, "none", "empty gold answer", extraction.method)
    if len(pred) > MAX_ANSWER_CHARS or len(gold_text) > MAX_ANSWER_CHARS:
        ok = compact(pred) == compact(gold_text)
        return Grade(ok, pred[:MAX_ANSWER_CHARS], "string", "too long for symbolic comparison", extraction.method)
    choices = list(choices) if choices else None
    reason = ""
    if choices and (labelled := _LABELLED_CHOICE_RE.match(pred)) and _letter_of(labelled.group(1), choices):
        # "C. 15": the letter decides, and its text must agree with the option (a mismatch is a hedge)
        option = choice_text(labelled.group(1), choices)
        ok = answers_equal(option, gold_text)[0] and answers_equal(labelled.group(2), option)[0]
        return Grade(ok, pred, "choice", f"letter {labelled.group(1)} is {option!r}", extraction.method)
    if choices:
        gold_letter, pred_letter = _letter_of(gold_text, choices), _letter_of(pred, choices)
        if gold_letter and pred_letter:
            return Grade(gold_letter == pred_letter, pred, "choice", "", extraction.method)
        if pred_letter:
            mapped = choice_text(pred, choices)
            ok = answers_equal(mapped, gold_text)[0]
            return Grade(ok, pred, "choice", f"letter {pred_letter} is {mapped!r}", extraction.method)
        if gold_letter:
            gold_text = choice_text(gold_text, choices) or gold_text
    elif (gold_letter := choice_letter(gold_text)) and (pred_letter := choice_letter(pred, with_text=True)):
        # a letter gold without the options: the letter decides ("(B)", "B)", "Option B", "(B) 15" are B)
        return Grade(gold_letter == pred_letter, pred, "choice", "", extraction.method)
    ok, method = answers_equal(pred, gold_text)
    if not ok and extraction.candidates > 1:
        reason = f"{extraction.candidates} different boxed candidates (hedging earns nothing)"
    return Grade(ok, pred, method, reason, extraction.method)


def verify(response: str, gold: str) -> bool:
    """True when ``response`` (a bare answer or a whole model output) answers ``gold`` correctly."""
    return grade(response, gold).correct


def clear_caches() -> None:
    """Forget cached golds, normalised answers and parsed expressions (benchmarks time a cold pass)."""
    from mm_gmpo.reward import equivalence, symbolic

    _gold_answer.cache_clear()
    equivalence._prepared.cache_clear()
    equivalence.choice_letter.cache_clear()
    symbolic.parse_latex.cache_clear()
