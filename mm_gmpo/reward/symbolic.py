"""Sympy through a real LaTeX parser (latex2sympy2_extended), with guards against expression bombs.

Model text is never given to ``sympify``/``parse_expr``: latex2sympy builds the expression tree from its ANTLR
grammar without evaluating it (``9^{9^{9^{9}}}`` stays a tower of ``Pow`` nodes). Before the parser runs, the text's
length and bracket depth are bounded (real answers nest at most 4 deep; the parser's time grows fast with depth);
before anything evaluates, the tree is walked and an upper bound of the size of every numeric node is estimated;
trees whose numbers would need more than ``MAX_DIGITS`` digits (towers, ``(10^{10})!``) are refused. Values are
compared by ``numeric.compare`` (exact rationals, a float probe, then enough digits). The pool's per-item time and
memory bounds are the backstop for whatever slips through.
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig
from sympy.core.function import AppliedUndef

from mm_gmpo.reward.numeric import (
    UNEVALUATED,
    Unsafe,
    cancel_factorial_ratios,
    compare,
    digits_bound,
    near,
    real_value,
    value_at_point,
)

logger = logging.getLogger(__name__)

MAX_LATEX_CHARS = 600  # longer answers are compared as strings only
MAX_NESTING = 12  # bracket depth beyond which the parser is not called (3x the deepest gold in MATH/Geometry3K)
MAX_MATRICES = 4  # matrix expressions with more matrices than this are not evaluated
MAX_SYMBOLIC_MATRICES = 2  # ... and with more than this when an entry holds a letter (products grow exponentially)
MAX_DIGITS = 20000  # no numeric node may need more digits than this

_NORMALIZATION = NormalizationConfig(
    basic_latex=False, units=False, malformed_operators=False, nits=False, boxed="none", equations=False
)
_CONVERSION = ConversionConfig(
    interpret_as_mixed_fractions=False,
    interpret_simple_eq_as_assignment=False,
    interpret_contains_as_eq=False,
    lowercase_symbols=False,
)
_I = sympy.Symbol("i")


def _nesting(text: str) -> int:
    depth = best = 0
    for c in text:
        if c in "({[":
            depth += 1
            best = max(best, depth)
        elif c in ")}]":
            depth -= 1
    return best


# SLL prediction cannot choose between the grammar's "letter, subscript, then superscript" alternatives: a lone
# letter before ``^`` (``x^2``) or a subscripted letter without a superscript (``F_{k}``) makes it fail, and the
# full-LL retry costs 5-50 ms. Spellings of the same tree that SLL parses: ``{x}^2`` and ``F_{k}^{1}`` (the power
# 1 is removed after parsing). ``e`` is left alone (``e^x`` is exp(x), ``{e}^x`` would be the symbol e).
_SLL_POWER_RE = re.compile(
    r"(?<![\\A-Za-z])([A-Za-df-z]|\\(?:pi|theta|alpha|beta|delta|epsilon|lambda|mu|nu|rho|sigma|tau|phi|omega|psi|"
    r"chi|eta|kappa|xi)(?![A-Za-z]))(?=\s*\^)"
)
# the last letter of a product of single letters before ``^`` (``ab^9``, ``xy^2``): the same failure, the same
# respelling (``a{b}^9``); a run that starts after a backslash is a command (``\\sin^2``) and is left alone
_SLL_RUN_POWER_RE = re.compile(r"(?<![\\A-Za-z])([A-Za-z]{1,3})([A-Za-df-z])(?=\s*\^)")
# what only the grammar's top rule parses: lists and tuples (, ;), sets and intervals, plus-minus, membership
_SET_SYNTAX_RE = re.compile(
    r"[,;\[\]]|\\[{}]|\\(?:pm|mp|in|notin|cup|cap|setminus|emptyset|varnothing|mid|subset|subseteq|supset|supseteq|subsetneq|supsetneq)(?![A-Za-z])|\|"
)
_DECIMAL_TOKEN_RE = re.compile(r"\d*\.\d+|\d+\.")
_CALCULUS_RE = re.compile(r"\\frac\s*\{\s*d|\\partial|\\int|\\mathrm\{d\}|\bd\s*[A-Za-z]\s*\^")
_SLL_SUBSCRIPT_RE = re.compile(r"(?<![\\A-Za-z])([A-Za-z]_(?:\{[^{}^_\\]*\}|[A-Za-z0-9]))(?!\s*\^)")


def sll_friendly(text: str) -> tuple[str, bool]:
    """``text`` respelled so that SLL prediction parses it, and whether powers ``^{1}`` were added (see above)."""
    if _CALCULUS_RE.search(text):
        return text, False  # d t^2 in a derivative is the symbol dt squared: left to the full parser
    if "^" in text:
        text = _SLL_RUN_POWER_RE.sub(r"\1{\2}", _SLL_POWER_RE.sub(r"{\1}", text))
    added = 0
    if "_" in text:
        text, added = _SLL_SUBSCRIPT_RE.subn(r"\1^{1}", text)
    return text, bool(added)


def _drop_unit_powers(expr):
    """Undo the ``^{1}`` of ``sll_friendly`` (the parser keeps ``F_k**1`` unevaluated)."""
    if not isinstance(expr, sympy.Basic):
        return expr
    return expr.replace(lambda e: isinstance(e, sympy.Pow) and e.exp == 1, lambda e: e.base)


try:  # two-stage ANTLR parsing on latex2sympy2_extended's converter (a private class: guarded)
    from antlr4 import Token
    from antlr4.atn.PredictionMode import PredictionMode
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    class _TwoStageConverter(_Latex2Sympy):
        """SLL prediction first (2-3x faster); on any syntax error the text is parsed again with full LL, so
        the result is LL's (the error listener raises, so SLL never returns an error-recovered tree)."""

        sll = True

        def parse_number(self, text):
            """Number tokens without ``sympy.Number(str)`` (which runs sympy's string parser, ~1 ms each); the
            same values: ``Integer`` for digits, ``Float`` for a plain decimal, the original path otherwise."""
            digits = text.replace(",", "")
            if digits.isdigit():
                return sympy.Integer(int(digits))
            if _DECIMAL_TOKEN_RE.fullmatch(digits):
                return sympy.Float(digits)
            return super().parse_number(text)

        def parse(self, latex_str):
            """A text without set, interval, list or plus-minus syntax is parsed as one ``relation`` directly: the
            grammar's top rule (``math`` -> set elements -> element) must otherwise look ahead over the whole text
            to choose an alternative, and building that prediction for a text shape not seen before costs
            0.1-1 s. Anything the direct route does not consume whole goes the grammar's own way."""
            if not self.sll or _SET_SYNTAX_RE.search(latex_str):
                return super().parse(latex_str)
            parser = self.create_parser(latex_str)
            relation = parser.relation()
            if parser.getTokenStream().LA(1) != Token.EOF:
                return super().parse(latex_str)
            return self.convert_relation(relation)

        def convert_func(self, func):
            """``\\Gamma(x)`` unevaluated: sympy evaluates ``gamma`` of an integer on construction, and
            ``\\Gamma(1000001)`` would build a 5.5-million-digit factorial inside the parser (7 s) before any bound
            could look at it. Numeric comparison evaluates it later (``numeric.rational_value``), within bounds."""
            single = func.func_normal_single_arg()
            if single is None or single.start.text not in ("\\Gamma", "\\gamma"):
                return super().convert_func(func)
            expr = sympy.gamma(
                self.convert_func_arg(func.func_single_arg() or func.func_single_arg_noparens()), evaluate=False
            )
            power = func.supexpr()  # \\Gamma^2(x)
            if power is None:
                return expr
            power = self.convert_expr(power.expr()) if power.expr() else self.convert_atom(power.atom())
            return sympy.Pow(expr, power, evaluate=False)

        def create_parser(self, latex_str):
            parser = super().create_parser(latex_str)
            if self.sll:
                parser._interp.predictionMode = PredictionMode.SLL
            return parser

    def _latex_to_sympy(text: str):
        converter = _TwoStageConverter(None, None, False, config=_CONVERSION)
        respelled, added_powers = sll_friendly(text)
        try:
            expr = converter.parse(respelled)
            return _drop_unit_powers(expr) if added_powers else expr
        except Exception:  # noqa: BLE001 (retry the text as written with LL, which raises the real error if any)
            converter.sll = False
            return converter.parse(text)

