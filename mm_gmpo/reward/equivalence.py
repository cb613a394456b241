"""Is an extracted answer equal to the gold answer? Cheapest test first.

1. normalised strings equal ("string");
2. both plain numbers: exact ``Fraction`` comparison with the decimal rules below ("number");
3. shapes (list/set/tuple/interval/matrix/relation) compared part by part with the same scalar test;
4. scalars through sympy ("symbolic"), LaTeX parsed by latex2sympy2_extended, never ``sympify`` on text.

Decimal rules: a decimal equal to the exact gold is right; otherwise it must carry at least 6 significant digits
and be correctly rounded (0.33 for 1/3 is wrong, 0.333333 is right). A gold written as a decimal with at least 2
significant digits is taken as rounded: any exact or decimal answer that rounds to it at the gold's decimal
places is right (``\\sqrt{116}`` for ``10.8``); a 1-digit decimal gold (``0.5``) must be matched exactly.
"""

from __future__ import annotations

import collections
import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from mm_gmpo.reward.normalize import Normalized, Number, compact, decimal_comma, normalize, parse_number
from mm_gmpo.reward.structure import Shape, assignment_tuples, shape_of, strip_name

MIN_DECIMAL_DIGITS = 6  # significant digits a decimal needs to stand for an exact (irrational/repeating) gold
_LETTER_RE = re.compile(r"^(?:(?:option|choice)\s*:?\s*)?\(?\s*([A-Ea-e])\s*\)?\s*[.:]?$", re.IGNORECASE)
_WORD_RE = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\b")
_STRING_ONLY_RE = re.compile(r":|'|\\prime")
# sums, products, integrals, limits and derivatives are equal only as written: one on one side only decides "not
# equal" before anything is parsed (an integral costs the parser tens of milliseconds)
_UNEVALUATED_RE = re.compile(r"\\(?:sum|prod|int|iint|iiint|oint|lim|partial)(?![A-Za-z])|\\frac\s*\{\s*d")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    method: str  # string | number | symbolic | choice | structure | none
    reason: str = ""


def _rounds_to(value: Fraction, gold: Number) -> bool:
    """``value`` correctly rounded to the gold's decimal places gives the gold."""
    assert gold.decimals is not None
    half_ulp = Fraction(1, 2 * 10**gold.decimals)
    return abs(value - gold.value) <= half_ulp


def _decimal_matches_exact(pred: Number, exact: Fraction) -> bool:
    """At least 6 significant digits, and rounded or truncated: within one unit of the last digit written."""
    if pred.decimals is None or pred.digits < MIN_DECIMAL_DIGITS:
        return False
    return abs(pred.value - exact) < Fraction(1, 10**pred.decimals)


def numbers_equal(pred: Number, gold: Number) -> bool:
    """The decimal policy on two exactly parsed numbers."""
    if pred.value == gold.value:
        return True
    if gold.decimals is not None and gold.digits >= 2:
        if pred.decimals is not None and pred.decimals < gold.decimals:
            return False
        return _rounds_to(pred.value, gold)
    if gold.decimals is None:
        return _decimal_matches_exact(pred, gold.value)
    return False


def _value_vs_number(pred_value: Fraction, pred_num: Number | None, gold_value: Fraction, gold_num: Number | None):
    """Decimal rules when one side is an exact expression evaluated to ``*_value`` and the other a number."""
    if gold_num is not None and gold_num.decimals is not None:  # rounded gold vs exact answer
        return gold_num.digits >= 2 and _rounds_to(pred_value, gold_num)
    if pred_num is not None and pred_num.decimals is not None:  # decimal answer vs exact gold
        return _decimal_matches_exact(pred_num, gold_value)
    return None


def _has_words(text: str) -> bool:
    """Plain words (3+ letters outside LaTeX commands): compared as text, never as products of symbols."""
    stripped = re.sub(r"\\[A-Za-z]+", " ", text)
    return bool(_WORD_RE.search(stripped))


