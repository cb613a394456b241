"""The two answer normalisations of the official grader (understand-r1-zero ``math_grader.py``, Apache-2.0), as
pure string functions: :func:`mathd_normalize` (Hendrycks' MATH ``_strip_string``, with MathQA unit words) and
:func:`prm_normalize` (PRM800K's ``_normalize``, which renders LaTeX as text with pylatexenc).

Both keep the official quirks on purpose, because the official reward is what GMPO's numbers were graded with:
e.g. the unit-word pass also deletes a lone ``a``, ``c``, ``h`` or ``t`` between non-word characters (on both
sides of the comparison), and ``mathd_normalize`` returns its input (``\\text{}`` removed) when a step raises.
The rules are written here once; :mod:`mm_gmpo.reward.official` grades with them.
"""

from __future__ import annotations

import contextlib
import re

# MathQA unit words removed by MATH's normalisation, in the official order (duplicates kept: each pass of a
# pattern can leave a second occurrence behind, so a repeated word removes more). Each word is a regular
# expression as written ("q ." matches "q", a space and any character), then again with a trailing "s".
_MATHD_UNIT_WORDS = (  # noqa: SIM905 (one compact block, in the official order)
    "east|degree|mph|kmph|ft|m sqaure| m east|sq m|deg|mile|q .|monkey|prime|ratio|profit of rs|rd|o|gm|p . m|lb|"
    "tile|per|dm|lt|gain|ab|way|west|a .|b .|c .|d .|e .|f .|g .|h .|t|a|h|no change|men|soldier|pie|bc|excess|st|"
    "inches|noon|percent|by|gal|kmh|c|acre|rise|a . m|th|π r 2|sq|mark|l|toy|coin|sq . m|gallon|° f|profit|minw|yr|"
    "women|feet|am|pm|hr|cu cm|square|v â € ™|are|rupee|rounds|cubic|cc|mtr|s|ohm|number|kmph|day|hour|minute|min|"
    "second|man|woman|sec|cube|mt|sq inch|mp|∏ cm ³|hectare|more|sec|unit|cu . m|cm 2|rs .|rs|kg|g|month|km|m|cm|mm|"
    "apple|liter|loss|yard|pure|year|increase|decrease|d|less|Surface|litre|pi sq m|s .|metre|meter|inch"
).split("|")
_MATHD_UNIT_RES = tuple(
    re.compile(r"(^|\W)" + word + r"($|\W)") for word in (*_MATHD_UNIT_WORDS, *(w + "s" for w in _MATHD_UNIT_WORDS))
)
_TEXT_WRAPPED_RE = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_ARRAY_BEGIN_RE = re.compile(r"\\begin\{array\}\{.*?\}")
_ARRAY_END_RE = re.compile(r"\\end\{array\}")
_TRAILING_TEXT_RE = re.compile(r"\\text{.*?}$")

# PRM800K's normalisation: unit words (no word boundary, as official), then LaTeX rendered as plain text
_PRM_UNIT_RES = tuple(
    re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?")
    for unit in "degree cm centimeter meter mile second minute hour day week month year foot feet inch yard".split()  # noqa: SIM905
)
_PRM_CIRC_RE = re.compile(r"\^ *\\circ")
_PRM_THIN_SPACE_RE = re.compile(r",\\! *")
_MIXED_NUMBER_RE = re.compile(r"([0-9]) +([0-9])")
_THOUSANDS_RE = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_LATEX_TEXT_SYMBOLS = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``; an empty tail raises IndexError."""
    head, *parts = text.split("\\frac")
    out = head
    for part in parts:
        out += "\\frac"
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return text
        first, second, tail = part[0], part[1], part[2:]
        out += "{" + first + "}" + ("{" + second + "}" if second != "{" else second) + tail
    return out


def _fix_a_slash_b(text: str) -> str:
    """``3/4`` (two plain integers) -> ``\\frac{3}{4}``; anything else unchanged."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        num, den = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return "\\frac{" + str(num) + "}{" + str(den) + "}" if text == f"{num}/{den}" else text


def _remove_right_units(text: str) -> str:
    """What precedes ``\\text{ `` (a unit); a second ``\\text{ `` raises AssertionError (as official)."""
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise AssertionError("more than one '\\text{ '")
    return parts[0]


