"""One function per row format, each turning a raw row (a dict) into an :class:`~mm_gmpo.types.Example`.

The same functions serve local files and hub datasets, so the hub branch is tested by feeding an in-memory
``datasets.Dataset`` through them. Every problem with a row raises :class:`BadRow` with a message naming the
dataset, the row id and the file, and a ``reason`` under which a skipped row is counted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mm_gmpo.data.images import BadRow, open_image, resolve_inside
from mm_gmpo.types import Example

IMAGE_PLACEHOLDER = "<image>"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched; None if absent."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text or "")]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for pos in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[start:pos].strip()
    return None


def answer_text(value: Any) -> str:
    """Normalise a gold answer to text: ``27.0`` -> ``"27"``, a list of answers -> ``"a, b"``."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(answer_text(v) for v in value if answer_text(v))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    match = re.search(r"\d+", str(value or ""))
    return int(match.group()) if match else None


def _first(row: dict, *keys: str) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "", [])), None)


def require_mapping(row: Any, *, dataset: str, index: int, where: str) -> None:
    """A row must be a JSON object (a mapping of columns): ``null``, a list, a number or a string is a
    :class:`BadRow` naming the dataset, row (0-based position) and file."""
    if not isinstance(row, dict):
        kind = "null" if row is None else type(row).__name__
        raise BadRow(f"{dataset} row {index} ({where}): not a JSON object of columns ({kind})", "bad_row")


def text_cell(value: Any, here: str, column: str) -> str:
    """A problem cell as text: a string, or a number written out; an object, a list or a boolean is a
    :class:`BadRow` (it would otherwise become its Python repr and be trained on)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise BadRow(f"{here}: {column} is a {type(value).__name__}, not text", f"bad_{column}")


def answer_cell(value: Any, here: str) -> str:
    """:func:`answer_text` of an answer cell; an object (mapping) is a :class:`BadRow`."""
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value)):
        raise BadRow(f"{here}: answer is an object, not text, a number or a list of them", "bad_answer")
    return answer_text(value)


def row_id(row: dict, index: int, dataset: str) -> str:
    value = _first(row, "id", "unique_id", "idx", "problem_id")
    return str(value) if value is not None else f"{dataset}-{index}"


def math_example(row: dict, *, dataset: str, index: int, where: str) -> Example:
    """A text-math row (MATH, MATH500, AIME, AMC, Minerva, OlympiadBench; local JSONL or hub columns)."""
    require_mapping(row, dataset=dataset, index=index, where=where)
    ident = row_id(row, index, dataset)
    here = f"{dataset} row {ident} ({where})"
    problem = text_cell(_first(row, "problem", "question", "Problem", "Question"), here, "problem").strip()
    if not problem:
        raise BadRow(f"{here}: empty problem", "empty_problem")
    answer = answer_cell(_first(row, "answer", "final_answer", "expected_answer", "Answer"), here)
    if not answer:
        solution = _first(row, "solution", "Solution")
        answer = last_boxed(solution if isinstance(solution, str) else answer_text(solution)) or ""
    if not answer:
        raise BadRow(f"{here}: missing or empty answer", "missing_answer")
    meta = {"level": _level(row.get("level")), "subject": _first(row, "subject", "type")}
    return Example(ident, problem, answer, source=dataset, meta={k: v for k, v in meta.items() if v is not None})


def official_golds(value: Any, here: str) -> list[str]:
    """The gold answers of a row of the official evaluation suite, as its grader receives them: a string as it is,
    a number as ``str(value)`` (``142.0`` -> ``"142.0"``, as ``boxed_reward_fn`` converts it), a list of strings
    as it is (a response is correct if it matches any). Anything else raises :class:`BadRow` naming ``here``."""
    if value is None:
        raise BadRow(f"{here}: no answer", "missing_answer")
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{here}: empty answer", "missing_answer")
        return [value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRow(f"{here}: answer {value!r} is not a finite number", "bad_answer")
        return [str(value)]
    if isinstance(value, list):
        if not value:
            raise BadRow(f"{here}: answer is an empty list", "missing_answer")
        if not all(isinstance(item, str) and item.strip() for item in value):
            raise BadRow(f"{here}: answer list {value!r} holds something other than non-empty strings", "bad_answer")
        return list(value)
    raise BadRow(f"{here}: answer of type {type(value).__name__} (expected a string, a number or a list of strings)",
                 "bad_answer")  # fmt: skip


def official_example(row: dict, *, dataset: str, index: int, where: str) -> Example:
    """A row of the official GMPO evaluation suite (``problem``, ``answer``: string, number or list of strings).
    ``answer`` is the display text (list items joined by ``", "``); ``meta["golds"]`` holds the golds as the
    official grader receives them (:func:`official_golds`)."""
    require_mapping(row, dataset=dataset, index=index, where=where)
    ident = row_id(row, index, dataset)
    here = f"{dataset} row {ident} ({where})"
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise BadRow(f"{here}: missing or empty problem", "empty_problem")
    golds = official_golds(row.get("answer"), here)
    return Example(ident, problem, answer_text(golds), source=dataset, meta={"golds": golds})


def _strip_placeholders(problem: str, n_images: int, here: str, *, required: bool) -> str:
    """Drop ``<image>`` placeholders, checking there is one per image (``required``: also when none are used)."""
    count = problem.count(IMAGE_PLACEHOLDER)
    if count != n_images and (required or count):
        raise BadRow(f"{here}: {count} {IMAGE_PLACEHOLDER} placeholder(s) but {n_images} image(s)", "image_mismatch")
    return problem.replace(IMAGE_PLACEHOLDER, "").strip()


def choices_cell(value: Any, here: str) -> list[str] | None:
    """A choices cell as a list of texts (None when absent or empty); anything but a list is a :class:`BadRow`."""
    if value in (None, "", []):
        return None
    if not isinstance(value, (list, tuple)) or any(isinstance(c, (dict, list, tuple)) for c in value):
        raise BadRow(f"{here}: choices must be a list of texts, got {type(value).__name__}", "bad_choices")
    return [str(c) for c in value]


def _image_paths(row: dict, here: str) -> list[str]:
    """The row's image paths: ``images`` (a list of paths, or one path) or ``image``; anything else is a BadRow."""
    value = row.get("images") or row.get("image") or []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise BadRow(f"{here}: images must be a path or a list of paths", "bad_image")
    return list(value)


