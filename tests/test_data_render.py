"""Diagram rendering from Geometry3K annotations: parsing, derived points, and what lands on the canvas."""

from __future__ import annotations

import numpy as np
import pytest

from mm_gmpo.data.logic_forms import build_scene, line_intersection, parse_form, split_line_instance
from mm_gmpo.data.render import LINE, latex_to_plain, render_diagram

MARGIN = 36


def test_parse_form_keeps_value_text():
    term = parse_form("Equals(MeasureOf(Angle(T, R, S)), 4y-10)")
    assert term.name == "Equals" and [a.name for a in term.args[0].args[0].args] == ["T", "R", "S"]
    assert term.args[1].text == "4y-10" and not term.args[1].is_call
    assert parse_form("Equals(LengthOf(Line(A, B)), 2(x+1))").args[1].text == "2(x+1)"
    assert parse_form("Equals(MeasureOf(Angle(A, B, C)), MeasureOf(angle 1))").args[1].args[0].name == "angle 1"
    assert parse_form("") is None and parse_form("Equals(LengthOf(Line(A, B)), 3") is None


def test_line_instances_with_long_point_names():
    known = {"A", "B", "B'", "point_26"}
    assert split_line_instance("AB'", known) == ("A", "B'")
    assert split_line_instance("Bpoint_26", known) == ("B", "point_26")
    assert split_line_instance("AZ", known) is None


def test_missing_points_are_derived_or_left_out():
    row = {
        "point_positions": {"A": [0, 0], "B": [100, 100], "C": [0, 100], "D": [100, 0], "P": [0, 50], "Q": [80, 50]},
        "line_instances": ["AB", "CD", "AE", "PF"],
        "circle_instances": [],
        "diagram_logic_form": [
            "PointLiesOnLine(E, Line(A, B))",
            "PointLiesOnLine(E, Line(C, D))",  # E: the diagonals cross at (50, 50)
            "PointLiesOnLine(F, Line(A, D))",
            "Perpendicular(Line(Q, F), Line(A, D))",  # F: foot of the perpendicular from Q on AD, (80, 0)
            "PointLiesOnLine(G, Line(A, Z))",  # G on a line through an unknown point: cannot be placed
        ],
    }
    scene = build_scene(row)
    assert scene.points["E"] == pytest.approx((50, 50)) and scene.points["F"] == pytest.approx((80, 0))
    assert ("A", "E") in scene.segments and scene.missing == ["G", "Z"]
    assert line_intersection((0, 0), (1, 0), (0, 1), (1, 1)) is None  # parallel lines never meet


def _dark_near(image, x, y, radius=2):
    pixels = np.asarray(image)[y - radius : y + radius + 1, x - radius : x + radius + 1]
    return (pixels.sum(axis=2) < 300).any()


def test_drawing_is_in_the_annotation_frame_with_labels_where_expected():
    row = {
        "point_positions": {"A": [0.0, 200.0], "B": [300.0, 200.0], "C": [300.0, 0.0]},
        "line_instances": ["AB", "BC", "CA"],
        "circle_instances": [],
        "diagram_logic_form": [
            "Equals(LengthOf(Line(A, B)), 12)",
            "Equals(MeasureOf(Angle(B, A, C)), 34)",
            "Perpendicular(Line(A, B), Line(B, C))",
        ],
    }
    image, scene = render_diagram(row, margin=MARGIN)
    assert image.size == (300 + 2 * MARGIN, 200 + 2 * MARGIN) and scene.missing == []
    pixels = np.asarray(image).astype(int)
    # the middle of BC (x = 300 + margin) is drawn in the line colour
    assert np.abs(pixels[MARGIN + 100, MARGIN + 300] - LINE).sum() < 60
    # "12" is written under AB's midpoint (outside the triangle), nothing above it inside the triangle there
    below = pixels[MARGIN + 205 : MARGIN + 230, MARGIN + 140 : MARGIN + 160]
    assert (below.sum(axis=2) < 300).sum() > 10
    # the angle's arc and its label "34°" are inside the angle, to the right of A
    assert (pixels[MARGIN + 170 : MARGIN + 200, MARGIN + 25 : MARGIN + 90].sum(axis=2) < 300).sum() > 10
    # the right-angle mark at B is magenta, inside the triangle
    corner = pixels[MARGIN + 188 : MARGIN + 199, MARGIN + 288 : MARGIN + 299]
    assert ((corner[..., 0] > 150) & (corner[..., 1] < 80)).any()
    assert scene.lengths == [("A", "B", "12")] and scene.angles == [("B", "A", "C", "34°")]


def test_circle_radius_from_points_on_it_and_arc_labels():
    row = {
        "point_positions": {"O": [100.0, 100.0], "A": [160.0, 100.0], "B": [100.0, 40.0]},
        "line_instances": ["OA", "OB"],
        "circle_instances": ["O"],
        "diagram_logic_form": [
            "PointLiesOnCircle(A, Circle(O, radius_0_0))",
            "PointLiesOnCircle(B, Circle(O, radius_0_0))",
            "Equals(MeasureOf(Arc(A, B)), 90)",
            "Equals(AreaOf(Circle(O)), 36\\pi)",
        ],
    }
    image, scene = render_diagram(row, margin=MARGIN)
    assert scene.circles == [("O", pytest.approx(60.0))] and scene.arcs == [(["A", "B"], "90°")]
    assert scene.captions == ["area = 36\\pi"]
    # the canvas starts at the circle's left/top edge (40, 40) minus the margin; the circle passes through
    # (O.x, O.y + 60) = (100, 160), where no segment is, and the centre's neighbourhood away from OA/OB is blank
    assert _dark_near(image, 100 - 40 + MARGIN, 160 - 40 + MARGIN)
    assert not _dark_near(image, 100 - 40 + MARGIN, 130 - 40 + MARGIN, radius=3)
    assert latex_to_plain("2\\sqrt{3}") == "2√3" and latex_to_plain("\\frac{1}{2}x+5") == "1/2x+5"


def test_every_shipped_annotation_renders():
    """All sample rows draw without error; a drawing is never empty."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "sample" / "geometry3k" / "validation.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()][:40]
    for row in rows:
        image, _ = render_diagram(row)
        assert image.getextrema()[0][0] < 100, row["id"]  # something dark was drawn
