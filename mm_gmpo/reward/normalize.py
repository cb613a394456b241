"""String normalisation of extracted answers, and exact number parsing (the cheap paths before sympy).

Everything here is regular-expression or linear-scan work on bounded strings: no evaluation. ``normalize`` maps
the many spellings of one answer (``\\dfrac``, ``\\left(``, unicode ``√ π ° × −``, ``\\text{cm}``, ``10\\%``,
``7,425,000``) to one form and records what it dropped (degrees, units, percent) so the comparison can decide
whether the dropped part matters. ``parse_number`` reads plain numbers (integers of any size, decimals with their
number of decimal places, fractions, mixed numbers, scientific notation) into exact ``Fraction`` values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_UNICODE = {
    "π": r"\pi ",
    "×": r"\times ",
    "·": r"\cdot ",
    "÷": "/",
    "−": "-",
    "–": "-",
    "≤": r"\leq ",
    "≥": r"\geq ",
    "≠": r"\neq ",
    "∞": r"\infty ",
    "∪": r"\cup ",
    "∩": r"\cap ",
    "±": r"\pm ",
    "∓": r"\mp ",
    "∈": r"\in ",
    "≈": r"\approx ",
    "∠": r"\angle ",
    "△": r"\triangle ",
    "∅": r"\emptyset ",
    "ℝ": r"\mathbb{R}",
    "⋅": r"\cdot ",
    "∗": "*",
    "⁄": "/",  # fraction slash (what NFKC makes of ⅓)
    "\u2012": "-",  # figure dash (the em dash of prose stays)
    "\ufe63": "-",
    "′": "'",
    "″": "''",
    "º": "°",  # the ordinal indicator and the ring above are typed for the degree sign
    "˚": "°",
    "α": r"\alpha ",
    "β": r"\beta ",
    "γ": r"\gamma ",
    "δ": r"\delta ",
    "θ": r"\theta ",
    "λ": r"\lambda ",
    "μ": r"\mu ",
    "σ": r"\sigma ",
    "φ": r"\phi ",
    "ω": r"\omega ",
    "\u00a0": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_VULGAR = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5), "⅗": (3, 5)}
_VULGAR |= {"⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅐": (1, 7), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8)}
_VULGAR |= {"⅑": (1, 9), "⅒": (1, 10)}
_VULGAR_RE = re.compile("|".join(_VULGAR))
_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-", strict=True))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉", "0123456789", strict=True))
_SUPERSCRIPT_RE = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_SUBSCRIPT_RE = re.compile("[" + "".join(_SUBSCRIPTS) + "]+")
_FULLWIDTH_RE = re.compile("[\uff01-\uff5e]")  # fullwidth ASCII (１２３, （, ＋, －): the ASCII character
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SQRT_UNICODE_RE = re.compile(r"([√∛∜])\s*(\d+(?:\.\d+)?|[A-Za-z]|\{|\([^()]{1,80}\))")  # √2, √x, √{..}, √(x+1)
_ROOT_COMMANDS = {"√": r"\sqrt", "∛": r"\sqrt[3]", "∜": r"\sqrt[4]"}
# Words that mean "a unit follows": dropped after a number (the value is what is graded).
UNIT_WORDS = (
    "square units|sq units|square unit|units|unit|cm|mm|km|m|meters|meter|metres|metre|inches|inch|in|feet|foot|ft|"
    "miles|mile|yards|yard|kg|g|grams|gram|seconds|second|sec|s|minutes|minute|min|hours|hour|hrs|hr|days|day|"
    "weeks|week|years|year|degrees|degree|dollars|dollar|cents|cent|yuan|euros|liters|litres|l|ml|mph|"
    "square feet|square inches|square meters|square centimeters|sq ft|cubic units|cubic feet|cubic inches|"
    "people|students|ways|times|points|cookies|apples|pages|books|marbles|coins|boxes|cards|balls"
)
_UNIT_TAIL_RE = re.compile(
    r"^(?P<core>.*?[\d}\)])\s+(?:\\text\{\s*)?(?:" + UNIT_WORDS + r")\.?\s*\}?\s*(?:\^\{?[23]\}?)?\s*$", re.IGNORECASE
)
# A unit word of 3+ letters glued to a number ("10weeks"); shorter ones ("2m", "3cm") stay products of symbols.
_GLUED_UNIT_RE = re.compile(
    r"^(?P<core>.*\d)(?P<u>" + "|".join(w for w in UNIT_WORDS.split("|") if len(w) >= 3 and " " not in w) + r")$",
    re.IGNORECASE,
)
_TEXT_UNIT_TAIL_RE = re.compile(
    r"^(?P<core>.*?[\d}\)])\s*\\(?:text|mbox|mathrm|textnormal)\{\s*(?P<u>[A-Za-z .]+)\}(?:\^\{?[23]\}?)?\s*$"
)
_WRAPPERS_RE = re.compile(
    r"\\(?:text|textbf|textit|textnormal|mathrm|mathbf|mathit|mathsf|mathcal|mathbb|mbox|boldsymbol|operatorname)\s*\{([^{}]*)\}"
)
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°|\s*\bdegrees?\b", re.IGNORECASE)
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-z])")
_DEGREE_NUMBER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°)")
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\bpercent(?:age)?\b|\bpct\b)\s*$", re.IGNORECASE)
_SPACING_RE = re.compile(r"(?<!\\)\\[,;:! >]|\\q?quad|~|\\displaystyle|\\(?:big|Big|bigg|Bigg)[lr]?\b")
_LEFT_RIGHT_RE = re.compile(
    r"\\(?:left|right)\s*(?=[()\[\]|.]|\\\{|\\\}|\\[lr]?[vV]ert|\\langle|\\rangle|\\[lr](?:floor|ceil))"
)
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d|[A-Za-z])\s*(\d|[A-Za-z])")
_FRAC_HALF_RE = re.compile(r"\\frac\s*(\d|[A-Za-z])\s*\{")
_FRAC_HALF2_RE = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d|[A-Za-z])")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d+|[A-Za-z])")
_THOUSANDS_LATEX_RE = re.compile(r"(\d)\s*(?:,\s*\\!|\{\s*,\s*\})\s*(\d)")
_MONEY_RE = re.compile(r"\\\$|\$|€|£|¥|\\euro\b")
_REL_WORDS = (
    (r"\\le(?!q|ft)", r"\\leq"),
    (r"\\ge(?!q)", r"\\geq"),
    (r"\\ne(?!q|g)", r"\\neq"),
    (r"\\lt\b", "<"),
    (r"\\gt\b", ">"),
    (r"<=", r"\\leq "),
    (r">=", r"\\geq "),
    (r"!=", r"\\neq "),
    (r"\\leqslant", r"\\leq"),
    (r"\\geqslant", r"\\geq"),
)
_REL_RES = [(re.compile(a), b) for a, b in _REL_WORDS]
_EMPTY_SET_RE = re.compile(r"\\varnothing|\\\{\s*\\\}|\\emptyset\b")
_REALS_RE = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?(?![\^_])|\\R\b(?![\^_])")
_REALS_TEXT_RE = re.compile(
    r"(?:\\text\{\s*)?(?:the set of )?all real numbers\.?\s*\}?|(?:\\text\{\s*)?all reals\s*\}?", re.I
)
# {x | x > 3}, {x \mid x > 3}, {x : x > 3}: the set is its condition (compared as the inequality's set)
_SET_BUILDER_RE = re.compile(
    r"^\\\{\s*([A-Za-z])\s*(?:\\in\s*\(-\\infty,\s*\\infty\)\s*)?(?:\||\\mid|:)\s*(.+?)\s*\\\}$"
)


@dataclass(frozen=True)
class Normalized:
    """An answer string in canonical form plus what normalisation dropped from it."""

    text: str
    degrees: bool = False  # a degree sign was dropped
    percent: bool = False  # a percent sign/word was dropped
    unit: str = ""  # a unit that was dropped ("cm", "square units")


def _script(mark: str, run: str, table: dict[str, str]) -> str:
    """``²`` -> ``^2``, ``⁻¹⁰`` -> ``^{-10}``: a run of unicode super/subscripts as one LaTeX script."""
    ascii_run = "".join(table[c] for c in run)
    return mark + (ascii_run if len(ascii_run) == 1 else "{" + ascii_run + "}")


def _root(match: re.Match) -> str:
    command, radicand = _ROOT_COMMANDS[match.group(1)], match.group(2)
    if radicand.startswith("("):
        radicand = radicand[1:-1]
    return command + "{" + (radicand + "}" if radicand != "{" else "")


def clean_unicode(text: str) -> str:
    """Control characters out, unicode math symbols to LaTeX (``⅓`` is ``\\frac{1}{3}``, ``x²`` is ``x^{2}``, ``∛8``
    is ``\\sqrt[3]{8}``, fullwidth digits are digits), doubled backslashes before commands halved."""
    text = _CONTROL_RE.sub("", text)
    if text.isascii():
        return re.sub(r"\\\\(?=[A-Za-z])", r"\\", text)
    text = _FULLWIDTH_RE.sub(lambda m: chr(ord(m.group(0)) - 0xFEE0), text)
    text = _VULGAR_RE.sub(lambda m: r"\frac{{{}}}{{{}}}".format(*_VULGAR[m.group(0)]), text)
    text = _SUPERSCRIPT_RE.sub(lambda m: _script("^", m.group(0), _SUPERSCRIPTS), text)
    text = _SUBSCRIPT_RE.sub(lambda m: _script("_", m.group(0), _SUBSCRIPTS), text)
    text = _SQRT_UNICODE_RE.sub(_root, text)
    for symbol, command in _ROOT_COMMANDS.items():
        text = text.replace(symbol, command)
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], text)
    # JSON-escaped LaTeX (`\\frac`) seen in some datasets: a double backslash before a letter is one command.
    return re.sub(r"\\\\(?=[A-Za-z])", r"\\", text)


def _unwrap(text: str) -> str:
    for _ in range(4):  # nested wrappers such as \textbf{\text{A}}
        new = _WRAPPERS_RE.sub(r"\1", text)
        if new == text:
            break
        text = new
    return text


def _sets(text: str) -> str:
    """One spelling per set: the empty set is ``\\emptyset``, the reals ``(-\\infty,\\infty)``, a set-builder
    ``\\{x \\mid x > 3\\}`` its condition ``x > 3``."""
    if "\\" not in text and "real" not in text.lower():
        return text
    text = _EMPTY_SET_RE.sub(r"\\emptyset", text)
    text = _REALS_RE.sub(r"(-\\infty,\\infty)", text)
    if _REALS_TEXT_RE.fullmatch(text.strip()):
        return r"(-\infty,\infty)"
    builder = _SET_BUILDER_RE.match(text.strip())
    return builder.group(2) if builder and builder.group(1) in builder.group(2) else text


def normalize(answer: str) -> Normalized:
    """Canonical form of one extracted answer (not of a whole response)."""
    text = clean_unicode(answer).strip()
    text = _MONEY_RE.sub("", text)
    text = text.replace(r"\(", "").replace(r"\)", "").replace(r"\[", "").replace(r"\]", "")
    text = re.sub(r"\\[dtc]frac", r"\\frac", text)
    text = _THOUSANDS_LATEX_RE.sub(r"\1\2", text)
    text = _THOUSANDS_LATEX_RE.sub(r"\1\2", text)  # overlapping groups: 11,\!111,\!111
    text = _SPACING_RE.sub(" ", text)
    text = _LEFT_RIGHT_RE.sub("", text)
    text = re.sub(r"\\left\.|\\right\.", "", text)
    text = re.sub(r"^[\[(]\s*(\\begin\{(\w+)\}.*\\end\{\2\})\s*[\])]$", r"\1", text, flags=re.DOTALL)
    for pattern, repl in _REL_RES:
        text = pattern.sub(repl, text)
    text = _sets(text)
    if _TRIG_RE.search(text):  # inside a trig function a degree is an angle unit: sin 30° = 1/2, not sin(30)
        text = _DEGREE_NUMBER_RE.sub(lambda m: rf"(\frac{{{m.group(1)}\pi}}{{180}})", text)
    degrees = bool(_DEGREE_RE.search(text))
    if degrees:
        text = _DEGREE_RE.sub("", text)
    percent = bool(_PERCENT_RE.search(text))
    if percent:
        text = _PERCENT_RE.sub("", text)
    unit = ""
    match = _TEXT_UNIT_TAIL_RE.match(text)
    if match and not re.fullmatch(r"\s*[A-Za-z]\s*|\s*[ap]\.?\s*m\.?\s*", match.group("u"), re.IGNORECASE):
        unit, text = match.group("u").strip().lower(), match.group("core")
    text = _unwrap(text)
    match = _UNIT_TAIL_RE.match(text)
    if match:
        unit, text = text[len(match.group("core")) :].strip().lower(), match.group("core")
    elif match := _GLUED_UNIT_RE.match(text):
        unit, text = match.group("u").lower(), match.group("core")
    if not percent and _PERCENT_RE.search(text):
        percent, text = True, _PERCENT_RE.sub("", text)
    text = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_HALF_RE.sub(r"\\frac{\1}{", text)
    text = _FRAC_HALF2_RE.sub(r"\\frac\1{\2}", text)
    text = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", text)
    text = re.sub(r"_([A-Za-z0-9])(?![A-Za-z0-9])", r"_{\1}", text)  # v_0 and v_{0} are one symbol
    text = re.sub(r"\s+", " ", text).strip()
    text = text.rstrip(".\\ ").lstrip()
    text = re.sub(r"^\+(?=\d)", "", text)
    return Normalized(text=text, degrees=degrees, percent=percent, unit=unit)


_SINGLE_BRACED_RE = re.compile(r"(?<!\\)\{([A-Za-z0-9])(?<!\\)\}")
_COMMAND_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


def compact(text: str) -> str:
    """Whitespace-free, case-sensitive key for the cheapest comparison. Braces stay where they group: only a
    brace pair around one letter or digit is dropped (``x^{2}`` = ``x^2``), so ``\\frac{1}{2}x`` (x/2) and
    ``\\frac{1}{2x}`` keep different keys; the space that ends a command name stays (``\\pi r`` is not ``\\pir``)."""
    text = re.sub(r"\s+", "", _COMMAND_SPACE_RE.sub("\\1\x00", text)).replace("\x00", " ")
    for _ in range(2):  # {{x}} -> x
        text = _SINGLE_BRACED_RE.sub(r"\1", text)
    return text


# ----------------------------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class Number:
    """An exactly parsed number. ``decimals`` is None for exact forms (integers, fractions), else the decimal
    places written (``10.80`` -> 2); ``digits`` is the count of significant digits written."""

    value: Fraction
    decimals: int | None
    digits: int


_INT = r"[+-]?\d+"
_DEC_RE = re.compile(r"([+-]?)(\d*)\.(\d+)")
_GROUPED_RE = re.compile(r"([+-]?)([1-9]\d{0,2}(?:,\d{3})+|[1-9]\d{0,2}(?: \d{3})+)(\.\d+)?")
_INDIAN_RE = re.compile(r"([+-]?)([1-9]\d{0,2}(?:,\d{2})*,\d{3})")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{\s*([+-]?\d+)\s*\}\{\s*([+-]?\d+)\s*\}")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")
_MIXED_RE = re.compile(r"([+-]?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|\s(\d+)/(\d+))")
_SCI_RE = re.compile(r"([+-]?\d*\.?\d+)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*([+-]?\d{1,4})\s*\}?")
_E_RE = re.compile(r"([+-]?\d*\.?\d+)[eE]([+-]?\d{1,4})")
_MAX_DIGITS = 4000  # longer digit strings are compared as strings only


def _decimal(sign: str, whole: str, frac: str) -> Number:
    value = Fraction(int(whole or "0") * 10 ** len(frac) + int(frac), 10 ** len(frac))
    digits = len((whole + frac).lstrip("0")) or 1
    return Number(-value if sign == "-" else value, len(frac), digits)


def parse_number(text: str) -> Number | None:
    """Parse ``text`` (already normalised) when it is one plain number; None otherwise. Never evaluates."""
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not any(c.isdigit() for c in text):
        return None
    if re.fullmatch(_INT, text):
        return Number(Fraction(int(text)), None, len(text.lstrip("+-").lstrip("0")) or 1)
    if m := _DEC_RE.fullmatch(text):
        return _decimal(*m.groups())
    if (m := _GROUPED_RE.fullmatch(text)) or (m := _INDIAN_RE.fullmatch(text)):
        whole = re.sub(r"[, ]", "", m.group(2))
        frac = (m.group(3) or ".")[1:] if m.re is _GROUPED_RE else ""
        return _decimal(m.group(1), whole, frac) if frac else parse_number(m.group(1) + whole)
    if m := _FRAC_RE.fullmatch(text):
        den = int(m.group(3))
        if den == 0:
            return None
        value = Fraction(int(m.group(2)), den)
        return Number(-value if m.group(1) == "-" else value, None, 0)
    if m := _SLASH_RE.fullmatch(text):
        den = int(m.group(2))
        return Number(Fraction(int(m.group(1)), den), None, 0) if den else None
    if m := _MIXED_RE.fullmatch(text):
        num, den = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
        if int(den) == 0 or int(num) >= int(den):
            return None
        value = int(m.group(2)) + Fraction(int(num), int(den))
        return Number(-value if m.group(1) == "-" else value, None, 0)
    if (m := _SCI_RE.fullmatch(text)) or (m := _E_RE.fullmatch(text)):
        mantissa = parse_number(m.group(1))
        if mantissa is None:
            return None
        exponent = int(m.group(2))
        value = mantissa.value * Fraction(10) ** exponent
        decimals = None if mantissa.decimals is None and exponent >= 0 else max((mantissa.decimals or 0) - exponent, 0)
        return Number(value, decimals, mantissa.digits)
    return None


def decimal_comma(text: str) -> Number | None:
    """``1000,99`` / ``0,111`` read as a decimal comma (only asked for when the gold is a single number)."""
    m = re.fullmatch(r"([+-]?)(\d+),(\d{1,2}|\d{4,})", text.strip()) or re.fullmatch(r"([+-]?)(0),(\d+)", text.strip())
    return _decimal(*m.groups()) if m else None