def _choices_meta(row: dict, answer: str, here: str) -> tuple[list[str] | None, dict]:
    choices = choices_cell(row.get("choices"), here)
    letter = row.get("answer_letter")
    if letter is None and choices and answer in choices:
        letter = "ABCD"[choices.index(answer)] if choices.index(answer) < 4 else None
    graph, goal = row.get("problem_type_graph") or [], row.get("problem_type_goal") or []
    meta = {"answer_letter": letter, "problem_type": [*graph, *goal]}
    return choices, meta


def geometry3k_example(
    row: dict, *, dataset: str, index: int, root: Path, where: str, render_missing: bool = True
) -> Example:
    """A Geometry3K row in the staged JSONL layout (``image`` relative to ``root`` or null, plus annotations)."""
    require_mapping(row, dataset=dataset, index=index, where=where)
    ident = row_id(row, index, dataset)
    here = f"{dataset} row {ident} ({where})"
    problem = text_cell(row.get("problem"), here, "problem").replace("\r\n", "\n").strip()
    if not problem:
        raise BadRow(f"{here}: empty problem", "empty_problem")
    answer = answer_cell(row.get("answer"), here)
    if not answer:
        raise BadRow(f"{here}: missing or empty answer", "missing_answer")
    paths = _image_paths(row, here)
    problem = _strip_placeholders(problem, len(paths) or int(render_missing), here, required=False)
    rendered = bool(row.get("rendered"))  # prepared files mark diagrams that were drawn from the annotation
    if paths:
        images = [open_image(resolve_inside(root, p, where=here), where=f"{here}, image {p}") for p in paths]
    elif render_missing and row.get("point_positions") is not None:
        from mm_gmpo.data.render import render_diagram  # drawing code loads only when a diagram is missing

        images, rendered = [render_diagram(row)[0]], True
    else:
        raise BadRow(f"{here}: no image and no annotation to render one from", "missing_image")
    choices, meta = _choices_meta(row, answer, here)
    return Example(ident, problem, answer, choices, images, dataset, {**meta, "rendered": rendered})


