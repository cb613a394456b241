"""Sizes and values of parsed answers, bounded: cheap checks before any exact or high-precision evaluation.

Order, cheapest first, for two symbol-free values (or two expressions at one rational point):
1. ``digits_bound`` (at parse time, ``symbolic.parse_latex``): a walk of the unevaluated tree estimating the
   digits of every number it evaluates through; towers and huge factorials never evaluate at all. Before it,
   ``cancel_factorial_ratios`` cancels a factorial (or gamma) against one in the denominator whose argument
   differs by a small integer: ``\\frac{10000!}{9999!}`` is the integer 10000, ``\\frac{(2n)!}{(2n-2)!}`` the
   product ``(2n-1)(2n)``, without building either factorial;
2. exact: a tree of integers and rationals under ``+ - * /``, integer powers, exact roots, ``!``, ``\\binom``,
   ``|.|``, floor and ceiling is evaluated with Python integers (``Fraction``); integers compare exactly, so
   ``2^{100}+1`` is not ``2^{100}``;
3. a float probe (15 digits, sympy's error-tracking ``evalf``): values that differ there are different;
4. high precision: ``BASE_DIGITS`` significant digits plus the digits of the largest number written, and a
   relative tolerance ``GUARD_DIGITS`` below that, so neither a large integer part nor a tiny written term such
   as ``10^{-200}`` is hidden by rounding. Comparisons that would need more than ``MAX_EVAL_DIGITS`` digits are
   not made (``None``: not known to be equal; a miss, never a false acceptance).

Sums, products, integrals, limits and derivatives are never evaluated here (a sum with a bound of ``10^{9}``
would run for minutes); the caller compares them as written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import sympy
from sympy.core.evalf import PrecisionExhausted

PROBE_DIGITS = 15
PROBE_TOLERANCE = Fraction(1, 10**9)  # relative: further apart than this at 15 good digits means different
BASE_DIGITS = 50
GUARD_DIGITS = 10
DIRECT_DIGITS = 120  # up to this working precision one evaluation costs about as much as a probe: no probe
MAX_EVAL_DIGITS = 1000
MAX_EXACT_DIGITS = 20000  # integers built by exact evaluation stay below this many digits
MAX_CANCELLED_TERMS = 5000  # a!/b! with a - b up to this many terms is their product (when it is not too large)
MAX_SYMBOLIC_TERMS = 12  # ... and up to this many when the arguments hold letters ((2n)!/(2n-2)!)
UNEVALUATED = (sympy.Sum, sympy.Product, sympy.Integral, sympy.Limit, sympy.Derivative)
_MAX_BITS = 4 * MAX_EXACT_DIGITS  # binary exponents of evaluated values stay below 2^80000 (about 10^24000)

Complex = tuple[Fraction, Fraction]  # (real, imaginary), exact images of the evaluated floats


class Unsafe(ValueError):
    """The expression is too large to evaluate safely."""


def digits_bound(expr: sympy.Basic, depth: int = 0) -> float:
    """A rough upper bound of log10 of the magnitude of any number ``expr`` evaluates through; inf for towers.

    A product's bound is the larger of its numerator's and its denominator's (``\\frac{5000!}{4998!}`` builds two
    16,000-digit integers, never their 33,000-digit product)."""
    if depth > 200:
        raise Unsafe("expression tree too deep")
    if expr.is_Integer:
        return math.log10(abs(int(expr))) if abs(int(expr)) > 1 else 0.0
    if expr.is_Rational:
        return math.log10(max(abs(expr.p), abs(expr.q)))
    if expr.is_Float or expr.is_Symbol or expr.is_NumberSymbol or not expr.args:
        return 1.0
    if isinstance(expr, sympy.Mul):
        up = down = 0.0
        for arg in expr.args:
            if isinstance(arg, sympy.Pow) and arg.exp.is_number and arg.exp.is_negative:
                down += digits_bound(sympy.Pow(arg.base, -arg.exp, evaluate=False), depth + 1)
            else:
                up += digits_bound(arg, depth + 1)
        return max(up, down)
    args = [digits_bound(a, depth + 1) for a in expr.args]
    if isinstance(expr, sympy.Pow):
        base, exponent = args
        return base * 10**exponent if exponent <= 6 else (0.0 if base == 0 else math.inf)
    if isinstance(expr, sympy.exp | sympy.sinh | sympy.cosh | sympy.tanh):  # e^x has 0.43 x digits
        if expr.args[0].is_Rational:  # a known exponent (an expression at a point): its size, not its digits
            size = abs(Fraction(int(expr.args[0].p), int(expr.args[0].q)))
            return 0.44 * float(size) if size <= 10**6 else math.inf
        return 0.44 * 10 ** args[0] if args[0] <= 6 else math.inf
    if isinstance(expr, sympy.factorial | sympy.factorial2 | sympy.gamma | sympy.binomial | sympy.subfactorial):
        n = 10 ** min(max(args), 400)
        return n * math.log10(n + 1) if max(args) < 400 else math.inf
    return max(args) + math.log10(len(args))


def _factorial_argument(node: sympy.Basic) -> sympy.Basic | None:
    """``a`` for ``a!`` and ``a - 1`` for ``\\Gamma(a)`` (arguments up to about 10^7 only; a number written as a
    computation, such as ``10^{6}-1``, as its integer), else None."""
    if not isinstance(node, sympy.factorial | sympy.gamma) or digits_bound(node.args[0]) > 7:
        return None
    argument = node.args[0]
    if argument.is_number and not argument.is_Integer:
        try:
            value = rational_value(argument)
        except (ZeroDivisionError, Unsafe):
            return None
        if value is None or value.denominator != 1:
            return None
        argument = sympy.Integer(value.numerator)
    return argument if isinstance(node, sympy.factorial) else argument - 1


def _factors(node: sympy.Basic, out: list, sign: int, depth: int = 0) -> None:
    """The factors of a product as (factor, +1 numerator / -1 denominator); ``X^{-1}`` goes to the denominator."""
    if isinstance(node, sympy.Mul) and depth < 20:
        for arg in node.args:
            _factors(arg, out, sign, depth + 1)
    elif isinstance(node, sympy.Pow) and node.exp == -1 and depth < 20:
        _factors(node.base, out, -sign, depth + 1)
    else:
        out.append((node, sign))


def _falling_product(top: sympy.Basic, bottom: sympy.Basic) -> sympy.Basic | None:
    """``top! / bottom!`` as the product ``(bottom+1)...(top)`` when ``top - bottom`` is a small nonnegative integer
    (an integer value of bounded size when both are integers), else None."""
    terms = top - bottom  # both arguments are small (``_factorial_argument``): this evaluates nothing large
    if not terms.is_Integer or terms < 0:
        return None
    if top.is_Integer and bottom.is_Integer:
        if bottom < 0 or terms > MAX_CANCELLED_TERMS or terms * math.log10(max(int(top), 2)) > MAX_EXACT_DIGITS:
            return None
        return sympy.Integer(math.prod(range(int(bottom) + 1, int(top) + 1)))
    if terms > MAX_SYMBOLIC_TERMS:
        return None
    return sympy.Mul(*(bottom + k for k in range(1, int(terms) + 1)), evaluate=False) if terms else sympy.Integer(1)


def _cancel_in_product(expr: sympy.Mul) -> sympy.Basic | None:
    """``expr`` with its factorial ratios cancelled (see ``cancel_factorial_ratios``), or None when none cancel."""
    factors: list = []
    _factors(expr, factors, 1)
    arguments = [_factorial_argument(f) for f, _ in factors]
    cancelled = False
    for i, (_, sign) in enumerate(factors):
        for j, (_, other) in enumerate(factors):
            if sign != 1 or other != -1 or arguments[i] is None or arguments[j] is None:
                continue
            top, bottom = arguments[i], arguments[j]
            ratio, upside = _falling_product(top, bottom), 1
            if ratio is None:
                ratio, upside = _falling_product(bottom, top), -1
            if ratio is not None:
                factors[i], factors[j] = (ratio, upside), (sympy.Integer(1), 1)
                arguments[i] = arguments[j] = None
                cancelled = True
                break
    if not cancelled:
        return None
    up = [f for f, s in factors if s == 1 and f != 1]
    down = [f for f, s in factors if s == -1]
    numerator = sympy.Mul(*up, evaluate=False) if len(up) > 1 else (up[0] if up else sympy.Integer(1))
    if not down:
        return numerator
    denominator = sympy.Mul(*down, evaluate=False) if len(down) > 1 else down[0]
    return sympy.Mul(numerator, sympy.Pow(denominator, -1, evaluate=False), evaluate=False)


def cancel_factorial_ratios(expr: sympy.Basic, depth: int = 0) -> sympy.Basic:
    """Every product in ``expr`` with ``a!`` over ``b!`` (or gammas) whose arguments differ by a small integer
    rewritten as the product of the terms between (an integer for integer arguments), so that
    ``\\frac{10000!}{9999!}`` costs one multiplication instead of two 35,000-digit factorials (which
    ``digits_bound`` refuses). Nothing else is evaluated; the tree is rebuilt unevaluated only where it changed."""
    if depth > 200 or not expr.args or not expr.has(sympy.factorial, sympy.gamma):
        return expr
    args = tuple(cancel_factorial_ratios(arg, depth + 1) for arg in expr.args)
    if args != expr.args:
        try:
            expr = expr.func(*args, evaluate=False)
        except TypeError:  # a node that cannot be rebuilt unevaluated: left as it was
            return expr
    cancelled = _cancel_in_product(expr) if isinstance(expr, sympy.Mul) else None
    return expr if cancelled is None else cancelled


def working_digits(*exprs: sympy.Basic) -> int:
    """Significant digits that resolve both the largest and the smallest number written in ``exprs``."""
    return BASE_DIGITS + math.ceil(max((digits_bound(e) for e in exprs), default=0.0))


# ------------------------------------------------------------------------------------------------ exact values
def _exact_root(value: Fraction, root: int) -> Fraction | None:
    """The exact nonnegative ``root``-th root of a nonnegative rational, or None when it is irrational."""
    if value < 0:
        return None  # sympy's principal root of a negative number is complex
    num, num_exact = sympy.integer_nthroot(value.numerator, root)
    den, den_exact = sympy.integer_nthroot(value.denominator, root)
    return Fraction(int(num), int(den)) if num_exact and den_exact else None


def _integer(value: Fraction) -> int | None:
    return value.numerator if value.denominator == 1 else None


def _rational_pow(base: Fraction, exponent: Fraction) -> Fraction | None:
    if exponent.denominator != 1:
        root = _exact_root(base, exponent.denominator)
        return None if root is None else _rational_pow(root, Fraction(exponent.numerator))
    power = exponent.numerator
    if base == 0 and power < 0:
        raise ZeroDivisionError
    if abs(power) * math.log10(max(abs(base.numerator), abs(base.denominator), 2)) > MAX_EXACT_DIGITS:
        raise Unsafe("power too large to evaluate exactly")
    return base**power


def _rational_factorial(n: Fraction) -> Fraction | None:
    if _integer(n) is None or n < 0 or n > 6000:  # 6000! has 20,000 digits
        return None
    return Fraction(math.factorial(int(n)))


def _rational_gamma(n: Fraction) -> Fraction | None:
    if _integer(n) is not None and n <= 0:
        raise ZeroDivisionError  # a pole
    return _rational_factorial(n - 1)


def _rational_binomial(n: Fraction, k: Fraction) -> Fraction | None:
    if _integer(n) is None or _integer(k) is None or n < 0 or n > 70000:
        return None
    return Fraction(math.comb(int(n), int(k))) if 0 <= k <= n else Fraction(0)


_RATIONAL_FUNCTIONS = {
    sympy.Abs: lambda x: abs(x),
    sympy.floor: lambda x: Fraction(math.floor(x)),
    sympy.ceiling: lambda x: Fraction(math.ceil(x)),
    sympy.factorial: _rational_factorial,
    sympy.gamma: _rational_gamma,
    sympy.binomial: _rational_binomial,
}


def rational_value(expr: sympy.Basic, point: dict | None = None) -> Fraction | None:
    """The exact value of a tree of rationals (symbols taken from ``point``), or None when it is not one.

    Raises ZeroDivisionError at a pole and ``Unsafe`` for a power too large to build."""
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    if expr.is_Symbol:
        return point.get(expr) if point else None
    if isinstance(expr, sympy.Add | sympy.Mul):
        total = Fraction(0 if isinstance(expr, sympy.Add) else 1)
        for arg in expr.args:
            value = rational_value(arg, point)
            if value is None:
                return None
            total = total + value if isinstance(expr, sympy.Add) else total * value
        return total
    if isinstance(expr, sympy.Pow):
        base, exponent = rational_value(expr.base, point), rational_value(expr.exp, point)
        return None if base is None or exponent is None else _rational_pow(base, exponent)
    function = _RATIONAL_FUNCTIONS.get(type(expr))
    if function is None:
        return None
    args = [rational_value(arg, point) for arg in expr.args]
    return None if any(a is None for a in args) else function(*args)


# ------------------------------------------------------------------------------------------------ numeric values
def _sympy_point(point: dict | None) -> dict | None:
    return None if point is None else {s: sympy.Rational(v.numerator, v.denominator) for s, v in point.items()}


def _fraction(part: sympy.Basic) -> Fraction | None:
    """A sympy Float or rational exactly as a Fraction (from its binary mantissa and exponent, never via str)."""
    if part.is_Rational:
        return Fraction(int(part.p), int(part.q))
    if not part.is_Float:
        return None
    sign, mantissa, exponent, _ = part._mpf_
    if not mantissa or abs(exponent) > _MAX_BITS:
        return Fraction(0) if not mantissa and exponent == 0 else None  # 0, or inf / nan / a bound overrun
    number = Fraction(mantissa) * Fraction(2) ** exponent
    return -number if sign else number


def numeric(expr: sympy.Basic, digits: int, point: dict | None = None) -> Complex | None:
    """``expr`` (at ``point``) to ``digits`` significant digits, as sympy's evalf guarantees them; None when it is
    not a finite number, the digits cannot be reached, or it holds a sum, integral, limit or derivative."""
    if not isinstance(expr, sympy.Expr) or expr.has(*UNEVALUATED):
        return None
    try:
        value = expr.evalf(digits, subs=_sympy_point(point), strict=True, maxn=digits + BASE_DIGITS)
    except (PrecisionExhausted, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    if not value.is_number or value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    real, imag = (_fraction(part) for part in value.as_real_imag())
    return None if real is None or imag is None else (real, imag)


def near(a: Complex, b: Complex, tolerance: Fraction) -> bool:
    """Relative agreement of two complex values (exact zeros agree only with each other)."""
    scale = max(abs(a[0]), abs(a[1]), abs(b[0]), abs(b[1]))
    return abs(a[0] - b[0]) + abs(a[1] - b[1]) <= tolerance * scale


@dataclass(frozen=True)
class Comparison:
    equal: bool | None  # None: could not be decided (not a number, too large to evaluate)
    real: bool = True  # both values real (a radical of a negative number makes one complex)


def _working_digits_at(a: sympy.Expr, b: sympy.Expr, point: dict) -> int | None:
    """``working_digits`` of both sides with ``point`` substituted (small numbers combined): a bound read off
    the expression takes every letter as up to 10, so ``e^{1000x}`` looks like 4,400 digits everywhere, while at
    ``x = 13/7`` it has 810 (and ``(e^{10x})^{100}`` as many), few enough to compare. None when substituting fails."""
    values = _sympy_point(point)
    try:
        return working_digits(a.xreplace(values), b.xreplace(values))
    except (ZeroDivisionError, ValueError, TypeError, OverflowError, Unsafe):
        return None


def compare(a: sympy.Expr, b: sympy.Expr, point: dict | None = None) -> Comparison:
    """Equality of two symbol-free values (or of two expressions at ``point``, symbol -> Fraction), cheapest
    check first: exact rationals, then the float probe, then enough digits (module docstring)."""
    try:
        exact_a, exact_b = rational_value(a, point), rational_value(b, point)
    except (ZeroDivisionError, Unsafe):
        return Comparison(None)
    if exact_a is not None and exact_b is not None:
        return Comparison(exact_a == exact_b)
    digits = working_digits(a, b)
    if digits > DIRECT_DIGITS and point:
        digits = _working_digits_at(a, b, point) or digits
    if digits > DIRECT_DIGITS:
        probe_a, probe_b = numeric(a, PROBE_DIGITS, point), numeric(b, PROBE_DIGITS, point)
        if probe_a is None or probe_b is None:
            return Comparison(None)
        real = probe_a[1] == 0 and probe_b[1] == 0
        if not near(probe_a, probe_b, PROBE_TOLERANCE):
            return Comparison(False, real)
        if digits > MAX_EVAL_DIGITS:
            return Comparison(None, real)
    value_a, value_b = numeric(a, digits, point), numeric(b, digits, point)
    if value_a is None or value_b is None:
        return Comparison(None)
    real = value_a[1] == 0 and value_b[1] == 0
    return Comparison(near(value_a, value_b, Fraction(1, 10 ** (digits - GUARD_DIGITS))), real)


def real_value(expr: sympy.Expr) -> Fraction | None:
    """The exact value of a rational tree, else the real value to enough digits (None: not a real number, or too
    large to evaluate)."""
    try:
        exact = rational_value(expr)
    except (ZeroDivisionError, Unsafe):
        return None
    if exact is not None:
        return exact
    digits = working_digits(expr)
    value = numeric(expr, digits) if digits <= MAX_EVAL_DIGITS else None
    return value[0] if value is not None and value[1] == 0 else None


def value_at_point(expr: sympy.Expr, point: dict) -> Fraction | Complex | None:
    """The exact value of a rational function at ``point``, else its value to enough digits (None: a pole, not a
    number, or too large to evaluate)."""
    try:
        exact = rational_value(expr, point)
    except (ZeroDivisionError, Unsafe):
        return None
    if exact is not None:
        return exact
    digits = working_digits(expr)
    return numeric(expr, digits, point) if digits <= MAX_EVAL_DIGITS else None
