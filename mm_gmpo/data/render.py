"""Draw a clean Geometry3K diagram from its annotation, when the original image is not at hand.

The drawing keeps the annotation's pixel frame (1 annotation unit = 1 pixel, x right, y down), shifted by a margin
so that labels near the border fit, and styled like the textbook figures the dataset was cut from: blue segments and
circles, point labels placed away from the lines meeting at the point, stated lengths beside the segment's midpoint
(on the side away from the figure), stated angles inside the angle with a small arc, magenta right-angle squares and
parallel arrows, ticks on segments stated equal. Facts with no place on the figure (areas, heights) are written as
a caption under it. Points the annotation neither places nor lets us derive cheaply are left out, with every mark
that touches them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mm_gmpo.data.logic_forms import Point, Scene, build_scene

LINE = (20, 80, 160)
MARK = (215, 0, 120)
TEXT = (0, 0, 0)
BOX = tuple[float, float, float, float]


def latex_to_plain(text: str) -> str:
    """Make a stated value printable: ``2\\sqrt{3}`` -> ``2√3``, ``\\frac{1}{2}`` -> ``1/2``, ``\\pi`` -> ``π``."""
    text = text.replace("$", "")
    text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", text)
    text = re.sub(r"\\sqrt\{([^{}]{1,2})\}", r"√\1", text)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", text)
    for latex, plain in (("\\pi", "π"), ("\\circ", "°"), ("\\cdot", "·"), ("\\theta", "θ"), ("\\angle", "∠")):
        text = text.replace(latex, plain)
    return text.replace("^°", "°").replace("{", "").replace("}", "").replace("\\", "")


def _unit(dx: float, dy: float) -> Point:
    norm = math.hypot(dx, dy)
    return (dx / norm, dy / norm) if norm > 1e-9 else (0.0, 0.0)


def _overlaps(box: BOX, boxes: list[BOX]) -> int:
    return sum(1 for b in boxes if box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3])


class _Canvas:
    """A drawing surface in annotation coordinates, with collision-aware label placement."""

    def __init__(self, scene: Scene, margin: int, font_size: int | None):
        xs = [p[0] for p in scene.points.values()] + [
            scene.points[c][0] + s * r for c, r in scene.circles for s in (-1, 1)
        ]
        ys = [p[1] for p in scene.points.values()] + [
            scene.points[c][1] + s * r for c, r in scene.circles for s in (-1, 1)
        ]
        xs, ys = xs or [0.0], ys or [0.0]
        extent = max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
        self.font_size = font_size or int(min(24, max(15, extent / 12)))
        self.line_width = 2 if extent < 250 else 3
        self.font = ImageFont.load_default(size=self.font_size)
        self.offset = (margin - min(xs), margin - min(ys))
        caption_height = (self.font_size + 6) * len(scene.captions)
        width = max(112, math.ceil(max(xs) - min(xs) + 2 * margin))
        height = max(112, math.ceil(max(ys) - min(ys) + 2 * margin + caption_height))
        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.points = {name: self.xy(p) for name, p in scene.points.items()}
        self.centroid = (sum(x for x, _ in self.points.values()) / max(1, len(self.points)), 0.0)
        self.centroid = (self.centroid[0], sum(y for _, y in self.points.values()) / max(1, len(self.points)))
        self.boxes: list[BOX] = [(x - 3, y - 3, x + 3, y + 3) for x, y in self.points.values()]

    def xy(self, p: Point) -> Point:
        return p[0] + self.offset[0], p[1] + self.offset[1]

    def label(self, text: str, candidates: list[Point], fill=TEXT) -> None:
        """Write ``text`` centred at the first candidate that overlaps no earlier label or point (else the least)."""
        text = latex_to_plain(text)
        width, height = self.image.size
        best, best_score = None, None
        for rank, (x, y) in enumerate(candidates):
            box = self.draw.textbbox((x, y), text, font=self.font, anchor="mm")
            outside = box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height
            score = (_overlaps(box, self.boxes) + 10 * outside, rank)
            if best_score is None or score < best_score:
                best, best_score = (x, y, box), score
            if score[0] == 0:
                break
        if best is not None:
            x, y, box = best
            self.draw.text((x, y), text, font=self.font, fill=fill, anchor="mm")
            self.boxes.append(box)


def _around(centre: Point, direction: Point, distance: float, turns=(0, 35, -35, 70, -70, 110, -110, 180)):
    out = []
    for turn in turns:
        a = math.radians(turn)
        dx = direction[0] * math.cos(a) - direction[1] * math.sin(a)
        dy = direction[0] * math.sin(a) + direction[1] * math.cos(a)
        out.append((centre[0] + distance * dx, centre[1] + distance * dy))
    return out


def _draw_figure(canvas: _Canvas, scene: Scene) -> None:
    draw, pts = canvas.draw, canvas.points
    for centre, radius in scene.circles:
        x, y = pts[centre]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=LINE, width=canvas.line_width)
    for a, b in scene.segments:
        draw.line((pts[a], pts[b]), fill=LINE, width=canvas.line_width)
    for arm_1, vertex, arm_2 in scene.right_angles:
        v, u1, u2 = pts[vertex], _unit(*_sub(pts[arm_1], pts[vertex])), _unit(*_sub(pts[arm_2], pts[vertex]))
        s = 9.0
        corner = [(v[0] + s * u1[0], v[1] + s * u1[1]), (v[0] + s * (u1[0] + u2[0]), v[1] + s * (u1[1] + u2[1]))]
        draw.line([*corner, (v[0] + s * u2[0], v[1] + s * u2[1])], fill=MARK, width=2)
    reference = None
    for a, b in scene.parallels:  # arrows on parallel segments all point the same way
        d = _unit(*_sub(pts[b], pts[a]))
        reference = reference or d
        if d[0] * reference[0] + d[1] * reference[1] < 0:
            d = (-d[0], -d[1])
        m, n = _mid(pts[a], pts[b]), (-d[1], d[0])
        k = canvas.font_size / 3  # arrow size follows the text size
        tip = (m[0] + k * d[0], m[1] + k * d[1])
        wings = [(m[0] - k * d[0] + s * k * n[0], m[1] - k * d[1] + s * k * n[1]) for s in (1, -1)]
        draw.polygon([wings[0], tip, wings[1]], fill=MARK)
    for a, b, count in scene.equal_ticks:
        d = _unit(*_sub(pts[b], pts[a]))
        n, m = (-d[1], d[0]), _mid(pts[a], pts[b])
        for k in range(count):
            shift = (k - (count - 1) / 2) * 4
            c = (m[0] + shift * d[0], m[1] + shift * d[1])
            draw.line(((c[0] - 6 * n[0], c[1] - 6 * n[1]), (c[0] + 6 * n[0], c[1] + 6 * n[1])), fill=MARK, width=2)
    for x, y in pts.values():
        draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=TEXT)


def _sub(p: Point, q: Point) -> Point:
    return p[0] - q[0], p[1] - q[1]


def _mid(p: Point, q: Point) -> Point:
    return (p[0] + q[0]) / 2, (p[1] + q[1]) / 2


def _point_labels(canvas: _Canvas, scene: Scene) -> None:
    pts, neighbours = canvas.points, {name: [] for name in canvas.points}
    for a, b in scene.segments:
        neighbours[a].append(pts[b])
        neighbours[b].append(pts[a])
    for centre, _ in scene.circles:
        for name, p in pts.items():  # points on a circle: keep the label off the circle's line too
            if name != centre and abs(math.dist(p, pts[centre]) - dict(scene.circles)[centre]) < 3:
                neighbours[name].append(pts[centre])
    for name, p in pts.items():
        if name.startswith("_"):
            continue
        away = [0.0, 0.0]
        for q in neighbours[name]:
            u = _unit(*_sub(p, q))
            away = [away[0] + u[0], away[1] + u[1]]
        direction = _unit(*away)
        if direction == (0.0, 0.0):
            direction = _unit(*_sub(p, canvas.centroid)) if math.dist(p, canvas.centroid) > 1 else (0.7, 0.7)
        canvas.label(name, _around(p, direction, canvas.font_size * 0.9))


def _value_labels(canvas: _Canvas, scene: Scene) -> None:
    pts, size = canvas.points, canvas.font_size
    for arm_1, vertex, arm_2, text in scene.angles:
        v = pts[vertex]
        u1, u2 = _unit(*_sub(pts[arm_1], v)), _unit(*_sub(pts[arm_2], v))
        bisector = _unit(u1[0] + u2[0], u1[1] + u2[1])
        if bisector == (0.0, 0.0):  # a straight angle: write it on the side away from the figure
            bisector = (-u1[1], u1[0])
        opening = math.acos(max(-1.0, min(1.0, u1[0] * u2[0] + u1[1] * u2[1])))
        radius = size * 0.9
        start, end = (math.degrees(math.atan2(u[1], u[0])) for u in (u1, u2))
        if (end - start) % 360 > 180:
            start, end = end, start
        canvas.draw.arc((v[0] - radius, v[1] - radius, v[0] + radius, v[1] + radius), start, end, fill=MARK, width=1)
        # centre the label on the bisector where a disc around it just clears both arms
        box = canvas.draw.textbbox((0, 0), latex_to_plain(text), font=canvas.font, anchor="mm")
        clearance = 0.5 * max(box[3] - box[1], 0.7 * (box[2] - box[0])) + 2
        distance = max(radius + clearance, clearance / math.sin(max(opening, 0.3) / 2))
        spots = _around(v, bisector, distance, turns=(0, 12, -12, 25, -25)) + _around(
            v, bisector, 1.4 * distance, turns=(0,)
        )
        canvas.label(text, spots)
    for a, b, text in scene.lengths:
        m, d = _mid(pts[a], pts[b]), _unit(*_sub(pts[b], pts[a]))
        normal = (-d[1], d[0])
        if (m[0] - canvas.centroid[0]) * normal[0] + (m[1] - canvas.centroid[1]) * normal[1] < 0:
            normal = (-normal[0], -normal[1])  # outside the figure first, as a textbook writes it
        width = canvas.draw.textlength(latex_to_plain(text), font=canvas.font)
        reach = size * 0.6 + 0.5 * (abs(normal[0]) * width + abs(normal[1]) * size)
        candidates = []
        for side in (1, -1):
            for along in (0.0, 0.2, -0.2):
                c = (m[0] + along * (pts[b][0] - pts[a][0]), m[1] + along * (pts[b][1] - pts[a][1]))
                candidates.append((c[0] + side * reach * normal[0], c[1] + side * reach * normal[1]))
        canvas.label(text, candidates)
    for ends, text in scene.arcs:
        canvas.label(text, _arc_label_spots(canvas, scene, ends))


def _arc_label_spots(canvas: _Canvas, scene: Scene, ends: list[str]) -> list[Point]:
    pts = canvas.points
    for centre, radius in scene.circles:
        c = pts[centre]
        if all(abs(math.dist(pts[e], c) - radius) < 0.2 * radius for e in ends):
            if len(ends) >= 3:
                direction = _unit(*_sub(pts[ends[1]], c))
            else:
                u1, u2 = _unit(*_sub(pts[ends[0]], c)), _unit(*_sub(pts[ends[-1]], c))
                direction = _unit(u1[0] + u2[0], u1[1] + u2[1]) or (0.0, -1.0)
                direction = direction if direction != (0.0, 0.0) else (-u1[1], u1[0])
            return _around(c, direction, radius + canvas.font_size, turns=(0, 10, -10, 20, -20))
    m = _mid(pts[ends[0]], pts[ends[-1]])
    return _around(m, _unit(*_sub(m, canvas.centroid)) or (0.0, -1.0), canvas.font_size)


def render_diagram(row: dict, *, margin: int = 36, font_size: int | None = None) -> tuple[Image.Image, Scene]:
    """Draw the diagram of one Geometry3K row; returns the RGB image and the scene (``scene.missing`` lists
    points that were left out)."""
    scene = build_scene(row)
    canvas = _Canvas(scene, margin, font_size)
    _draw_figure(canvas, scene)
    _point_labels(canvas, scene)
    _value_labels(canvas, scene)
    height = canvas.image.size[1]
    for k, caption in enumerate(reversed(scene.captions)):
        y = height - (k + 0.5) * (canvas.font_size + 6) - 4
        canvas.draw.text((8, y), latex_to_plain(caption), font=canvas.font, fill=TEXT, anchor="lm")
    return canvas.image, scene


def save_png(image: Image.Image, path: str | Path, colors: int = 16) -> None:
    """Save as a small palette PNG (diagrams use a few flat colours plus anti-aliasing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
