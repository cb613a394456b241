"""Synthetic image tasks whose answer can only be read from the image, sized for learning on a CPU.

(Text tasks with long worked responses, such as ``chain_sum``, live in :mod:`mm_gmpo.data.synthetic_text`; the
spec ``synthetic:<task>:<split>[:<size>]`` and :func:`synthetic_example` serve both.)

Every item of a task asks the same question, so the text alone carries no information about the answer:
- ``polygon_sides``: "How many sides does the polygon have?" for one polygon of 3..8 sides (uniform), filled or
  drawn with a thick outline, with random rotation, size, position, mild irregularity and colours. Chance: 1/6.
- ``longest_segment``: three or four thick segments labelled A, B, C (D); which is the longest? The longest is at
  least 1.33x the next one. Chance: about 2/7 (1/3 or 1/4).
- ``number_inside``: a single digit 0..9 written inside a circle, square or triangle. Chance: 1/10.
- ``count_points``: "How many points are marked?" for 1..6 bold black dots (uniform) on white, apart from each
  other, some joined by thin segments as distractors. Chance: 1/6. The one the "Does it learn?" experiments use:
  a 1.2 M-parameter model learns it from scratch on a CPU. With random colours (as in the other tasks) the same
  model sat at chance for 1,000 warm-start steps, and so did polygon_sides: the colours are most of the images'
  variation, and the language model learns to ignore the image before the vision tower finds the shapes.

Items are drawn at twice the size and reduced (anti-aliased edges) to ``IMAGE_SIZE`` = 112 pixels, which Qwen's
resize rule keeps as is: 8x8 patches of 14 pixels, 16 vision tokens after the 2x2 merge.

Determinism: item ``i`` of split ``s`` of task ``t`` is drawn from its own generator seeded with the string
``"mm-gmpo/synthetic/{t}/{s}/{i}"`` (Python hashes string seeds with SHA-512, independent of PYTHONHASHSEED), so
a split of size N is the first N items of any larger one, and train, val and test never share a seed.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from mm_gmpo.data.synthetic_text import TEXT_TASKS, text_example
from mm_gmpo.errors import UserError
from mm_gmpo.types import Example

IMAGE_SIZE = 112  # pixels per side of the returned images
SUPERSAMPLE = 2  # drawn at this multiple of IMAGE_SIZE, then box-reduced for anti-aliased edges
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
MAX_SIZE = 1_000_000

Point = tuple[float, float]


@dataclass(frozen=True)
class SyntheticSpec:
    """A parsed ``synthetic:<task>:<split>[:<size>]`` dataset spec."""

    task: str  # a key of TASKS
    split: str  # train | val | test
    size: int  # number of items

    @property
    def spec(self) -> str:
        return f"synthetic:{self.task}:{self.split}:{self.size}"


def parse_synthetic(text: str) -> SyntheticSpec:
    """``"polygon_sides:train:2000"`` (the part after ``synthetic:``) -> SyntheticSpec; size defaults by split."""
    parts = text.strip().split(":")
    usage = f"dataset spec 'synthetic:{text}': expected synthetic:<task>:<split>[:<size>]"
    if len(parts) not in (2, 3):
        raise UserError(f"{usage}, e.g. synthetic:polygon_sides:train:2000")
    task, split = parts[0], parts[1]
    if task not in TASKS and task not in TEXT_TASKS:
        known = ", ".join([*TASKS, *TEXT_TASKS])
        raise UserError(f"{usage}; unknown task {task!r} (known: {known})")
    if split not in SPLITS:
        raise UserError(f"{usage}; unknown split {split!r} (known: {', '.join(SPLITS)})")
    size = DEFAULT_SIZES[split]
    if len(parts) == 3:
        if not parts[2].isdigit() or not 0 < int(parts[2]) <= MAX_SIZE:
            raise UserError(f"{usage}; size {parts[2]!r} must be an integer in 1..{MAX_SIZE}")
        size = int(parts[2])
    return SyntheticSpec(task, split, size)


# ---------------------------------------------------------------------------------------------------- drawing


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(light background, dark saturated foreground): contrast is high whatever the hues."""
    background = tuple(rng.randint(225, 255) for _ in range(3))
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.15, 0.6))
    return background, (round(r * 255), round(g * 255), round(b * 255))


def _canvas(background: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (IMAGE_SIZE * SUPERSAMPLE,) * 2, background)
    return image, ImageDraw.Draw(image)


def _finish(image: Image.Image) -> Image.Image:
    return image.reduce(SUPERSAMPLE)


def _scaled(points: list[Point]) -> list[Point]:
    return [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in points]


def _font(size_px: float) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=round(size_px * SUPERSAMPLE))  # Pillow >= 10.1: a sized FreeType font


