"""Loaders on small fixtures: a local folder, an Inter-GPS release folder, an in-memory hub Dataset, and bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mm_gmpo.data import build_math_pool, examples_from_hub_dataset, load_examples, parse_spec
from mm_gmpo.data import loaders as loaders_module
from mm_gmpo.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHARED_MATH = REPO.parent / "shared" / "data" / "math"

TRIANGLE = {
    "point_positions": {"A": [0, 0], "B": [120, 0], "C": [0, 90]},
    "line_instances": ["AB", "BC", "CA"],
    "circle_instances": [],
    "diagram_logic_form": ["Equals(LengthOf(Line(A, B)), 12)", "Perpendicular(Line(A, B), Line(A, C))"],
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _geo_row(ident: str, **changes) -> dict:
    row = {"id": ident, "problem": "Find $x$.\r\nRound to the nearest tenth.", "answer": "15", "answer_letter": "C",
           "choices": ["5", "14", "15", "35"], "problem_type_graph": ["Triangle"], "problem_type_goal": ["Length"],
           "image": None, **TRIANGLE}  # fmt: skip
    row.update(changes)
    return row


@pytest.fixture
def local_root(tmp_path) -> Path:
    """A folder in the staged layout: geometry3k/<split>.jsonl with one real PNG and one rendered row, math/*."""
    root = tmp_path / "data"
    Image.new("RGBA", (60, 40), (0, 0, 255, 255)).save(_mkdir(root / "geometry3k/images/train") / "1.png")
    _write_jsonl(root / "geometry3k/train.jsonl", [_geo_row("0"), _geo_row("1", image="images/train/1.png")])
    _write_jsonl(root / "math/math500.jsonl", [{"id": "test/a/1.json", "problem": "1+1?", "answer": "2", "level": 1}])
    _write_jsonl(root / "math/amc23.jsonl", [{"id": "amc23-0", "problem": "p", "answer": 27.0}])
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_local_geometry3k_and_math(local_root):
    examples, stats = load_examples("geometry3k:train", source="local", local_dir=local_root)
    assert [e.id for e in examples] == ["0", "1"]
    rendered, original = examples
    assert rendered.problem == "Find $x$.\nRound to the nearest tenth." and rendered.answer == "15"
    assert rendered.choices == ["5", "14", "15", "35"] and rendered.meta["answer_letter"] == "C"
    assert rendered.meta["rendered"] is True and rendered.images[0].mode == "RGB"
    # the drawing keeps the annotation's frame: a 120 x 90 triangle plus the margin on each side
    assert rendered.images[0].size == (120 + 2 * 36, 90 + 2 * 36)
    assert original.meta["rendered"] is False and original.images[0].getpixel((5, 5)) == (0, 0, 255)
    assert stats.as_dict() == {"rows": 2, "kept": 2, "skipped": 0, "rendered": 1}
    assert rendered.meta["problem_type"] == ["Triangle", "Length"] and rendered.source == "geometry3k:train"
    (amc,), _ = load_examples("amc23", source="local", local_dir=local_root)
    assert amc.answer == "27" and amc.id == "amc23-0"


def test_blank_images_and_split_limit(local_root):
    examples, stats = load_examples("geometry3k:train", local_dir=local_root, blank_images=True, split_limit=1)
    assert len(examples) == 1 and stats.blanked == 1
    assert examples[0].images[0].size == (192, 162) and examples[0].images[0].getextrema()[0] == (255, 255)


def test_specs_and_not_found(local_root):
    assert parse_spec("geometry3k:val") == ("geometry3k", "validation")
    assert parse_spec("jsonl:/x/y.jsonl") == ("jsonl", "/x/y.jsonl")
    with pytest.raises(UserError, match="unknown dataset spec 'gsm8k'"):
        parse_spec("gsm8k")
    with pytest.raises(UserError, match="unknown Geometry3K split"):
        parse_spec("geometry3k:dev")
    with pytest.raises(UserError, match="'aime24' not found under"):
        load_examples("aime24", source="local", local_dir=local_root)


def test_intergps_release_layout(tmp_path):
    folder = _mkdir(tmp_path / "release/val/2101")
    (folder / "data.json").write_text(json.dumps({
        "id": 2101, "problem_text": "Find x.", "annotat_text": "Find $x$.", "choices": ["3", "4", "5", "6"],
        "answer": "B", "problem_type_graph": ["Triangle"], "problem_type_goal": ["Length"],
    }))  # fmt: skip
    (folder / "logic_form.json").write_text(json.dumps(TRIANGLE))
    Image.new("P", (50, 30)).save(folder / "img_diagram.png")
    no_image = _mkdir(tmp_path / "release/val/2102")
    (no_image / "data.json").write_text(json.dumps({"id": 2102, "annotat_text": "Find y.", "choices": ["1", "2"],
                                                    "answer": "A"}))  # fmt: skip
    (no_image / "logic_form.json").write_text(json.dumps(TRIANGLE))
    examples, stats = load_examples("geometry3k:validation", source="local", local_dir=tmp_path / "release")
    assert [(e.id, e.answer, e.meta["answer_letter"]) for e in examples] == [("2101", "4", "B"), ("2102", "1", "A")]
    assert examples[0].images[0].size == (50, 30) and examples[1].meta["rendered"] and stats.rendered == 1


def _hub_geometry(rows):
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_list(rows)


def test_hub_dataset_rows_through_the_same_conversion(monkeypatch, tmp_path):
    red = Image.new("RGB", (30, 20), (255, 0, 0))
    dataset = _hub_geometry([
        {"images": [red], "problem": "<image>Find $x$.", "answer": "2\\sqrt{3}"},
        {"images": [red], "problem": "Find $y$.", "answer": "3"},  # image but no placeholder
        {"images": [], "problem": "<image>Find $z$.", "answer": "4"},  # placeholder but no image
        {"images": [red], "problem": "<image>Find $w$.", "answer": ""},  # no answer
    ])  # fmt: skip
    examples, stats = examples_from_hub_dataset(dataset, "geometry3k:test", skip_invalid=True)
    assert [(e.problem, e.answer) for e in examples] == [("Find $x$.", "2\\sqrt{3}")]
    assert examples[0].images[0].getpixel((0, 0)) == (255, 0, 0)
    assert stats.skipped == {"image_mismatch": 2, "missing_answer": 1} and stats.rows == 4
    with pytest.raises(UserError, match=r"geometry3k:test row geometry3k:test-0 .*1 <image> placeholder\(s\) but 0"):
        examples_from_hub_dataset(dataset.select([2, 1]), "geometry3k:test")

    import datasets

    calls = []

    def fake_load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_list(
            [{"problem": "What is 2+2?", "solution": "So $\\boxed{4}$.", "level": "Level 3"}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (example,), _ = load_examples("math500", source="hub")
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    assert (example.answer, example.meta["level"], example.id) == ("4", 3, "math500-0")
    (example,), stats = load_examples("aime24", source="auto", local_dir=tmp_path)  # not local: from the hub
    assert calls[-1] == ("HuggingFaceH4/aime_2024", None, "train") and stats.origin == "hub:HuggingFaceH4/aime_2024"
    olympiad = datasets.Dataset.from_list([{"question": "q", "final_answer": ["1", "2"], "id": 5}])
    (example,), _ = examples_from_hub_dataset(olympiad, "olympiadbench")
    assert (example.problem, example.answer, example.id) == ("q", "1, 2", "5")


def test_bad_rows_name_dataset_row_and_file(tmp_path):
    root = tmp_path / "data"
    rows = [
        _geo_row("0"),
        _geo_row("1", answer=""),
        _geo_row("2", problem="  "),
        _geo_row("3", image="images/train/broken.png"),
        _geo_row("4", image="../../outside.png"),
        _geo_row("5", problem="<image> <image> Find x."),
        _geo_row("6", point_positions=None),  # no image and nothing to render from
        _geo_row("0"),
    ]
    path = _write_jsonl(root / "geometry3k/train.jsonl", rows)
    (_mkdir(root / "geometry3k/images/train") / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError) as info:
        load_examples("geometry3k:train", local_dir=root)
    assert str(info.value) == f"geometry3k:train row 1 ({path}): missing or empty answer"
    examples, stats = load_examples("geometry3k:train", local_dir=root, skip_invalid=True)
    assert [e.id for e in examples] == ["0"]
    assert stats.skipped == {"missing_answer": 1, "empty_problem": 1, "bad_image": 1, "bad_path": 1,
                             "image_mismatch": 1, "missing_image": 1, "duplicate_id": 1}  # fmt: skip
    for row, message in [(3, "broken.png: not a readable image"), (4, "escapes the data folder")]:
        _write_jsonl(root / "geometry3k/train.jsonl", [rows[row]])
        with pytest.raises(UserError, match=f"geometry3k:train row {row} .*{message}"):
            load_examples("geometry3k:train", local_dir=root)


def test_jsonl_spec_with_images_and_placeholders(tmp_path):
    Image.new("L", (28, 28), 0).save(tmp_path / "a.png")
    path = _write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "q1", "problem": "<image>How many sides?", "answer": "3", "images": ["a.png"]},
        {"id": "q2", "problem": "What is 1+2?", "answer": "3"},
        {"id": "q3", "problem": "<image>Which shape?", "answer": "square"},
    ])  # fmt: skip
    examples, stats = load_examples(f"jsonl:{path}", skip_invalid=True)
    assert [(e.id, e.problem, len(e.images)) for e in examples] == [
        ("q1", "How many sides?", 1),
        ("q2", "What is 1+2?", 0),
    ]
    assert stats.skipped == {"image_mismatch": 1}


def test_math_pool_rule():
    train = [{"id": f"train/a/{k}.json", "problem": f"t{k}", "level": k % 6, "answer": "1"} for k in range(12)]
    test = [{"id": f"test/a/{k}.json", "problem": f"s {k}", "level": "Level 4", "answer": "1"} for k in range(3)]
    held = [{"unique_id": "test/a/0.json", "problem": "x"}, {"problem": "s  1"}]  # one by id, one by text
    pool = build_math_pool(train, test, held)
    # train levels 3, 4, 5 appear for k in {3, 4, 5, 9, 10, 11}; test keeps only test/a/2.json
    assert [r["id"] for r in pool] == [f"train/a/{k}.json" for k in (3, 4, 5, 9, 10, 11)] + ["test/a/2.json"]


@pytest.mark.skipif(not (SHARED_MATH / "math_train.jsonl").exists(), reason="staged MATH files not present")
def test_math_pool_from_the_staged_files_has_8888_rows():
    read = loaders_module.read_jsonl
    pool = build_math_pool(read(SHARED_MATH / "math_train.jsonl", "t"), read(SHARED_MATH / "math_test_full.jsonl", "t"),
                           read(SHARED_MATH / "math500.jsonl", "t"))  # fmt: skip
    assert len(pool) == 8888
    assert not {r["id"] for r in pool} & {r["id"] for r in read(SHARED_MATH / "math500.jsonl", "t")}


def test_shipped_samples_load_by_default():
    train, stats = load_examples("geometry3k:train", source="local", split_limit=40)
    assert stats.origin.endswith("data/sample/geometry3k/train.jsonl") and len(train) == 40
    originals = {e.id for e in train if not e.meta["rendered"]}
    assert originals == {str(k) for k in range(11, 21)} and stats.rendered == 30
    for spec in ("math_lvl3to5", "math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench"):
        examples, stats = load_examples(spec, source="local")
        assert examples and stats.skipped == {} and "data/sample" in stats.origin, spec


def test_malformed_and_non_utf8_lines_are_skipped_and_counted_with_skip_invalid(tmp_path):
    from mm_gmpo.data import load_examples
    from mm_gmpo.errors import UserError

    path = tmp_path / "rows.jsonl"
    good = '{"id": "a", "problem": "1+1?", "answer": "2"}\n'
    path.write_bytes((good + '{"id": "b", "problem": \n' + '{"id": "c"}\n').encode() + b'{"p": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl line 2 is not valid JSON"):
        load_examples(f"jsonl:{path}")
    examples, stats = load_examples(f"jsonl:{path}", skip_invalid=True)
    assert [e.id for e in examples] == ["a"]
    assert stats.skipped["malformed_json"] == 1 and stats.skipped["not_utf8"] == 1 and stats.rows == 4