def _text_key(text: str) -> str:
    return re.sub(r"[\s{}\\]|\btext\b|\bmathrm\b", "", text).lower()


# Texts where a top-level + or - might not be addition: relations, lists, set operations, environments, \pm
_NOT_A_SUM_RE = re.compile(
    r"[=<>,;|&!]|\\(?:pm|mp|cup|cap|setminus|leq|geq|neq|mod|pmod|bmod|begin|left|right|to|text|mathrm|in)(?![A-Za-z])"
)
_OPERATOR_END_RE = re.compile(r"(?:[-+*/^_({\[]|\\(?:cdot|times|div|frac|sqrt))\s*$")


def _signed_terms(text: str) -> collections.Counter | None:
    """The terms of a sum at bracket depth 0 with their signs (``a-b+c`` -> +a, -b, +c), or None when the text
    is not plainly a sum (a sign after an operator is unary: ``2\\cdot -3`` is one term)."""
    if _NOT_A_SUM_RE.search(text):
        return None
    terms, depth, start, sign = collections.Counter(), 0, 0, "+"
    for i, c in enumerate(text):
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and c in "+-" and text[start:i].strip() and not _OPERATOR_END_RE.search(text[start:i]):
            terms[sign + compact(text[start:i])] += 1
            start, sign = i + 1, c
        elif depth == 0 and c in "+-" and not text[start:i].strip():
            sign = "-" if (sign == "-") != (c == "-") else "+"
            start = i + 1
    last = text[start:]
    if not last.strip() or _OPERATOR_END_RE.search(last) or depth != 0:
        return None
    terms[sign + compact(last)] += 1
    return terms


def same_terms(pred: str, gold: str) -> bool:
    """The same sum with its terms reordered (a sum of many square roots): equal without parsing anything."""
    pred_terms, gold_terms = _signed_terms(pred), _signed_terms(gold)
    return pred_terms is not None and sum(pred_terms.values()) > 1 and pred_terms == gold_terms


def scalar_equal(pred: str, gold: str) -> tuple[bool, str]:
    """Two single answers (no top-level lists): number rules, then text, then sympy."""
    if compact(pred) == compact(gold):
        return True, "string"
    if same_terms(pred, gold):
        return True, "structure"
    pred_num, gold_num = parse_number(pred), parse_number(gold)
    if gold_num is not None and pred_num is None:
        pred_num = decimal_comma(pred)
    if pred_num is not None and gold_num is not None:
        return numbers_equal(pred_num, gold_num), "number"
    if _has_words(pred) or _has_words(gold):
        return _text_key(pred) == _text_key(gold) and bool(_text_key(gold)), "text"
    pred_base, gold_base = base_number(pred), base_number(gold)
    if pred_base is not None or gold_base is not None:
        return pred_base == gold_base, "number"  # 40_9 is not 40_0; a base answer needs the base written
    pred_time, gold_time = time_of_day(pred), time_of_day(gold)
    if pred_time is not None and gold_time is not None:
        return pred_time == gold_time, "time"
    if _STRING_ONLY_RE.search(pred) or _STRING_ONLY_RE.search(gold):
        return False, "string"  # ratios/times (7:32, 12:00) and primes (f') mean nothing to sympy
    if bool(_UNEVALUATED_RE.search(pred)) != bool(_UNEVALUATED_RE.search(gold)):
        return False, "structure"
    from mm_gmpo.reward.symbolic import Unsafe, expressions_equal, numeric_value

    try:
        gold_expr, pred_expr = to_sympy(gold, gold_num), to_sympy(pred, pred_num)
    except Unsafe:
        return False, "unsafe"
    except Exception:  # noqa: BLE001 (an unparsable answer is simply not equal)
        return False, "unparsed"
    if pred_num is not None or gold_num is not None:
        gold_value = gold_num.value if gold_num else numeric_value(gold_expr)
        pred_value = pred_num.value if pred_num else numeric_value(pred_expr)
        if gold_value is not None and pred_value is not None:
            if gold_value == pred_value:
                return True, "number"
            verdict = _value_vs_number(pred_value, pred_num, gold_value, gold_num)
            if verdict is not None:
                return verdict, "number"
    return expressions_equal(pred_expr, gold_expr), "symbolic"