def polygon_vertices(rng: random.Random, sides: int) -> tuple[list[Point], dict]:
    """Vertices (image pixels) of a convex-looking polygon: angles jittered by at most 12% of the even spacing
    and radii by at most 15%, so no interior angle gets close to 180 degrees and every corner stays visible."""
    radius = rng.uniform(0.24, 0.42) * IMAGE_SIZE
    margin = 4.0
    cx = rng.uniform(radius + margin, IMAGE_SIZE - radius - margin)
    cy = rng.uniform(radius + margin, IMAGE_SIZE - radius - margin)
    rotation = rng.uniform(0.0, 2 * math.pi)
    step = 2 * math.pi / sides
    vertices = []
    for k in range(sides):
        angle = rotation + k * step + rng.uniform(-0.12, 0.12) * step
        r = radius * rng.uniform(0.85, 1.0)
        vertices.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return vertices, {"center": [cx, cy], "radius": radius, "rotation": rotation}


def _polygon_sides(rng: random.Random) -> tuple[Image.Image, str, dict]:
    sides = rng.randint(3, 8)
    vertices, geometry = polygon_vertices(rng, sides)
    background, colour = _colours(rng)
    image, draw = _canvas(background)
    points = _scaled(vertices)
    style = rng.choice(("filled", "outline"))
    width = rng.randint(3, 5)  # output pixels; thin (1 px) outlines did not train at this size
    if style == "filled":
        draw.polygon(points, fill=colour)
    else:
        draw.line([*points, points[0], points[1]], fill=colour, width=width * SUPERSAMPLE, joint="curve")
    meta = {"sides": sides, "vertices": [list(v) for v in vertices], "style": style, "width": width, **geometry}
    return _finish(image), str(sides), meta


def _segment(rng: random.Random, length: float, margin: float) -> tuple[Point, Point] | None:
    angle = rng.uniform(0.0, math.pi)
    dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
    lo_x, hi_x = margin + abs(dx), IMAGE_SIZE - margin - abs(dx)
    lo_y, hi_y = margin + abs(dy), IMAGE_SIZE - margin - abs(dy)
    if lo_x > hi_x or lo_y > hi_y:
        return None
    mx, my = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    return (mx - dx, my - dy), (mx + dx, my + dy)


def _point_segment_distance(p: Point, seg: tuple[Point, Point]) -> float:
    (ax, ay), (bx, by) = seg
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)))
    return math.dist(p, (ax + t * dx, ay + t * dy))


