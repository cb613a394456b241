"""The official reward of GMPO's code, as our own code: understand-r1-zero's ``boxed_reward_fn`` (``math_grader.py``,
Apache-2.0) with ``fast=False``, i.e. ``--verifier_version math_verify``, the setting of callsys/GMPO's training
scripts and of its evaluation script.

1.0 only for a correct LAST ``\\boxed{...}``: a response without ``\\boxed`` scores 0 (an ``\\fbox`` alone too: the
official code looks for ``\\boxed`` first), and so does an unclosed box or a box not written ``\\boxed{``. The box
is graded against the gold (its own last box when the gold holds one) by, in order: MATH's normalised string
match (:func:`~mm_gmpo.reward.official_normalize.mathd_normalize`), PRM800K's sympy grader (normalised strings,
tuples element by element, unreduced fractions and integers compared as strings, ``sympy.simplify`` of the
difference otherwise), then math_verify on the two strings wrapped in ``$...$``. A list gold is answered when any
of its items is. Time and truncation are the caller's: the trainer grades through ``VerifierPool`` (a timeout
scores 0) and zeroes truncated responses (``reward.zero_truncated``), as the official trainer does.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence

from mm_gmpo.reward.grading import Grade
from mm_gmpo.reward.official_normalize import mathd_normalize, prm_normalize, str_is_int, strip_thousands

BOX = "\\boxed"
_BRACE_RE = re.compile(r"[{}]")
_TUPLE_CHARS = "()[]"
_FRACTION_RE = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_BAD_SUBSTRINGS = ("^{", "^(")  # sympy might hang on these: not evaluated
_BAD_RES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
REPEAT_MIN_CHARS = 129  # answers at least this long are checked for repetition before math_verify
REPEAT_SHARE = 0.2  # repetition measure above which such an answer is wrong (2 x sum of LCPs / (n (n + 1)))
MATH_VERIFY_SECONDS = 1  # math_verify's own bound per parse and per comparison (main thread only)


def last_boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` of ``text``, braces counted from the ``\\boxed``. None when there is no
    ``\\boxed``, the box never closes, or it is not written ``\\boxed{`` (``\\boxed 5``, ``\\boxed {5}``)."""
    start = text.rfind(BOX)
    if start < 0:
        return None
    depth = 0
    for match in _BRACE_RE.finditer(text, start):
        if match.group() == "{":
            depth += 1
            continue
        depth -= 1
        if depth == 0:
            whole = text[start : match.end()]
            return whole[len(BOX) + 1 : -1] if whole.startswith(BOX + "{") else None
    return None


def _split_tuple(expr: str) -> list[str]:
    """Items of a bracketed tuple or interval (no inner brackets), else the expression itself; ``[]`` if empty."""
    expr = strip_thousands(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (
        len(expr) > 2
        and expr[0] in _TUPLE_CHARS
        and expr[-1] in _TUPLE_CHARS
        and not any(c in inner for c in _TUPLE_CHARS)
    ):
        return [item.strip() for item in inner.split(",")]
    return [expr]


def _may_evaluate(expr: str) -> bool:
    """At most two distinct letters (``sqrt``/``frac`` aside) and no power pattern that can hang sympy."""
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2 or any(bad in expr for bad in _BAD_SUBSTRINGS):
        return False
    return not any(pattern.search(expr) for pattern in _BAD_RES)


def _sympy_difference_is_zero(gold: str, given: str) -> bool:
    """``simplify((gold) - (given)) == 0`` with Python-syntax parsing and implicit multiplication."""
    import sympy
    from sympy.parsing import sympy_parser

    expr = f"({gold})-({given})"
    if not _may_evaluate(expr):
        return False
    transformations = sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,)
    try:
        return sympy.simplify(sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)) == 0
    except Exception:  # noqa: BLE001 (official: anything that fails to parse or simplify is not equal)
        return False


def _items_equal(gold: str, given: str) -> bool:
    """One tuple item: fractions as written, an integer only against an integer, else sympy."""
    if _FRACTION_RE.search(gold) and _FRACTION_RE.search(given):
        return gold == given  # an unreduced fraction is not the reduced one
    if str_is_int(gold) != str_is_int(given):
        return False
    return _sympy_difference_is_zero(gold, given)


def sympy_equal(given: str, gold: str) -> bool:
    """PRM800K's ``grade_answer_sympy``: normalised strings equal, or every tuple item equal."""
    gold_norm, given_norm = prm_normalize(gold), prm_normalize(given)
    if gold_norm is None:
        return False
    if gold_norm == given_norm:
        return True
    if not given_norm:
        return False
    gold_items, given_items = _split_tuple(gold_norm), _split_tuple(given_norm)
    if len(gold_items) > 1 and (gold_norm[0] != given_norm[0] or gold_norm[-1] != given_norm[-1]):
        return False  # a tuple against an interval, or brackets of another kind
    if len(gold_items) != len(given_items):
        return False
    return all(_items_equal(g, p) for g, p in zip(gold_items, given_items, strict=True))


def _suffix_array(codes: list[int]) -> list[int]:
    """Start indices of the suffixes of ``codes`` in sorted order (prefix doubling, O(n log^2 n))."""
    n = len(codes)
    rank, order, width = list(codes), list(range(n)), 1
    while True:
        keys = [(rank[i], rank[i + width] if i + width < n else -1) for i in range(n)]
        order.sort(key=keys.__getitem__)
        new_rank = [0] * n
        for prev, cur in zip(order, order[1:], strict=False):
            new_rank[cur] = new_rank[prev] + (keys[cur] != keys[prev])
        rank = new_rank
        if rank[order[-1]] == n - 1:
            return order
        width *= 2