# a numeral with a base: starts with a digit, or is 2+ capitals/digits holding a digit (A5_{11}); an optional sign
_BASE_NUMBER_RE = re.compile(r"([+-]?)\s*([0-9][0-9A-Za-z]*|(?=[A-Z]*[0-9])[0-9A-Z]{2,})_\{?\s*(\d{1,2})\s*\}?")


def base_number(text: str) -> tuple[int | str, int] | None:
    """``1112112_{3}`` / ``40_9`` / ``A3_{16}``: (value, base); None when ``text`` is not written in a base. A
    numeral that is not valid in its base (``40_0``, ``29_2``) keeps its digits as a string: equal only to itself."""
    m = _BASE_NUMBER_RE.fullmatch(text.strip())
    if not m:
        return None
    sign, digits, base = m.group(1), m.group(2), int(m.group(3))
    if 2 <= base <= 36:
        try:
            return int(sign + digits, base), base
        except ValueError:
            pass
    return sign + digits.lstrip("0").upper(), base


_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:\\text\{\s*)?([ap])?(?:\.?\s*m\.?)?\s*\}?", re.IGNORECASE)


def time_of_day(text: str) -> int | None:
    """Seconds since midnight of ``20:34``, ``20:34:00``, ``8:34 PM``, ``08:34 \\text{P.M.}``; None otherwise."""
    m = _TIME_RE.fullmatch(text.strip())
    if not m:
        return None
    hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if minutes > 59 or seconds > 59 or hours > (12 if m.group(4) else 24):
        return None
    if m.group(4):  # 12 AM is midnight, 12 PM noon
        hours = hours % 12 + (12 if m.group(4).lower() == "p" else 0)
    return (hours * 60 + minutes) * 60 + seconds


def _matching(preds: list[str], golds: list[str]) -> bool:
    """Unordered: every gold item matched by a distinct predicted item (same count)."""
    if len(preds) != len(golds):
        return False
    remaining = list(preds)
    for gold in golds:
        for k, pred in enumerate(remaining):
            if answers_equal(pred, gold)[0]:
                del remaining[k]
                break
        else:
            return False
    return True


def _as_set(shape: Shape):
    """Interval, union or one-variable inequality as a sympy set (None when it is not one)."""
    import sympy

    from mm_gmpo.reward.symbolic import parse_latex

    try:
        if shape.kind == "interval":
            lo, hi = (to_sympy(e) for e in shape.items)
            return sympy.Interval(lo, hi, shape.brackets[0] == "(", shape.brackets[1] == ")")
        if shape.kind == "difference":  # a set (interval, union) without a finite set of points
            whole, removed = shape.items
            whole_set = _as_set(whole)
            if whole_set is None or removed.kind != "set":
                return None
            return sympy.Complement(whole_set, sympy.FiniteSet(*(to_sympy(item) for item in removed.items)))
        if shape.kind == "union":
            sets = [_as_set(_as_interval(s, shape)) for s in shape.items]  # (-2,0) \cup (0,2): open intervals
            return None if any(s is None for s in sets) else sympy.Union(*sets)
        if shape.kind == "relation" and "=" not in shape.ops:
            simple = _simple_interval(shape)
            if simple is not None:
                return simple
            rel = parse_latex(exact_decimals(shape.text))
            symbols = rel.free_symbols
            if len(symbols) != 1:
                return None
            (symbol,) = symbols
            linear = _linear_set(rel, symbol)
            if linear is not None:
                return linear
            return (
                rel.as_set() if isinstance(rel, sympy.And | sympy.Or) else sympy.solveset(rel, symbol, sympy.S.Reals)
            )
    except Exception:  # noqa: BLE001
        return None
    return None


