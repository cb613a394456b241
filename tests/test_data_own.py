"""Datasets of one's own: jsonl, parquet and hf (save_to_disk folders, data-file folders) specs with mapped
columns, images as paths, bytes or the datasets Image feature, several per row; bad rows named or skipped."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from mm_gmpo.data import load_examples, parse_spec
from mm_gmpo.data.generic import ColumnKeys, parse_hf
from mm_gmpo.errors import UserError

KEYS = ColumnKeys(prompt="question", answer="gold", image="pics", choices="opts")


def _png(color: str, size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(pics) -> list[dict]:
    return [
        {"id": "a", "question": "<image><image> Which is red?", "gold": "15", "pics": pics[0], "opts": ["5", "15"],
         "difficulty": 3},
        {"id": "b", "question": "What is 1+1?", "gold": 2, "pics": pics[1], "opts": None, "difficulty": 1},
    ]  # fmt: skip


def _check(examples, stats):
    assert [ex.id for ex in examples] == ["a", "b"] and stats.kept == 2
    first, second = examples
    assert first.problem == "Which is red?" and first.answer == "15" and first.choices == ["5", "15"]
    assert [im.size for im in first.images] == [(32, 24), (24, 32)] and first.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert first.meta == {"difficulty": 3, "answer_letter": "B"}  # unmapped columns reach a reward function
    assert second.answer == "2" and second.images == [] and second.choices is None


def test_parse_specs():
    assert parse_spec("parquet:/x/y.parquet") == ("parquet", "/x/y.parquet")
    assert parse_spec("hf:org/name:test") == ("hf", "org/name:test")
    assert parse_hf("org/name:test") == ("org/name", "test") and parse_hf("org/name") == ("org/name", None)
    with pytest.raises(UserError, match="nothing after hf:"):
        parse_spec("hf:")


def test_jsonl_with_mapped_keys_and_image_paths(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img/r.png").write_bytes(_png("red"))
    (tmp_path / "img/g.png").write_bytes(_png("green", (24, 32)))
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows([["img/r.png", "img/g.png"], []])))
    _check(*load_examples(f"jsonl:{path}", keys=KEYS))


def test_parquet_with_bytes_and_image_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pics = [[{"bytes": _png("red"), "path": None}, {"bytes": _png("green", (24, 32)), "path": "g.png"}], []]
    rows = _rows(pics)
    rows[1]["gold"] = "2"  # one type per Parquet column
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _check(*load_examples(f"parquet:{path}", keys=KEYS))
    raw = tmp_path / "raw.parquet"  # plain bytes cells, default column names
    pq.write_table(pa.Table.from_pylist([{"problem": "p", "answer": "1", "image": _png("blue")}]), raw)
    (example,), _ = load_examples(f"parquet:{raw}")
    assert example.images[0].getpixel((0, 0)) == (0, 0, 255)


def test_hf_saved_dataset_with_the_image_feature(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "gold": datasets.Value("string"),
            "pics": datasets.Sequence(datasets.Image()),
            "opts": datasets.Sequence(datasets.Value("string")),
            "difficulty": datasets.Value("int64"),
        }
    )
    images = [[Image.new("RGB", (32, 24), "red"), Image.new("RGB", (24, 32), "green")], []]
    rows = _rows(images)
    rows[1]["gold"], rows[1]["opts"] = "2", []
    split = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"train": split.select([1]), "test": split}).save_to_disk(tmp_path / "saved")
    _check(*load_examples(f"hf:{tmp_path / 'saved'}:test", keys=KEYS))
    (only,), stats = load_examples(f"hf:{tmp_path / 'saved'}", keys=KEYS)  # default split: train
    assert only.id == "b" and "saved dataset, split train" in stats.origin
    with pytest.raises(UserError, match="no split 'dev'"):
        load_examples(f"hf:{tmp_path / 'saved'}:dev", keys=KEYS)


def test_hf_folder_of_data_files(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "files"
    folder.mkdir()
    rows = [{"q": "What is 2+2?", "a": "4"}, {"q": "What is 3+3?", "a": "6"}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, stats = load_examples(f"hf:{folder}", keys=ColumnKeys(prompt="q", answer="a"))
    assert [ex.answer for ex in examples] == ["4", "6"] and "data files" in stats.origin


def test_bad_rows_are_named_or_skipped_and_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"question": "ok?", "gold": "1"},
        {"prompt": "no question column", "gold": "2"},
        {"question": "q", "gold": ""},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = ColumnKeys(prompt="question", answer="gold")
    with pytest.raises(UserError) as info:
        load_examples(f"jsonl:{path}", keys=keys)
    message = str(info.value)
    assert "row jsonl:" in message and "-1" in message and str(path) in message and "data.prompt_key" in message
    examples, stats = load_examples(f"jsonl:{path}", keys=keys, skip_invalid=True)
    assert len(examples) == 1 and stats.skipped == {"missing_key": 1, "missing_answer": 1}
    assert stats.as_dict()["skipped_missing_key"] == 1