except ImportError:  # another latex2sympy2_extended layout: the public entry point (LL only)

    def _latex_to_sympy(text: str):
        return latex2sympy(text, normalization_config=_NORMALIZATION, conversion_config=_CONVERSION)


@functools.lru_cache(maxsize=8192)
def parse_latex(text: str) -> sympy.Basic:
    """LaTeX -> sympy tree (unevaluated), refused when long, deeply nested or numerically huge."""
    if len(text) > MAX_LATEX_CHARS or _nesting(text) > MAX_NESTING:
        raise Unsafe("answer too long or too deeply nested for symbolic comparison")
    if "\\input" in text or "\\include" in text or "\\def" in text:
        raise Unsafe("LaTeX file/definition commands are not mathematics")
    expr = _latex_to_sympy(text)
    if isinstance(expr, sympy.Basic):
        if expr.has(_I):
            expr = expr.subs(_I, sympy.I)
        expr = cancel_factorial_ratios(expr)
        if digits_bound(expr) > MAX_DIGITS:
            raise Unsafe("numbers in the expression are too large")
    return expr


def numeric_value(expr: sympy.Basic) -> Fraction | None:
    """Exact value (rational trees) or value to enough digits of a symbol-free real expression, else None."""
    if not isinstance(expr, sympy.Expr) or expr.free_symbols:
        return None
    return real_value(expr)