_SET_KINDS = {"interval", "union", "relation", "difference"}  # shapes compared as sets of reals
_STRICT = {"<": True, ">": True, r"\leq": False, r"\geq": False}
_VARIABLE_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\(\s*[A-Za-z]\s*\))?")  # x, x_{1}, f(x): 0 < f(x) < 1 is a range


def _simple_interval(shape: Shape):
    r"""``x < 3``, ``3 \geq x``, ``-2 \le x < 7``, ``0 < f(x) < 1``, ``1 \le |z| \le 2`` with one variable and
    numeric ends: the set without solving."""
    items, ops = shape.items, shape.ops
    if any(op not in _STRICT for op in ops) or len(items) not in (2, 3):
        return None
    var_at = [k for k, item in enumerate(items) if _VARIABLE_RE.fullmatch(item.strip().strip("|"))]
    if len(var_at) != 1 or (len(items) == 3 and var_at != [1]):
        return None
    absolute = re.fullmatch(r"\|[^|]+\|", items[var_at[0]].strip()) is not None
    if not absolute and "|" in items[var_at[0]]:
        return None
    values = _interval_of_chain(items, ops, var_at[0])
    return _abs_preimage(values) if absolute and values is not None else values


def _linear_set(rel, symbol):
    """``a x + b`` against 0 (``-x > -1``, ``2x - 3 \\neq 1``) with numeric ``a != 0``: its set directly, without
    sympy's inequality solver (which simplifies: tens of milliseconds)."""
    import sympy

    kinds = {sympy.StrictLessThan: (True, True), sympy.LessThan: (True, False)}
    kinds |= {sympy.StrictGreaterThan: (False, True), sympy.GreaterThan: (False, False)}
    if type(rel) not in kinds and not isinstance(rel, sympy.Ne):
        return None
    try:
        poly = sympy.Poly(rel.lhs - rel.rhs, symbol)
    except sympy.PolynomialError:
        return None
    if poly.degree() != 1 or any(c.free_symbols or not c.is_real for c in poly.all_coeffs()):
        return None
    slope, intercept = poly.all_coeffs()
    root = -intercept / slope
    if isinstance(rel, sympy.Ne):
        return sympy.Union(sympy.Interval.open(-sympy.oo, root), sympy.Interval.open(root, sympy.oo))
    below, strict = kinds[type(rel)]
    if slope < 0:
        below = not below  # dividing by a negative slope turns the inequality around
    if below:
        return sympy.Interval(-sympy.oo, root, True, strict)
    return sympy.Interval(root, sympy.oo, strict, True)


def _abs_preimage(values):
    """The set of x with ``|x|`` in ``values`` (``1 \\le |z| \\le 2`` is ``[-2,-1] \\cup [1,2]``), no solving."""
    import sympy

    nonnegative = values.intersect(sympy.Interval(0, sympy.oo))
    if not isinstance(nonnegative, sympy.Interval):
        return None if nonnegative != sympy.S.EmptySet else nonnegative
    mirrored = sympy.Interval(-nonnegative.end, -nonnegative.start, nonnegative.right_open, nonnegative.left_open)
    return sympy.Union(mirrored, nonnegative)


def _interval_of_chain(items: list[str], ops: list[str], var_index: int):
    """The interval of the one variable item of a 2-3 part inequality chain with numeric ends."""
    import sympy

    var_at = [var_index]
    upward = {op in ("<", r"\leq") for op in ops}
    if len(upward) != 1:
        return None  # a < x > b is not an interval
    ends = [to_sympy(item) for k, item in enumerate(items) if k != var_at[0]]
    if any(e.free_symbols for e in ends):
        return None
    if not upward.pop():  # written with > / \geq: read right to left
        items, ops, ends = items[::-1], ops[::-1], ends[::-1]
        var_at = [len(items) - 1 - var_at[0]]
    if len(items) == 3:
        return sympy.Interval(ends[0], ends[1], _STRICT[ops[0]], _STRICT[ops[1]])
    if var_at[0] == 0:  # x < b
        return sympy.Interval(-sympy.oo, ends[0], True, _STRICT[ops[0]])
    return sympy.Interval(ends[0], sympy.oo, _STRICT[ops[0]], True)  # a < x