def _segment_gap(first: tuple[Point, Point], second: tuple[Point, Point]) -> float:
    """Distance between two segments: 0 when they cross, else the smallest endpoint-to-segment distance."""

    def side(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    (p1, p2), (q1, q2) = first, second
    if side(p1, p2, q1) * side(p1, p2, q2) < 0 and side(q1, q2, p1) * side(q1, q2, p2) < 0:
        return 0.0
    return min(
        _point_segment_distance(p1, second),
        _point_segment_distance(p2, second),
        _point_segment_distance(q1, first),
        _point_segment_distance(q2, first),
    )


def _longest_segment(rng: random.Random) -> tuple[Image.Image, str, dict]:
    count = rng.choice((3, 4))
    longest = rng.uniform(0.55, 0.8) * IMAGE_SIZE
    lengths = [longest] + [longest * rng.uniform(0.3, 0.75) for _ in range(count - 1)]
    rng.shuffle(lengths)
    letters = "ABCD"[:count]
    segments: list[tuple[Point, Point]] = []
    for length in lengths:  # kept apart (no crossing, 10 px clearance) so that every label is unambiguous
        best, best_gap = None, -1.0
        for _ in range(300):
            seg = _segment(rng, length, margin=10.0)
            if seg is None:
                continue
            gap = min((_segment_gap(seg, other) for other in segments), default=math.inf)
            if gap > best_gap:
                best, best_gap = seg, gap
            if gap >= 10.0:
                break
        segments.append(best)
    background, colour = _colours(rng)
    image, draw = _canvas(background)
    font = _font(13)
    for letter, (a, b) in zip(letters, segments, strict=True):
        draw.line(_scaled([a, b]), fill=colour, width=3 * SUPERSAMPLE)
        # label beside the midpoint, on the normal of the segment
        length = math.dist(a, b)
        nx, ny = -(b[1] - a[1]) / length, (b[0] - a[0]) / length
        lx, ly = (a[0] + b[0]) / 2 + 8 * nx, (a[1] + b[1]) / 2 + 8 * ny
        draw.text((lx * SUPERSAMPLE, ly * SUPERSAMPLE), letter, fill=colour, font=font, anchor="mm")
    answer = letters[max(range(count), key=lambda k: lengths[k])]
    meta = {
        "lengths": dict(zip(letters, lengths, strict=True)),
        "segments": {letter: [list(a), list(b)] for letter, (a, b) in zip(letters, segments, strict=True)},
    }
    return _finish(image), answer, meta


def _number_inside(rng: random.Random) -> tuple[Image.Image, str, dict]:
    digit = rng.randint(0, 9)
    shape = rng.choice(("circle", "square", "triangle"))
    background, colour = _colours(rng)
    image, draw = _canvas(background)
    radius = rng.uniform(0.3, 0.44) * IMAGE_SIZE
    cx = rng.uniform(radius + 3, IMAGE_SIZE - radius - 3)
    cy = rng.uniform(radius + 3, IMAGE_SIZE - radius - 3)
    width = rng.randint(3, 4) * SUPERSAMPLE
    box = _scaled([(cx - radius, cy - radius), (cx + radius, cy + radius)])
    if shape == "circle":
        draw.ellipse(box, outline=colour, width=width)
    elif shape == "square":
        half = radius * 0.8
        draw.rectangle(_scaled([(cx - half, cy - half), (cx + half, cy + half)]), outline=colour, width=width)
    else:
        corners = [
            (cx + radius * math.cos(a), cy + radius * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
        points = _scaled(corners)
        draw.line([*points, points[0], points[1]], fill=colour, width=width, joint="curve")
    size = radius * (0.7 if shape == "triangle" else 0.95)
    text_y = cy + (radius * 0.2 if shape == "triangle" else 0.0)  # a triangle's roomiest part is below its centre
    draw.text((cx * SUPERSAMPLE, text_y * SUPERSAMPLE), str(digit), fill=colour, font=_font(size), anchor="mm")
    meta = {"digit": digit, "shape": shape, "center": [cx, cy], "radius": radius}
    return _finish(image), str(digit), meta


def _count_points(rng: random.Random) -> tuple[Image.Image, str, dict]:
    count = rng.randint(1, 6)
    radius = rng.uniform(5.0, 7.0)
    margin = radius + 4.0
    points: list[Point] = []
    while len(points) < count:  # rejection sampling: dots at least 3 radii apart (6 dots always fit)
        candidate = (rng.uniform(margin, IMAGE_SIZE - margin), rng.uniform(margin, IMAGE_SIZE - margin))
        if all(math.dist(candidate, other) >= 3 * radius for other in points):
            points.append(candidate)
    colour = (0, 0, 0)
    image, draw = _canvas((255, 255, 255))
    joined = [(a, b) for a, b in zip(points, points[1:], strict=False) if rng.random() < 0.5]
    for a, b in joined:  # thin segments between some consecutive dots: lines are not points
        draw.line(_scaled([a, b]), fill=colour, width=SUPERSAMPLE)
    for x, y in points:
        draw.ellipse(_scaled([(x - radius, y - radius), (x + radius, y + radius)]), fill=colour)
    meta = {"count": count, "points": [list(p) for p in points], "radius": radius, "segments": len(joined)}
    return _finish(image), str(count), meta


@dataclass(frozen=True)
class Task:
    """One synthetic task: the fixed question, the answers it can have, and how to draw an item."""

    name: str
    problem: str  # the same for every item: the answer must come from the image
    answers: tuple[str, ...]  # every possible gold answer (for chance level and the toy tokenizer's corpus)
    draw: Callable[[random.Random], tuple[Image.Image, str, dict]]  # rng -> (RGB image, answer, meta)
    chance: float  # expected accuracy of the best image-blind guess (always the most frequent answer)


TASKS: dict[str, Task] = {
    "polygon_sides": Task(
        "polygon_sides",
        "How many sides does the polygon in the image have?",
        tuple(str(k) for k in range(3, 9)),
        _polygon_sides,
        1 / 6,
    ),
    "longest_segment": Task(
        "longest_segment",
        "Which labelled segment in the image is the longest? Answer with its letter.",
        ("A", "B", "C", "D"),
        _longest_segment,
        7 / 24,  # 3 or 4 labels with even odds: P(A) = (1/3 + 1/4) / 2
    ),
    "number_inside": Task(
        "number_inside",
        "What number is written inside the figure?",
        tuple(str(d) for d in range(10)),
        _number_inside,
        1 / 10,
    ),
    "count_points": Task(
        "count_points",
        "How many points are marked in the figure?",
        tuple(str(k) for k in range(1, 7)),
        _count_points,
        1 / 6,
    ),
}


def synthetic_example(item: int, *, task: str, split: str, source: str = "", index: int | None = None) -> Example:
    """Item number ``item`` of a split, drawn from its own seeded generator (see the module docstring).
    ``index`` (the position in the loaded list, the loaders' row-converter signature) does not change the item.
    A text task's item (:mod:`mm_gmpo.data.synthetic_text`) has no image."""
    if task in TEXT_TASKS:
        return text_example(item, task=task, split=split, source=source)
    chosen = TASKS[task]
    rng = random.Random(f"mm-gmpo/synthetic/{task}/{split}/{item}")
    image, answer, meta = chosen.draw(rng)
    return Example(
        id=f"{task}-{split}-{item:05d}",
        problem=chosen.problem,
        answer=answer,
        images=[image],
        source=source or f"synthetic:{task}:{split}",
        meta={"task": task, "synthetic": True, **meta},
    )


def generate(task: str, split: str, size: int) -> list[Example]:
    """The first ``size`` items of a split (no blanking, no stats: use ``load_examples`` for those)."""
    spec = parse_synthetic(f"{task}:{split}:{size}")
    return [synthetic_example(i, task=task, split=split, source=spec.spec) for i in range(size)]