_POINTS = (Fraction(13, 7), Fraction(-5, 11), Fraction(29, 13), Fraction(7, 3), Fraction(-17, 9), Fraction(3, 5))
_WIDE_POINTS = (
    Fraction(101, 7),
    Fraction(-233, 9),
    Fraction(1000, 3),
    Fraction(59, 2),
    Fraction(-77, 5),
    Fraction(31),
)
_STEP_FUNCTIONS = (sympy.floor, sympy.ceiling, sympy.frac, sympy.Mod, sympy.sign)


def _point(points: tuple[Fraction, ...], k: int, symbols: list) -> dict:
    return {s: points[(k + j) % len(points)] for j, s in enumerate(symbols)}


def _agree_at_points(a: sympy.Expr, b: sympy.Expr, symbols: list) -> bool | None:
    """Agreement at up to 6 rational points; None when no point could be evaluated.

    3 agreeing points where both sides are real suffice. A point where a side is not real (a radical of a
    negative number) is only counted when too few real points exist: principal branches of ``(a/b)^{1/2}`` and
    ``a^{1/2} b^{-1/2}`` differ there although the expressions are the same on their real domain. Each point is
    compared by ``numeric.compare`` (exactly for rational functions, so ``x + 2^{100}`` is not ``x + 2^{100} + 1``)."""
    # step functions are constant on long runs: small points cannot tell floor((2n-1)/7) from floor((2n-1)/5)
    steps = a.has(*_STEP_FUNCTIONS) or b.has(*_STEP_FUNCTIONS)
    points, needed = (_POINTS + _WIDE_POINTS, len(_POINTS + _WIDE_POINTS)) if steps else (_POINTS, 3)
    real_agree, complex_results = 0, []
    for k in range(len(points)):
        result = compare(a, b, _point(points, k, symbols))
        if result.equal is None:
            continue  # a pole or an undefined function at this point
        if result.real:
            if not result.equal:
                return False
            real_agree += 1
            if real_agree >= needed:
                return True
        else:
            complex_results.append(result.equal)
    if real_agree or complex_results:
        return all(complex_results) if real_agree + len(complex_results) >= 3 or not real_agree else True
    return None


def constant_ratio(a: sympy.Expr, b: sympy.Expr) -> bool:
    """``a / b`` is the same nonzero finite number at 3 rational points (equations that differ by a factor)."""
    if a.has(*UNEVALUATED) or b.has(*UNEVALUATED) or a.has(AppliedUndef) or b.has(AppliedUndef):
        return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        return False
    ratios: list = []
    for k in range(len(_POINTS)):
        point = _point(_POINTS, k, symbols)
        num, den = value_at_point(a, point), value_at_point(b, point)
        if num is None or den is None or num == 0 or den == 0:
            continue
        ratios.append(_ratio(num, den))
        if len(ratios) == 3:
            break
    if len(ratios) < 3 or any(r is None for r in ratios):
        return False
    return all(_same(r, ratios[0]) for r in ratios[1:])


def _ratio(num, den):
    """num / den of two values from ``value_at_point`` (Fractions, or (real, imag) pairs with their digits)."""
    if isinstance(num, Fraction) and isinstance(den, Fraction):
        return num / den
    (nr, ni), (dr, di) = (v if isinstance(v, tuple) else (v, Fraction(0)) for v in (num, den))
    norm = dr * dr + di * di
    return ((nr * dr + ni * di) / norm, (ni * dr - nr * di) / norm)


def _same(r, s) -> bool:
    if isinstance(r, Fraction) and isinstance(s, Fraction):
        return r == s
    r, s = (v if isinstance(v, tuple) else (v, Fraction(0)) for v in (r, s))
    return near(r, s, Fraction(1, 10**30))