def to_sympy(text: str, number: Number | None = None):
    """Sympy value of an answer part; plain numbers and infinities without calling the LaTeX parser."""
    import sympy

    from mm_gmpo.reward.symbolic import parse_latex

    number = number if number is not None else parse_number(text)
    if number is not None:
        return sympy.Rational(number.value.numerator, number.value.denominator)
    infinity = re.fullmatch(r"\s*([+-]?)\s*\\infty\s*", text)
    if infinity:
        return -sympy.oo if infinity.group(1) == "-" else sympy.oo
    return parse_latex(exact_decimals(text))


def exact_decimals(text: str) -> str:
    """Decimals as fractions so that interval ends compare exactly (``0.5`` -> ``\\frac{5}{10}``)."""
    return re.sub(r"(\d+)\.(\d+)", lambda m: rf"\frac{{{m.group(1)}{m.group(2)}}}{{1{'0' * len(m.group(2))}}}", text)


def _equation_equal(pred: Shape, gold: Shape) -> bool:
    """``lhs = rhs`` equations are equal when lhs - rhs differ by a nonzero constant factor (checked at points)."""
    from mm_gmpo.reward.symbolic import constant_ratio, expressions_equal, parse_latex

    try:
        a = parse_latex(exact_decimals(pred.items[0])) - parse_latex(exact_decimals(pred.items[1]))
        b = parse_latex(exact_decimals(gold.items[0])) - parse_latex(exact_decimals(gold.items[1]))
        if a == 0 or b == 0:
            return False
        return expressions_equal(a, b) or expressions_equal(a, -b) or constant_ratio(a, b)
    except Exception:  # noqa: BLE001
        return False


def _as_interval(shape: Shape, other: Shape) -> Shape:
    """``(a, b)`` is an open interval when the other side is an interval, union or inequality."""
    if shape.kind == "tuple" and len(shape.items) == 2 and other.kind in _SET_KINDS:
        return Shape("interval", shape.items, brackets=shape.brackets, text=shape.text)
    return shape


def _is_tuples(shape: Shape) -> bool:
    return shape.kind == "tuple" or (
        shape.kind == "list" and all(shape_of(item).kind == "tuple" for item in shape.items)
    )


def _assignments_as_tuples(shape: Shape, other: Shape) -> Shape:
    """``p=5, q=2`` is the tuple ``(5, 2)`` when the other side is a tuple (or a list of tuples)."""
    if shape.kind == "list" and _is_tuples(other):
        return assignment_tuples(shape.text) or shape
    return shape


def _evaluated_matrix(shape: Shape, other: Shape) -> Shape:
    """``A + B`` or ``A B`` of explicit matrices, evaluated, when the other side is a matrix."""
    if shape.kind != "scalar" or other.kind != "matrix" or r"\begin{" not in shape.text:
        return shape
    from mm_gmpo.reward.symbolic import matrix_value

    try:
        rows = matrix_value(exact_decimals(shape.text))
    except Exception:  # noqa: BLE001 (not a matrix expression: compared as it is)
        return shape
    return shape if rows is None else Shape("matrix", rows, text=shape.text)


def _as_vector(shape: Shape, other: Shape) -> Shape:
    """``[0.5, 1]`` or ``(1, 2)`` is a vector when the other side is a one-row or one-column matrix."""
    if shape.kind not in ("tuple", "interval") or other.kind != "matrix" or shape.brackets not in ("()", "[]"):
        return shape
    rows = other.items
    if len(rows) == 1:
        return Shape("matrix", [list(shape.items)], text=shape.text)
    if all(len(row) == 1 for row in rows):
        return Shape("matrix", [[item] for item in shape.items], text=shape.text)
    return shape