def _fix_sqrt(text: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}``; a trailing ``\\sqrt`` raises IndexError (as official)."""
    if "\\sqrt" not in text:
        return text
    head, *parts = text.split("\\sqrt")
    return head + "".join("\\sqrt" + p if p[0] == "{" else "\\sqrt{" + p[0] + "}" + p[1:] for p in parts)


def _drop_unit_words(text: str) -> str:
    """Two passes over the MathQA unit words; a removal that would leave nothing is not made."""
    for _ in range(2):
        for pattern in _MATHD_UNIT_RES:
            cut = pattern.sub(r"\1\2", text)
            if cut != "":
                text = cut
    return text


def _strip_string(text: str, extended: bool) -> str:
    """MATH's ``_strip_string``: LaTeX spellings unified, units, dollars, percent and ``x =`` dropped. ``extended``:
    understand-r1-zero's additions (arrays as pmatrix, ``\\neq``/``\\leq``/``\\geq``, a trailing ``\\text{}``
    and MathQA unit words dropped); without: PRM800K's (mathruler's) version, which also drops a bare ``%``."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    if extended:
        text = _ARRAY_END_RE.sub(r"\\end{pmatrix}", _ARRAY_BEGIN_RE.sub(r"\\begin{pmatrix}", text))
        text = text.replace("bmatrix", "pmatrix")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    if extended:
        text = text.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    text = text.replace("\\left", "").replace("\\right", "")
    if extended:
        cut = _TRAILING_TEXT_RE.sub("", text).strip()
        if cut != "" and cut != text:
            text = cut
        text = _drop_unit_words(text)
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    text = _remove_right_units(text).replace("\\%", "")
    if not extended:
        text = text.replace("%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _fix_fracs(_fix_sqrt(text).replace(" ", ""))
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def mathd_normalize(answer: str | None, *, extended: bool = True) -> str | None:
    """MATH's answer normalisation (``mathd_normalize_answer``): strip, unwrap a whole ``\\text{...}``, then
    ``_strip_string`` (``extended``: understand-r1-zero's; else PRM800K's, as mathruler uses it); when a step
    raises, the unwrapped answer as it was. ``None`` stays ``None``."""
    if answer is None:
        return None
    answer = answer.strip()
    wrapped = _TEXT_WRAPPED_RE.search(answer)
    if wrapped is not None:
        answer = wrapped.group("text").strip()
    try:
        return _strip_string(answer, extended)
    except Exception:  # noqa: BLE001 (official: any failure keeps the answer as it is)
        return answer


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(value: float) -> bool:
    """Within 1e-7 of an integer (inf and nan are not)."""
    try:
        return abs(value - int(round(value))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def strip_thousands(text: str) -> str:
    """``1,234,567`` -> ``1234567``, leaving tuple commas (``1,23``) alone."""
    while True:
        stripped = _THOUSANDS_RE.sub(r"\1\3\4", text)
        if stripped == text:
            return stripped
        text = stripped


def str_is_int(text: str) -> bool:
    """The text (thousands commas removed) is a float within 1e-7 of an integer."""
    try:
        return _is_int(float(strip_thousands(text)))
    except ValueError:
        return False


def _latex_to_text(expr: str) -> str:
    """LaTeX rendered as plain text by pylatexenc, with its symbols in sympy's spelling."""
    from pylatexenc import latex2text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = latex2text.LatexNodes2Text().latex_to_text(expr)
    for symbol, name in _LATEX_TEXT_SYMBOLS:
        expr = expr.replace(symbol, name)
    return expr.strip()


def prm_normalize(expr: str | None) -> str | None:
    """PRM800K's answer normalisation (``_normalize``): ``\\text{}``, dollars, percent and unit words removed,
    ``million`` as ``*10^6``, LaTeX rendered as text, spaces and braces dropped, lower case, integers canonical."""
    if expr is None:
        return None
    wrapped = _TEXT_WRAPPED_RE.search(expr)
    if wrapped is not None:
        expr = wrapped.group("text")
    for old, new in (("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "), (" and ", " , ")):
        expr = expr.replace(old, new)
    for old, new in (("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12")):
        expr = expr.replace(old, new)
    for pattern in _PRM_UNIT_RES:
        expr = pattern.sub("", expr)
    expr = _PRM_CIRC_RE.sub("", expr)
    if len(expr) > 0 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _PRM_THIN_SPACE_RE.sub("", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        with contextlib.suppress(Exception):  # official: an expression pylatexenc cannot render stays as it is
            expr = _latex_to_text(expr)
    expr = _MIXED_NUMBER_RE.sub(r"\1+\2", re.sub("- *", "-", expr))
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


__all__ = ["mathd_normalize", "prm_normalize", "str_is_int", "strip_thousands"]