def geometry3k_hub_example(row: dict, *, dataset: str, index: int, where: str) -> Example:
    """A hiyouga/geometry3k row: ``images`` (list of PIL), ``problem`` starting with ``<image>``, ``answer``."""
    require_mapping(row, dataset=dataset, index=index, where=where)
    ident = row_id(row, index, dataset)
    here = f"{dataset} row {ident} ({where})"
    images = list(row.get("images") or [])
    problem = _strip_placeholders(text_cell(row.get("problem"), here, "problem"), len(images), here, required=True)
    problem = problem.replace("\r\n", "\n").strip()
    if not problem:
        raise BadRow(f"{here}: empty problem", "empty_problem")
    answer = answer_cell(row.get("answer"), here)
    if not answer:
        raise BadRow(f"{here}: missing or empty answer", "missing_answer")
    loaded = [open_image(_as_image_source(img), where=f"{here}, image {k}") for k, img in enumerate(images)]
    choices, meta = _choices_meta(row, answer, here)
    return Example(ident, problem, answer, choices, loaded, dataset, {**meta, "rendered": False})


def _as_image_source(value: Any):
    """Hub image cells come decoded (PIL) or, without decoding, as {"bytes": ..., "path": ...}."""
    if isinstance(value, dict):
        import io

        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        raise BadRow(f"image cell without bytes (path {value.get('path')!r})", "bad_image")
    return value


def intergps_example(folder: Path, *, dataset: str, index: int = 0, render_missing: bool = True) -> Example:
    """One problem folder of the official Inter-GPS release: ``data.json``, ``logic_form.json``,
    ``img_diagram.png`` (the answer there is a letter; the example's answer is that choice's text). The id is
    the folder's ``data.json`` id (``index``, the folder's position, is only a fallback)."""
    here = f"{dataset} row {folder.name} ({folder})"
    try:
        data = json.loads((folder / "data.json").read_text(encoding="utf-8"))
        logic_path = folder / "logic_form.json"
        logic = json.loads(logic_path.read_text(encoding="utf-8")) if logic_path.exists() else {}
    except (OSError, ValueError) as exc:
        raise BadRow(f"{here}: unreadable data.json / logic_form.json ({exc})", "bad_row") from exc
    if not isinstance(data, dict) or not isinstance(logic, dict):
        raise BadRow(f"{here}: data.json / logic_form.json is not a JSON object", "bad_row")
    choices = choices_cell(data.get("choices"), here) or []
    letter = str(data.get("answer") or "").strip()
    if not letter or letter not in "ABCD"[: len(choices)] or not choices:
        raise BadRow(f"{here}: missing or invalid answer {letter!r} for choices {choices}", "missing_answer")
    row = {
        "id": str(data.get("id", folder.name or index)),
        "problem": data.get("annotat_text") or data.get("problem_text") or "",
        "answer": choices["ABCD".index(letter)],
        "answer_letter": letter,
        "choices": choices,
        "problem_type_graph": data.get("problem_type_graph"),
        "problem_type_goal": data.get("problem_type_goal"),
        "image": "img_diagram.png" if (folder / "img_diagram.png").exists() else None,
        **{k: logic.get(k) for k in ("point_positions", "line_instances", "circle_instances", "diagram_logic_form")},
    }
    return geometry3k_example(
        row, dataset=dataset, index=0, root=folder, where=str(folder), render_missing=render_missing
    )


def jsonl_example(row: dict, *, dataset: str, index: int, root: Path, where: str) -> Example:
    """A row of a user's JSONL file: ``problem``, ``answer``, optional ``id``, ``choices`` and ``images`` (or
    ``image``) as paths relative to the file's folder. ``<image>`` placeholders are optional; when present there
    must be one per image. Rows with Geometry3K annotations but no image get a rendered diagram."""
    require_mapping(row, dataset=dataset, index=index, where=where)
    if row.get("point_positions") is not None or row.get("images") or row.get("image"):
        return geometry3k_example(row, dataset=dataset, index=index, root=root, where=where, render_missing=True)
    ident = row_id(row, index, dataset)
    if IMAGE_PLACEHOLDER in text_cell(row.get("problem"), f"{dataset} row {ident} ({where})", "problem"):
        raise BadRow(
            f"{dataset} row {ident} ({where}): {IMAGE_PLACEHOLDER} placeholder but no image", "image_mismatch"
        )
    example = math_example(row, dataset=dataset, index=index, where=where)
    example.choices = choices_cell(row.get("choices"), f"{dataset} row {ident} ({where})") or example.choices
    return example