def _canonical(expr: sympy.Basic) -> sympy.Basic:
    """The tree rebuilt with sympy's automatic ordering (the parser keeps ``F_{n-k-1} F_k`` as written). Rebuilding
    evaluates numeric nodes, which ``digits_bound`` has already bounded; ``doit`` (summing) is never called."""
    if not expr.args or isinstance(expr, sympy.Number):
        return expr
    root = isinstance(expr, sympy.Pow) and not expr.exp.is_Integer and expr.base.is_number
    if root and digits_bound(expr.base) > 30:  # a root of a large number: sympy would factor it (or raise)
        return expr
    return expr.func(*(_canonical(arg) for arg in expr.args))


def _undefined_as_symbols(expr: sympy.Expr) -> sympy.Expr:
    """``f(x)`` -> a symbol named ``f(x)``: undefined functions compare by name and argument."""
    return expr.replace(lambda e: isinstance(e, AppliedUndef), lambda e: sympy.Symbol(str(e)))


def expressions_equal(a: sympy.Basic, b: sympy.Basic) -> bool:
    """Symbolic equality: structure, then exact-enough numbers, then agreement at rational points (undefined
    functions first turned into symbols). ``simplify`` is never called: it can run for minutes."""
    if a == b:
        return True
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.has(sympy.Float) != b.has(sympy.Float):
        return False  # a rounded literal inside an expression is not the exact expression
    if a.has(*UNEVALUATED) or b.has(*UNEVALUATED):
        # sums, integrals, limits: equal only as written, up to the order of commutative terms and factors
        return _canonical(a) == _canonical(b)
    if a.has(AppliedUndef) or b.has(AppliedUndef):
        a, b = _undefined_as_symbols(a), _undefined_as_symbols(b)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        # the same terms in another order (a sum of many square roots reordered) without evaluating anything
        return _canonical(a) == _canonical(b) or bool(compare(a, b).equal)
    return bool(_agree_at_points(a, b, symbols))


def matrix_value(text: str) -> list[list[str]] | None:
    """Sums and products of explicit matrices (``A + B``, ``I I``, ``2A``) evaluated to rows of LaTeX entries;
    None when ``text`` is not a matrix expression. Matrix powers are not evaluated (``A^{10^{9}}`` would hang)."""
    count = text.count(r"\begin{")
    if count > MAX_MATRICES:
        return None  # products of many symbolic matrices grow exponentially
    letters = re.search(r"(?<![\\A-Za-z])[A-Za-z]", re.sub(r"\\[A-Za-z]+\{?\w*\}?", " ", text))
    if count > MAX_SYMBOLIC_MATRICES and letters:
        return None
    expr = parse_latex(text)
    if not isinstance(expr, sympy.MatrixExpr | sympy.MatrixBase):
        return None
    if any(isinstance(node, sympy.Pow | sympy.MatPow) for node in sympy.preorder_traversal(expr)):
        return None
    value = expr.doit()
    if not isinstance(value, sympy.MatrixBase):
        return None
    return [[sympy.latex(value[r, c]) for c in range(value.cols)] for r in range(value.rows)]