def repetitive(text: str) -> bool:
    """The official ``repeatness``: 2 x (sum of the longest common prefixes of neighbouring sorted suffixes) /
    (n (n + 1)) > 0.2, i.e. much of the text repeats itself. Texts of at most one character are not."""
    n = len(text)
    if n <= 1:
        return False
    order = _suffix_array([ord(c) for c in text])
    rank = [0] * n
    for position, start in enumerate(order):
        rank[start] = position
    total = common = 0
    for i in range(n):  # Kasai: the common prefix with the next suffix shrinks by at most one per step
        if rank[i] == n - 1:
            common = 0
            continue
        j = order[rank[i] + 1]
        while i + common < n and j + common < n and text[i + common] == text[j + common]:
            common += 1
        total += common
        common = max(common - 1, 0)
    return total * 2 / (n * (n + 1)) > REPEAT_SHARE


@functools.lru_cache(maxsize=1)
def _math_verify_config() -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def math_verify_equal(given: str, gold: str) -> bool:
    """The official ``is_latex_equal`` after the two checks above failed: a long repetitive answer (or gold) is
    wrong; else both are wrapped in ``$...$`` (when they hold no ``$``), parsed by math_verify (first match, no
    fallback) and compared by ``math_verify.verify`` (gold first). Any failure is False."""
    from math_verify import parse, verify

    if (len(given) >= REPEAT_MIN_CHARS and repetitive(given)) or (len(gold) >= REPEAT_MIN_CHARS and repetitive(gold)):
        return False
    given = given if "$" in given else f"${given}$"
    gold = gold if "$" in gold else f"${gold}$"
    # math_verify bounds itself with SIGALRM, which only the main thread may set; elsewhere the caller's pool bounds it
    seconds = MATH_VERIFY_SECONDS if threading.current_thread() is threading.main_thread() else None
    # the official code passes extraction_mode=["first_match"], a list, which math_verify compares with the string
    # "first_match" and so treats as its default "any_match"; passed the same way, it behaves the same way
    options = dict(
        extraction_config=_math_verify_config(), fallback_mode="no_fallback", extraction_mode=["first_match"]
    )
    try:
        gold_parsed = parse(gold, parsing_timeout=seconds, **options)
        given_parsed = parse(given, parsing_timeout=seconds, **options)
        return bool(verify(gold_parsed, given_parsed, timeout_seconds=seconds))
    except Exception:  # noqa: BLE001 (official: any failure is not equal)
        return False


def grade_answer(answer: str, gold: str, *, fast: bool = False) -> str | None:
    """Which official check accepts ``answer`` (a box's content) for one gold: ``mathd``, ``sympy`` or
    ``math_verify`` (skipped when ``fast``); None when none does. A gold holding ``\\boxed`` is graded by its box."""
    if BOX in gold:
        gold = last_boxed_answer(gold)
        if gold is None:
            return None
    if mathd_normalize(answer) == mathd_normalize(gold):
        return "mathd"
    if sympy_equal(answer, gold):
        return "sympy"
    if not fast and math_verify_equal(answer, gold):
        return "math_verify"
    return None


def gold_list(gold) -> list[str]:
    """The gold answers: a list's items, else the one gold; numbers as ``str`` writes them (``142.0``)."""
    if isinstance(gold, list | tuple):
        return [str(g) for g in gold]
    return [str(gold)]


def official_grade(response: str, gold, *, choices: list[str] | None = None, fast: bool = False) -> Grade:
    """The official verdict as a :class:`Grade` (``method``: mathd | sympy | math_verify | official = no check
    accepted | none = no box; ``extraction``: boxed | none). ``choices`` is accepted for the pool's calling
    convention and ignored, as the official reward has no multiple-choice rule."""
    del choices
    answer = last_boxed_answer("" if response is None else str(response))
    if answer is None:
        return Grade(False, None, "none", "no closed \\boxed{} in the response", "none")
    golds = gold_list(gold)
    for item in golds:
        method = grade_answer(answer, item, fast=fast)
        if method is not None:
            return Grade(True, answer, method, "", "boxed")
    return Grade(False, answer, "official", f"no official check accepts it against {len(golds)} gold(s)", "boxed")


def official_correct(response: str, gold: str | Sequence[str]) -> bool:
    """True when the official reward (``boxed_reward_fn``, math_verify setting) gives ``response`` 1.0 against
    ``gold`` (a list: any of its items). In-process and not bounded in time: bound it with ``VerifierPool``."""
    return official_grade(response, gold).correct


def warm_up() -> None:
    """Import and exercise pylatexenc, sympy's parser and math_verify once (a pool worker calls this before its
    first timed item, so import time is never billed to a response)."""
    official_grade("\\boxed{\\sqrt{3}/2}", "\\frac{\\sqrt{3}}{2}")
    official_grade("\\boxed{2/4}", "\\frac{1}{2}")


__all__ = [
    "BOX",
    "gold_list",
    "grade_answer",
    "last_boxed_answer",
    "math_verify_equal",
    "official_correct",
    "official_grade",
    "repetitive",
    "sympy_equal",
    "warm_up",
]