def _shapes_equal(pred: Shape, gold: Shape) -> tuple[bool, str]:
    pred, gold = _as_vector(pred, gold), _as_vector(gold, pred)
    pred, gold = _as_interval(pred, gold), _as_interval(gold, pred)
    pred, gold = _evaluated_matrix(pred, gold), _evaluated_matrix(gold, pred)
    pred, gold = _assignments_as_tuples(pred, gold), _assignments_as_tuples(gold, pred)
    kinds = {pred.kind, gold.kind}
    if gold.kind in ("list", "set") and pred.kind in ("list", "set"):
        return _matching(_dedupe_items(pred.items), _dedupe_items(gold.items)), "structure"
    if gold.kind in ("list", "set") or pred.kind in ("list", "set"):
        return False, "structure"
    if kinds <= _SET_KINDS and kinds != {"relation"} or (kinds == {"relation"} and "=" not in pred.ops + gold.ops):
        if pred.kind == gold.kind == "interval":
            if pred.brackets != gold.brackets:
                return False, "structure"
            ok = all(answers_equal(p, g)[0] for p, g in zip(pred.items, gold.items, strict=True))
            return ok, "structure"
        pred_set, gold_set = _as_set(pred), _as_set(gold)
        if pred_set is not None and gold_set is not None:
            return bool(pred_set == gold_set), "symbolic"
        return compact(pred.text) == compact(gold.text), "string"
    if pred.kind != gold.kind:
        return False, "structure"
    if pred.kind == "tuple":
        if pred.brackets != gold.brackets or len(pred.items) != len(gold.items):
            return False, "structure"
        return all(answers_equal(p, g)[0] for p, g in zip(pred.items, gold.items, strict=True)), "structure"
    if pred.kind == "matrix":
        if [len(r) for r in pred.items] != [len(r) for r in gold.items]:
            return False, "structure"
        pairs = zip(sum(pred.items, []), sum(gold.items, []), strict=True)
        return all(answers_equal(p, g)[0] for p, g in pairs), "structure"
    if pred.kind == "relation":
        if len(pred.items) == len(gold.items) == 2 and pred.ops == gold.ops == ["="]:
            return _equation_equal(pred, gold), "symbolic"
        return False, "structure"
    return False, "structure"


def _dedupe_items(items: list) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        stripped = strip_name(item)
        seen.setdefault(compact(stripped), stripped)
    return list(seen.values())


@functools.lru_cache(maxsize=16384)
def _prepared(text: str) -> tuple[Normalized, str, Shape, Shape]:
    """Normalised form, body without a naming left side, its shape, and the shape before stripping."""
    norm = normalize(text)
    body = strip_name(norm.text)
    shape = shape_of(body)
    return norm, body, shape, shape if body == norm.text else shape_of(norm.text)


