"""Datasets of one's own: rows of a JSONL or Parquet file or of a ``datasets`` dataset (``hf:ORG/NAME[:SPLIT]`` from
the hub or its cache, or a local folder saved with ``save_to_disk`` or holding data files), with the columns named
by ``data.prompt_key``, ``data.answer_key``, ``data.image_key``, ``data.choices_key`` (empty: the usual names).

Images may be file paths (relative to the file's folder), bytes, ``{"bytes": ..., "path": ...}`` cells (the
``datasets`` Image feature undecoded, and how it is stored in Parquet), decoded PIL images, or a list of any of
these (several images per row). Columns that are not mapped and hold plain values are kept in ``Example.meta``,
where a reward function of one's own sees them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mm_gmpo.data import rows as rowfmt
from mm_gmpo.data.images import BadRow, open_image, resolve_inside
from mm_gmpo.errors import UserError, require
from mm_gmpo.types import Example

log = logging.getLogger(__name__)

AUTO_PROMPT = ("problem", "question", "prompt", "Problem", "Question")
AUTO_ANSWER = ("answer", "final_answer", "expected_answer", "solution", "Answer")
AUTO_IMAGE = ("images", "image")
AUTO_CHOICES = ("choices", "options")


@dataclass(frozen=True)
class ColumnKeys:
    """Which column holds what (``data.*_key``); empty: the first of the usual names that a row has."""

    prompt: str = ""  # problem text (may contain one <image> placeholder per image)
    answer: str = ""  # gold answer (a solution with a \\boxed{} answer works too)
    image: str = ""  # image or list of images
    choices: str = ""  # list of multiple-choice options

    @property
    def any(self) -> bool:
        return bool(self.prompt or self.answer or self.image or self.choices)


def _column(row: dict, key: str, auto: tuple[str, ...], here: str, config_key: str, *, required: bool) -> Any:
    if key:
        if key not in row:
            if not required:
                return None
            raise BadRow(f"{here}: no column {key!r} ({config_key}; columns: {', '.join(sorted(row))})", "missing_key")
        return row[key]
    return next((row[k] for k in auto if row.get(k) not in (None, "", [])), None)


def _image_sources(value: Any, here: str, root: Path | None) -> list:
    """A cell -> sources that :func:`open_image` takes (PIL image, path, file object)."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    sources = []
    for k, item in enumerate(values):
        if isinstance(item, dict):  # the Image feature undecoded, or a Parquet struct
            item = item.get("bytes") or item.get("path")
        if isinstance(item, Image.Image):
            sources.append(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            sources.append(io.BytesIO(bytes(item)))
        elif isinstance(item, str) and item:
            if root is None:
                raise BadRow(f"{here}, image {k}: a file path {item!r} in a dataset without a folder", "bad_path")
            sources.append(resolve_inside(root, item, where=here))
        else:
            raise BadRow(f"{here}, image {k}: not an image, a path or bytes ({type(item).__name__})", "bad_image")
    return sources


def generic_example(
    row: dict, *, dataset: str, index: int, where: str, root: Path | None, keys: ColumnKeys = ColumnKeys()
) -> Example:
    """One row of a user's dataset -> :class:`Example`; raises :class:`BadRow` naming dataset, row and file."""
    rowfmt.require_mapping(row, dataset=dataset, index=index, where=where)
    ident = rowfmt.row_id(row, index, dataset)
    here = f"{dataset} row {ident} ({where})"
    prompt_cell = _column(row, keys.prompt, AUTO_PROMPT, here, "data.prompt_key", required=True)
    problem = rowfmt.text_cell(prompt_cell, here, "problem")
    answer = rowfmt.answer_cell(_column(row, keys.answer, AUTO_ANSWER, here, "data.answer_key", required=True), here)
    if rowfmt.last_boxed(answer):  # a whole solution: its boxed answer
        answer = rowfmt.last_boxed(answer)
    if not answer:
        raise BadRow(f"{here}: missing or empty answer", "missing_answer")
    sources = _image_sources(_column(row, keys.image, AUTO_IMAGE, here, "data.image_key", required=False), here, root)
    problem = rowfmt._strip_placeholders(problem, len(sources), here, required=False)
    problem = problem.replace("\r\n", "\n").strip()
    if not problem:
        raise BadRow(f"{here}: empty problem", "empty_problem")
    images = [open_image(src, where=f"{here}, image {k}") for k, src in enumerate(sources)]
    choices_cell = _column(row, keys.choices, AUTO_CHOICES, here, "data.choices_key", required=False)
    if choices_cell not in (None, "", []) and not isinstance(choices_cell, (list, tuple)):
        raise BadRow(f"{here}: choices must be a list, got {type(choices_cell).__name__}", "bad_choices")
    choices = [str(c) for c in choices_cell] if choices_cell else None
    used = {keys.prompt, keys.answer, keys.image, keys.choices, "id"}
    meta = {k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool))}
    if choices and answer in choices and choices.index(answer) < 4 and "answer_letter" not in meta:
        meta["answer_letter"] = "ABCD"[choices.index(answer)]
    return Example(ident, problem, answer, choices, images, dataset, meta)


def read_parquet(path: Path, dataset: str) -> list[dict]:
    pq = require("pyarrow.parquet", f"reading {dataset}", "pip install pyarrow")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 (pyarrow raises several types for a bad file)
        raise UserError(f"{dataset}: {path} is not a readable Parquet file ({exc})") from exc


def parse_hf(argument: str) -> tuple[str, str | None]:
    """``ORG/NAME[:SPLIT]`` or ``PATH[:SPLIT]`` -> (name or path, split or None). A whole argument that is an
    existing path keeps its colons."""
    if Path(argument).expanduser().exists():
        return argument, None
    name, sep, split = argument.rpartition(":")
    return (name, split or None) if sep and name else (argument, None)


def load_hf(argument: str, spec: str) -> tuple[Any, str, Path | None]:
    """(rows, origin, folder for relative image paths) of ``hf:``: a ``save_to_disk`` folder (``load_from_disk``),
    a folder or file of data files, or a hub id (``load_dataset``: the hub, or its cache offline)."""
    datasets = require("datasets", f"loading {spec}", "pip install datasets")
    name, split = parse_hf(argument)
    path = Path(name).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = split or ("train" if "train" in loaded else next(iter(loaded), "train"))
            if split not in loaded:
                raise UserError(f"dataset spec {spec!r}: no split {split!r} in {path} (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        return loaded, f"{path} (saved dataset{f', split {split}' if split else ''})", path
    try:
        if path.exists():
            return datasets.load_dataset(str(path), split=split or "train"), f"{path} (data files)", path
        return datasets.load_dataset(name, split=split or "train"), f"hf:{name}:{split or 'train'}", None
    except Exception as exc:  # noqa: BLE001 (the hub and the builders raise many types)
        raise UserError(f"dataset spec {spec!r}: could not load {name} with datasets ({exc})") from exc