_WARMUP = (
    r"\frac{1}{2}+\sqrt{3}",
    r"2^{10}-x^2",
    r"(x+1)(x-2)",
    r"[0,1)\cup(2,\infty)",
    r"-[0,1)",
    r"\{1,2\}",
    r"(1,2,3)",
    r"x\leq 2",
    r"-2\le x<7",
    r"y=2x+1",
    r"\sin(x)^2+\cos x",
    r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
    r"\frac{\pi}{3}\cdot 10^{-3}",
    r"\log_2 8+\ln e",
    r"|x-1|",
    r"f(x)",
    r"a_{1}b",
    r"3!+\binom{5}{2}",
    r"\infty",
    r"\sqrt[3]{2}i",
    r"\frac{v_{0}}{r_{0}}+x^{3}y",
    r"\sum_{k=0}^{n} F_{k}",
    # the latency tail: first parses of factorial ratios, trigonometric products and degrees
    r"\frac{(2n)!}{(2n-2)!}",
    r"200!/199!",
    r"2\sin x\cos x",
    r"\sin 2x",
    r"\frac{\sin x}{\cos x}+\tan x",
    r"\frac{1-\cos 2x}{2}",
    r"\sin(x+y)",
    r"45^\circ",
    r"\log_{10} 100",
    r"2n(2n-1)",
    r"\frac{\pi}{4}",
    r"\frac{3\pi}{2}",
    r"\binom{10}{3}",
    r"|1-x|",
    # common shapes of answers whose first parse would otherwise build the prediction cache during grading
    r"11z^7(11z^7+5)",
    r"2a^2b(3a-b)+c",
    r"x^{3/2}+(1+x)^{-1/2}",
    r"\left(\frac{a_0}{b + c_0}\right)^{0.5}\cdot d",
    r"\frac{a_{0}}{b_{0}} \frac{1}{\left(1+x / y_{0}\right)^{3 / 2}}",
    r"\frac{1}{x^2}+\frac{2}{y}-\frac{3}{4}x",
    r"2\cdot 3^{4}\cdot a",
    r"y=-2 x^{2}+4 x+3",
    r"(x-1)^2+(y+2)^2=9",
    r"x_{1}=10^{\frac{-5+\sqrt{13}}{6}}",
    r"\sqrt{x^2+y^2}+\sqrt[3]{x}^2",
    r"\frac{1}{3x^{2/3}}",
    r"\begin{pmatrix}\frac{1}{3}&0\\-\sin(x)&1\end{pmatrix}",
    r"F_n = \sum_{k=0}^{n-1} F_k F_{n-k-1}",
    r"\Gamma(10.5)+e^{e^{3}}",
    r"\cos(90^{\circ}-x)",
    r"\ln(x+1)-\log(y)+\arctan(x)",
    r"\frac{-b\pm\sqrt{b^2-4ac}}{2a}",
    r"\pi r^2h+2\pi r",
    r"\dfrac{3}{4}+\tfrac12",
    r"(-\infty,3)\cup[5,\infty)",
    r"\lfloor x\rfloor+\lceil y\rceil",
    r"\frac{n!}{k!(n-k)!}",
)
# runs of letters (``AZYUK2A``, ``QWERTY``): SLL prediction looks ahead over the whole run, and each new length
# builds new prediction states (50-70 ms on first sight); lengths 1-9, alone and before a number or a bracket
_WARMUP_LETTER_RUNS = tuple(
    run + tail for n in range(1, 10) for run in ("ABCDEFGHIJ"[:n], "enopqrstuv"[:n]) for tail in ("", "2x", "(x)")
)
# pairs compared once at warm-up: the first evaluation of a gamma function or of a trigonometric function at a
# rational point builds mpmath's tables (~0.1 s each), which would otherwise land on the first graded item
_WARMUP_PAIRS = (
    (r"\frac{(2n)!}{(2n-2)!}", r"2n(2n-1)"),
    (r"2\sin x\cos x", r"\sin 2x"),
    (r"\tan x", r"\frac{\sin x}{\cos x}"),
    (r"\log_2 8", "3"),
    (
        r"$\frac{a_0 \cdot \left(\frac{b_0}{c + b_0}\right)^{0.5}}{(c + b_0)}$",
        r"$\frac{a_{0}}{b_{0}} \frac{1}{\left(1+c / b_{0}\right)^{3 / 2}}$",
    ),
    (r"$5/2-3y/4$", r"$\frac{10-3y}{4}$"),
    (r"12w^5(12w^5+7)", r"12w^{5}(7+12w^{5})"),
    (r"\Gamma(\frac{7}{2})", r"\frac{15\sqrt{\pi}}{8}"),
    (r"\Gamma(300.5)", "7"),
    (r"e^{300y}", r"(e^{3y})^{100}"),
    (r"\frac{(3m)!}{m!\,(2m)!}", r"\binom{3m}{m}"),
)


def warm_up() -> None:
    """Parse a spread of expression kinds once: the ANTLR parser's prediction cache starts empty, and its first
    parses of each construct cost up to ~1 s (longer than a grading time bound)."""
    for text in _WARMUP + _WARMUP_LETTER_RUNS:
        try:
            _latex_to_sympy(text)  # the path grading takes (SLL on the respelled text, then LL)
        except Exception:  # noqa: BLE001 (warm-up only)
            logger.debug("warm-up parse failed: %s", text)
    from mm_gmpo.reward.grading import clear_caches, grade  # the whole path: normalisation decides what is parsed

    for a, b in _WARMUP_PAIRS:
        try:
            grade(a, b)
        except Exception:  # noqa: BLE001 (warm-up only)
            logger.debug("warm-up comparison failed: %s vs %s", a, b)
    clear_caches()
