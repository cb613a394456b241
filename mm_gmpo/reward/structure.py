"""Split a normalised answer into its shape: list, set, tuple, interval (union), matrix, relation or scalar.

The shape decides how two answers are compared (``equivalence.py``). Splitting is a linear bracket-aware scan
of the string; nothing is evaluated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mm_gmpo.reward.normalize import parse_number

_OPEN, _CLOSE = "([{", ")]}"
_MATRIX_RE = re.compile(
    r"^\\begin\{(pmatrix|bmatrix|Bmatrix|vmatrix|matrix|array|smallmatrix|cases)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}$",
    re.DOTALL,
)
_RELATIONS = (r"\leq", r"\geq", r"\neq", "<", ">", "=")
_REL_SPLIT_RE = re.compile(r"\\leq|\\geq|\\neq|(?<![\\])<|>|(?<![<>!\\])=")
_NAME_RE = re.compile(
    r"^\s*(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?(?:'|\^\{?\\prime\}?)?(?:\([A-Za-z0-9, ]*\))?|\|[A-Za-z]+\||"
    r"\([A-Za-z](?:\s*,\s*[A-Za-z])*\)|[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?\s*:\s*[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?|"
    r"\\frac\{[A-Za-z]+\}\{[A-Za-z]+\}|\\[a-zA-Z]+|[A-Z]{1,3}|"
    r"(?:m\s*)?\\(?:angle|measuredangle|triangle)\s*\{?(?:[A-Z]{1,3}|\d)\}?|\\(?:overline|widehat|overarc)\{[A-Z]{1,3}\})\s*$"
)  # the last line: geometry names (m\angle ABC, \angle 1, \overline{AB}, \triangle ABC)
_WORD_SPLIT_RE = re.compile(
    r"\s+(?:and|or)\s+|\s*\\(?:text|mathrm)\{\s*(?:and|or)\s*\}\s*|(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[{\\])"
    r"|(?<=\d)(?:and|or)(?=[A-Za-z(\\])",  # glued: W(x)=1orW(x)=-1
    re.IGNORECASE,
)


@dataclass
class Shape:
    """``kind``: list (unordered, bare separators), set (``\\{...\\}``), tuple, interval, union, difference, matrix,
    relation (``lhs op rhs`` chains), scalar. ``items`` holds the parts (for an interval: its two ends,
    with ``brackets`` the two bracket characters); for a relation, ``ops`` holds the operators between items."""

    kind: str
    items: list = field(default_factory=list)
    brackets: str = ""
    ops: list[str] = field(default_factory=list)
    text: str = ""


def split_top(text: str, separators: str = ",;") -> list[str]:
    """Split at separators outside brackets (``\\{`` counts as a bracket, ``\\\\`` does not)."""
    parts, depth, start, i, n = [], 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}":
            depth += 1 if text[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and c in separators:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _outer_pair(text: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when one bracket pair encloses the whole text."""
    if len(text) < 2:
        return None
    if text.startswith(r"\{") and text.endswith(r"\}"):
        inner = text[2:-2]
        return ("{", inner, "}") if _balanced(inner) else None
    if text[0] in "([" and text[-1] in ")]":
        inner = text[1:-1]
        return (text[0], inner, text[-1]) if _balanced(inner) else None
    if text[0] == "{" and text[-1] == "}" and _balanced(text[1:-1]):
        return ("{", text[1:-1], "}")
    return None


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def is_name(text: str) -> bool:
    """A left-hand side that only names the answer: ``x``, ``f(x)``, ``a_{37}``, ``|AB|``, ``(p,q)``,
    ``V_1:V_2``, ``\\frac{NO}{BO}``, ``m\\angle ABC``, ``\\overline{AB}``."""
    return bool(_NAME_RE.match(text))


def relation_parts(text: str) -> tuple[list[str], list[str]]:
    """Top-level relation chain: parts and operators (``a = b \\leq c`` -> [a, b, c], [=, \\leq])."""
    parts, ops, depth, start = [], [], 0, 0
    for m in _REL_SPLIT_RE.finditer(text):
        depth = sum(text.count(o, 0, m.start()) for o in _OPEN) - sum(text.count(c, 0, m.start()) for c in _CLOSE)
        if depth:
            continue
        parts.append(text[start : m.start()].strip())
        ops.append(m.group(0))
        start = m.end()
    parts.append(text[start:].strip())
    return parts, ops


def strip_name(text: str) -> str:
    """``x = 3`` -> ``3``; ``x = 5+5+1 = 7 = 11`` -> ``11``; ``x \\in [0,1]`` -> ``[0,1]``; ``a \\approx b`` -> a."""
    approx = re.split(r"\\approx|\\sim(?![a-z])", text, maxsplit=1)
    if len(approx) == 2 and approx[0].strip() and approx[1].strip():
        text = approx[1].strip() if is_name(approx[0]) else approx[0].strip()
    if len(split_top(text)) > 1 or len(_WORD_SPLIT_RE.split(text)) > 1:
        return text
    m = re.match(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*(.+)$", text)
    if m:
        return m.group(1).strip()
    if "=" not in text:
        return text
    parts, ops = relation_parts(text)
    if len(parts) < 2 or any(op != "=" for op in ops) or not all(parts):
        return text
    if len(parts) >= 3 or is_name(parts[0]) or _is_computation(parts[0]):
        return parts[-1]
    return text


def _is_computation(text: str) -> bool:
    """A left side made of numbers and operators only (``0.05 \\cdot 200 = 10``): the answer is its result."""
    letters = re.sub(r"\\(?:frac|dfrac|sqrt|cdot|times|div|left|right|\$)|\^\s*\{?\\circ\}?", "", text)
    operator = re.search(r"[-+*/^]|\\(?:frac|sqrt|cdot|times|div)", text.strip().lstrip("+-"))  # not "7 = 11a+c"
    return bool(operator) and any(c.isdigit() for c in text) and not re.search(r"[A-Za-z\\]", letters)


def assignment_tuples(text: str) -> Shape | None:
    """``p=5, q=2`` as the tuple ``(5, 2)``; ``p=5,q=2; p=7,q=2`` as the list of tuples ``(5,2), (7,2)``.
    Every group must assign the same names in the same order (at least two)."""
    groups = [g for g in split_top(text, ";") if g]
    names, tuples = None, []
    for group in groups:
        pairs = [relation_parts(item) for item in split_top(group, ",")]
        if any(ops != ["="] or not re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?", parts[0]) for parts, ops in pairs):
            return None
        group_names = [parts[0] for parts, _ in pairs]
        if len(group_names) < 2 or len(set(group_names)) < len(group_names) or names not in (None, group_names):
            return None
        names = group_names
        tuples.append("(" + ", ".join(parts[1] for parts, _ in pairs) + ")")
    if not tuples:
        return None
    if len(tuples) == 1:
        return shape_of(tuples[0])
    return Shape("list", tuples, text=text)


def _expand_pm(text: str) -> list[str] | None:
    if r"\pm" not in text and r"\mp" not in text:
        return None
    plus = text.replace(r"\pm", "+").replace(r"\mp", "-")
    minus = text.replace(r"\pm", "-").replace(r"\mp", "+")
    return [re.sub(r"^\s*\+", "", plus).strip(), minus.strip()]


def shape_of(text: str) -> Shape:
    """The shape of one normalised answer."""
    text = text.strip()
    if parse_number(text) is not None:
        return Shape("scalar", [text], text=text)
    m = _MATRIX_RE.match(text) if text.count(r"\begin{") == 1 else None  # not "A + B" of two matrices
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip() and not r.strip().startswith(r"\hline")]
        return Shape("matrix", [[c.strip() for c in r.split("&")] for r in rows], text=text)
    parts = [p for p in _WORD_SPLIT_RE.split(text) if p.strip()]
    if len(parts) > 1:
        items = [i for p in parts for i in split_top(p) if i]
        return Shape("list", items, text=text)
    if r"\setminus" in text:  # (-\infty,\infty) \setminus \{1\}: a set without some points
        pieces = [p.strip() for p in text.split(r"\setminus")]
        if len(pieces) == 2 and all(_balanced(p) for p in pieces):
            return Shape("difference", [shape_of(p) for p in pieces], text=text)
    if r"\cup" in text:
        pieces = [p.strip() for p in text.split(r"\cup")]
        if all(_balanced(p) for p in pieces):
            return Shape("union", [shape_of(p) for p in pieces], text=text)
    items = split_top(text)
    if len(items) > 1:
        return Shape("list", [i for i in items if i], text=text)
    pair = _outer_pair(text)
    if pair:
        open_, inner, close = pair
        inside = split_top(inner)
        if open_ == "{":
            if text.startswith(r"\{") or len(inside) > 1:
                return Shape("set", [i for i in inside if i], text=text)
            return shape_of(inner)
        if len(inside) == 2 and (open_ + close in ("[)", "(]", "[]") or r"\infty" in inner):
            return Shape("interval", inside, brackets=open_ + close, text=text)
        if len(inside) > 1:
            return Shape("tuple", inside, brackets=open_ + close, text=text)
    if len(relation_parts(text)[0]) > 1:
        parts, ops = relation_parts(text)
        if all(parts):
            return Shape("relation", parts, ops=ops, text=text)
    pm = _expand_pm(text)
    if pm:
        return Shape("list", pm, text=text)
    return Shape("scalar", [text], text=text)
