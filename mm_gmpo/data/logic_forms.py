"""Geometry3K diagram annotations: parse the Inter-GPS logic forms and place every point the diagram needs.

A logic form is a nested call such as ``Equals(LengthOf(Line(A, B)), 4y-10)``. :func:`parse_form` turns it into a
:class:`Term` tree that keeps the source text of every argument, because stated values (``4y-10``, ``2\\sqrt{3}``,
``66--y``) are written onto the diagram exactly as annotated. :func:`build_scene` collects what a renderer needs:
point positions (annotated, or derived from ``PointLiesOnLine`` / ``Perpendicular`` where that is cheap),
segments, circles, stated lengths and angles, right angles, parallel marks and equal-length ticks.
All coordinates are the annotation's pixel coordinates (x right, y down).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

Point = tuple[float, float]


@dataclass
class Term:
    """``name(args)`` for a call, or an atom (``args`` empty, ``is_call`` False); ``text`` is the source slice."""

    name: str
    args: list[Term] = field(default_factory=list)
    text: str = ""
    is_call: bool = False


_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z_0-9]*)\s*\(")


def parse_form(text: str) -> Term | None:
    """Parse one logic form; None when it is empty or not a call (a few annotations are malformed)."""
    text = text.strip()
    if not text:
        return None
    try:
        term, end = _parse(text, 0)
    except (IndexError, ValueError):
        return None
    return term if term.is_call and text[end:].strip() == "" else None


def _parse(text: str, pos: int) -> tuple[Term, int]:
    match = _CALL.match(text, pos)
    if match:
        name, pos, args = match.group(1), match.end(), []
        while True:
            arg, pos = _parse(text, pos)
            args.append(arg)
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] != ")":
                raise ValueError(f"expected ')' at {pos}")
            end = pos + 1
            return Term(name, args, text[match.start() : end].strip(), True), end
    depth, start = 0, pos
    while depth > 0 or text[pos] not in ",)":  # an atom may hold balanced parentheses, e.g. 2(x+1)
        depth += {"(": 1, ")": -1}.get(text[pos], 0)
        pos += 1
    atom = text[start:pos].strip()
    return Term(atom, text=atom), pos


@dataclass
class Scene:
    """Everything a renderer draws, in annotation pixel coordinates."""

    points: dict[str, Point]  # name -> (x, y); only points that could be placed
    segments: list[tuple[str, str]]  # drawn line segments
    circles: list[tuple[str, float]]  # (centre name, radius in pixels)
    lengths: list[tuple[str, str, str]]  # (point, point, stated value) written near the midpoint
    angles: list[tuple[str, str, str, str]]  # (arm point, vertex, arm point, label) written inside the angle
    arcs: list[tuple[list[str], str]]  # (arc end points, label) for stated arc measures
    right_angles: list[tuple[str, str, str]]  # (arm point, vertex, arm point)
    parallels: list[tuple[str, str]]  # segments carrying a parallel arrow
    equal_ticks: list[tuple[str, str, int]]  # (point, point, tick count) for segments stated equal
    captions: list[str]  # facts with no place on the figure (areas, perimeters, heights)
    missing: list[str]  # named points that could not be placed (left out with everything touching them)


def _line_points(term: Term) -> tuple[str, str] | None:
    if term.is_call and term.name == "Line" and len(term.args) == 2:
        return term.args[0].name, term.args[1].name
    return None


def split_line_instance(name: str, known: set[str]) -> tuple[str, str] | None:
    """``"AB"`` -> ("A", "B"); point names can be longer (``B'``, ``point_26``), so match known names."""
    for first in sorted(known, key=len, reverse=True):
        if name.startswith(first) and name[len(first) :] in known:
            return first, name[len(first) :]
    return None


def line_intersection(a: Point, b: Point, c: Point, d: Point) -> Point | None:
    """Intersection of the infinite lines AB and CD; None when (nearly) parallel."""
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = a, b, c, d
    den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
    if abs(den) < 1e-9 * max(1.0, math.dist(a, b) * math.dist(c, d)):
        return None
    s = ((x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)) / den
    return x1 + s * (x2 - x1), y1 + s * (y2 - y1)


def foot_of_perpendicular(p: Point, a: Point, b: Point) -> Point:
    ab = (b[0] - a[0], b[1] - a[1])
    norm = ab[0] ** 2 + ab[1] ** 2 or 1.0
    s = ((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1]) / norm
    return a[0] + s * ab[0], a[1] + s * ab[1]


def _lines_through(name: str, on_lines: dict[str, list[tuple[str, str]]], points: dict[str, Point]):
    """Known lines (as point pairs) that ``name`` lies on: ``PointLiesOnLine(name, Line(A, B))``, and
    ``PointLiesOnLine(P, Line(name, Q))`` (then P, Q and ``name`` are collinear)."""
    lines = [(a, b) for a, b in on_lines.get(name, []) if a in points and b in points]
    for on_point, pairs in on_lines.items():
        for a, b in pairs:
            if name in (a, b) and on_point in points:
                other = b if a == name else a
                if other in points and math.dist(points[other], points[on_point]) > 1:
                    lines.append((on_point, other))
    return [(points[a], points[b]) for a, b in lines]


def _derive_missing(points: dict[str, Point], on_lines: dict[str, list[tuple[str, str]]], perps) -> None:
    """Place unannotated points: the crossing of two lines they lie on, else the foot of a perpendicular
    dropped onto the one line they lie on."""
    names = set(on_lines) | {p for pairs in on_lines.values() for pair in pairs for p in pair}
    for _ in range(3):  # a derived point can unlock another
        for name in sorted(names - set(points)):
            known = _lines_through(name, on_lines, points)
            hit = next(
                (
                    p
                    for i, j in itertools.combinations(range(len(known)), 2)
                    if (p := line_intersection(*known[i], *known[j]))
                ),
                None,
            )
            if hit is not None:
                points[name] = hit
                continue
            for line in (line for pair in perps for line in pair) if known else ():
                other = line[1] if line[0] == name else line[0] if line[1] == name else None
                if other in points and _distance_to_line(points[other], *known[0]) > 1:
                    points[name] = foot_of_perpendicular(points[other], *known[0])
                    break


def _distance_to_line(p: Point, a: Point, b: Point) -> float:
    return math.dist(p, foot_of_perpendicular(p, a, b))


def _circle_radii(forms: list[Term], points: dict[str, Point], centres: list[str]) -> list[tuple[str, float]]:
    on_circle: dict[str, list[float]] = {}
    for form in forms:
        if form.name == "PointLiesOnCircle" and len(form.args) == 2 and form.args[1].name == "Circle":
            centre = form.args[1].args[0].name if form.args[1].args else ""
            if form.args[0].name in points and centre in points:
                on_circle.setdefault(centre, []).append(math.dist(points[form.args[0].name], points[centre]))
    circles = []
    for centre in dict.fromkeys(centres + list(on_circle)):
        radii = sorted(on_circle.get(centre, []))
        if radii and centre in points:
            circles.append((centre, radii[len(radii) // 2]))  # the median shrugs off one misplaced point
    return circles


def _value_label(value: Term) -> str:
    return value.text.replace(" ", "")


def _angle_label(value: Term) -> str:
    """``60`` -> ``60°``, ``2x`` -> ``2x°``, ``4y-10`` -> ``(4y-10)°``, ``MeasureOf(angle 1)`` -> ``1`` (a numbered angle)."""
    if value.is_call and value.name == "MeasureOf" and value.args and value.args[0].name.startswith("angle"):
        return value.args[0].name.removeprefix("angle").strip()
    text = _value_label(value)
    if re.search(r"[+\-]", text[1:]):  # a sum needs parentheses before the degree sign: (4y-10)°
        return f"({text})°"
    return f"{text}°"


def build_scene(row: dict) -> Scene:
    """Collect the drawable facts of one Geometry3K row (fields ``point_positions``, ``line_instances``,
    ``circle_instances``, ``diagram_logic_form``)."""
    points: dict[str, Point] = {k: (float(v[0]), float(v[1])) for k, v in (row.get("point_positions") or {}).items()}
    forms = [t for t in (parse_form(s) for s in row.get("diagram_logic_form") or []) if t is not None]
    names = set(points)
    on_lines: dict[str, list[tuple[str, str]]] = {}
    perps = []
    for form in forms:
        if form.name == "PointLiesOnLine" and len(form.args) == 2 and (line := _line_points(form.args[1])):
            on_lines.setdefault(form.args[0].name, []).append(line)
            names.update((form.args[0].name, *line))
        elif form.name == "Perpendicular" and len(form.args) == 2:
            pair = _line_points(form.args[0]), _line_points(form.args[1])
            if all(pair):
                perps.append(pair)
    _derive_missing(points, on_lines, perps)
    segments = []
    for instance in row.get("line_instances") or []:
        pair = split_line_instance(instance, set(points))
        if pair and pair[0] != pair[1]:
            segments.append(pair)
    scene = Scene(points, segments, [], [], [], [], [], [], [], [], [])
    scene.circles = _circle_radii(forms, points, list(row.get("circle_instances") or []))
    _collect_marks(scene, forms, perps)
    named = names | {p for seg in segments for p in seg} | {c for c in row.get("circle_instances") or []}
    scene.missing = sorted(n for n in named if n not in points and len(n) <= 2)
    return scene


def _collect_marks(scene: Scene, forms: list[Term], perps) -> None:
    placed = scene.points
    tick_groups: dict[str, int] = {}
    for form in forms:
        if form.name == "Equals" and len(form.args) == 2:
            _collect_equals(scene, form.args[0], form.args[1], tick_groups)
        elif form.name == "Parallel" and len(form.args) == 2:
            lines = [_line_points(a) for a in form.args]
            if all(lines) and all(p in placed for line in lines for p in line):
                scene.parallels.extend(lines)
    for line_1, line_2 in perps:
        if not all(p in placed for p in (*line_1, *line_2)):
            continue
        common = set(line_1) & set(line_2)
        if common:
            vertex = common.pop()
            arm_1 = line_1[0] if line_1[1] == vertex else line_1[1]
            arm_2 = line_2[0] if line_2[1] == vertex else line_2[1]
            scene.right_angles.append((arm_1, vertex, arm_2))
        elif hit := line_intersection(*(placed[p] for p in (*line_1, *line_2))):
            # the right angle sits where the two lines cross: name that crossing after the first arm
            key = f"_perp{len(scene.right_angles)}"
            placed[key] = hit
            far_1 = max(line_1, key=lambda p: math.dist(placed[p], hit))
            far_2 = max(line_2, key=lambda p: math.dist(placed[p], hit))
            scene.right_angles.append((far_1, key, far_2))


def _collect_equals(scene: Scene, lhs: Term, rhs: Term, tick_groups: dict[str, int]) -> None:
    placed = scene.points
    if lhs.name == "Line" and rhs.name == "Line":  # Equals(Line(A, E), Line(B, E)): equal lengths
        lhs, rhs = Term("LengthOf", [lhs], lhs.text, True), Term("LengthOf", [rhs], rhs.text, True)
    inner = lhs.args[0] if lhs.is_call and lhs.args else None
    if lhs.name == "LengthOf" and inner is not None and (line := _line_points(inner)):
        if not all(p in placed for p in line):
            return
        other = _line_points(rhs.args[0]) if rhs.name == "LengthOf" and rhs.args else None
        if other and all(p in placed for p in other):
            group = tick_groups.setdefault(rhs.text, tick_groups.get(lhs.text, len(tick_groups) + 1))
            tick_groups.setdefault(lhs.text, group)
            for seg in (line, other):
                if (*seg, min(group, 3)) not in scene.equal_ticks:
                    scene.equal_ticks.append((*seg, min(group, 3)))
        elif not rhs.is_call:
            scene.lengths.append((*line, _value_label(rhs)))
    elif lhs.name == "MeasureOf" and inner is not None and inner.name == "Angle" and len(inner.args) == 3:
        arm_1, vertex, arm_2 = (a.name for a in inner.args)
        if all(p in placed for p in (arm_1, vertex, arm_2)):
            if rhs.is_call and not (rhs.name == "MeasureOf" and rhs.args and rhs.args[0].name.startswith("angle")):
                return  # angle = angle: equal-angle arcs would clutter more than they tell
            scene.angles.append((arm_1, vertex, arm_2, _angle_label(rhs)))
    elif lhs.name in ("MeasureOf", "LengthOf") and inner is not None and inner.name == "Arc":
        ends = [a.name for a in inner.args]
        if ends and all(p in placed for p in ends) and not rhs.is_call:
            label = _angle_label(rhs) if lhs.name == "MeasureOf" else _value_label(rhs)
            scene.arcs.append((ends, label))
    elif lhs.name in ("AreaOf", "HeightOf", "PerimeterOf") or (lhs.name == "LengthOf" and inner is not None):
        what = lhs.name.removesuffix("Of").lower() if lhs.name != "LengthOf" else inner.name.removesuffix("Of").lower()
        if not rhs.is_call:
            scene.captions.append(f"{what} = {_value_label(rhs)}")