def answers_equal(pred: str, gold: str) -> tuple[bool, str]:
    """Equality of two extracted answers (either may be a list, tuple, interval, equation...)."""
    pred_norm, pred_body, pred_shape, pred_raw = _prepared(pred)
    gold_norm, gold_body, gold_shape, gold_raw = _prepared(gold)
    if not pred_body or not gold_body:
        return False, "none"
    if pred_norm.unit and gold_norm.unit and pred_norm.unit.rstrip("s") != gold_norm.unit.rstrip("s"):
        return False, "unit"
    if compact(pred_body) == compact(gold_body):
        return True, "string"
    if gold_shape.kind == "relation" and pred_raw.kind == "relation":
        return _shapes_equal(pred_raw, gold_shape)  # an equation gold: compare equations (y=2x+1 vs 2x-y+1=0)
    if pred_shape.kind == "relation" and gold_raw.kind == "relation" and pred_shape.ops == gold_raw.ops == ["="]:
        return _shapes_equal(pred_shape, gold_raw)  # an equation answer for a named gold: 2y=4x+2 vs y=2x+1
    if gold_shape.kind == "scalar" and pred_shape.kind == "scalar":
        if pred_norm.degrees != gold_norm.degrees and (radians := _radians_vs_degrees(pred_norm, gold_norm)):
            return scalar_equal(*radians)  # 45° and \frac{\pi}{4} are one angle
        ok, method = scalar_equal(pred_body, gold_body)
        if not ok and (pred_norm.percent or gold_norm.percent):
            ok = _percent_equal(pred_body, pred_norm.percent, gold_body, gold_norm.percent)
            method = "number" if ok else method
        return ok, method
    if gold_shape.kind == "scalar" and pred_shape.kind in ("list", "set"):
        items = _dedupe_items(pred_shape.items)
        if len(items) == 1:
            return answers_equal(items[0], gold)
    if pred_shape.kind == "scalar" and gold_shape.kind in ("list", "set"):
        items = _dedupe_items(gold_shape.items)
        if len(items) == 1:
            return answers_equal(pred, items[0])
    for comma_side, number_side in ((pred_body, gold_body), (gold_body, pred_body)):
        comma, number = decimal_comma(comma_side), parse_number(number_side)  # 1000,99 and 0,111
        if comma is not None and number is not None:
            return comma.value == number.value, "number"
    return _shapes_equal(pred_shape, gold_shape)


def _radians_vs_degrees(pred: Normalized, gold: Normalized) -> tuple[str, str] | None:
    """An angle with a degree sign against one in radians written with π: both in degrees. Without a degree sign
    on either side nothing is converted (``45`` is not ``\\frac{\\pi}{4}``)."""
    degrees, radians = (pred, gold) if pred.degrees else (gold, pred)
    if r"\pi" not in radians.text or r"\pi" in degrees.text:
        return None
    as_degrees = rf"\left({strip_name(radians.text)}\right) \cdot \frac{{180}}{{\pi}}"
    as_degrees = normalize(as_degrees).text
    body = strip_name(degrees.text)
    return (body, as_degrees) if pred.degrees else (as_degrees, body)


def _percent_equal(pred: str, pred_percent: bool, gold: str, gold_percent: bool) -> bool:
    """``10\\%`` equals ``10`` and ``0.1``."""
    pred_num, gold_num = parse_number(pred), parse_number(gold)
    if pred_num is None or gold_num is None:
        return False
    scale = Fraction(1, 100)
    if pred_percent and not gold_percent:
        return pred_num.value * scale == gold_num.value
    if gold_percent and not pred_percent:
        return gold_num.value * scale == pred_num.value
    return False


_CAPITAL_LETTER_RE = re.compile(r"^(?:(?i:option|choice)\s*:?\s*)?\(?\s*([A-E])\s*\)?\s*[.:]?$")
_LETTER_WITH_TEXT_RE = re.compile(r"^(?:(?i:option|choice)\s*:?\s*)?(?:\(([A-E])\)\s*|([A-E])\s*[.:)]\s*)\S")


@functools.lru_cache(maxsize=16384)
def choice_letter(answer: str, *, with_text: bool = False) -> str | None:
    """The capital choice letter an answer names when the options are not known: ``B``, ``(B)``, ``B)``, ``B.``,
    ``\\text{(B)}``, ``Option B``; with ``with_text`` also ``(B) 15`` and ``B. 15`` (the letter decides)."""
    text = _prepared(answer)[0].text
    if m := _CAPITAL_LETTER_RE.match(text):
        return m.group(1)
    if with_text and (m := _LETTER_WITH_TEXT_RE.match(text)):
        return m.group(1) or m.group(2)
    return None


def choice_text(answer: str, choices: list[str] | None) -> str | None:
    """The choice a letter answer (``B``, ``(B)``, ``\\text{B}``) points at, if choices are known."""
    if not choices:
        return None
    m = _LETTER_RE.match(_prepared(answer)[0].text)
    if not m:
        return None
    index = ord(m.group(1).upper()) - ord("A")
    return choices[index] if index < len(choices) else None
