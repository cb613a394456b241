"""Dataset specs (``geometry3k:train``, ``math500``, ``jsonl:/path``, ``parquet:/path``, ``hf:ORG/NAME[:SPLIT]``) to
examples, from local files or the hub. A user's own datasets (jsonl, parquet, hf) map their columns with
:class:`~mm_gmpo.data.generic.ColumnKeys` (``data.prompt_key`` and friends).

The local root is ``local_dir`` when given, else the samples in a source checkout's ``data/sample`` (none in an
installed wheel: there the hub). A root holds ``geometry3k/<split>.jsonl`` (image paths relative to
``geometry3k/``) and ``math/<name>.jsonl``; for Geometry3K a root may instead hold the Inter-GPS release layout
(``<split>/<id>/data.json``, with ``val`` for the validation split), directly or under ``geometry3k/``.
With ``source="auto"`` a spec found in no local root is loaded from the hub with ``datasets.load_dataset``.

The official GMPO evaluation suite (understand-r1-zero ``datasets/evaluation_suite``) has specs of its own,
``official:<set>`` (``OFFICIAL_SETS``), read from ``<root>/math/official_eval/<set>.jsonl``; ``data/sample`` ships
the five complete sets (``data/prepare_paper_eval.py`` rebuilds them from the official Arrow files). They are not
on the hub. ``paper-math`` names all five (``SUITES``, :func:`expand_specs`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from mm_gmpo.data import rows as rowfmt
from mm_gmpo.data.generic import ColumnKeys, generic_example, load_hf, read_parquet
from mm_gmpo.data.images import BadRow, blank_like
from mm_gmpo.errors import UserError
from mm_gmpo.types import Example

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOTS = (REPO_ROOT / "data" / "sample",)  # a source checkout's samples (docs/data.md)
GEOMETRY3K_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
# spec -> set name in the official GMPO evaluation suite, in the paper's column order (AIME24, AMC, MATH500,
# Minerva, OlympiadBench); their golds may be numbers or lists of strings (rows.official_example)
OFFICIAL_SETS = {
    "official:aime": "aime",
    "official:amc": "amc",
    "official:math": "math",
    "official:minerva": "minerva",
    "official:olympiad_bench": "olympiad_bench",
}
SUITES = {"paper-math": list(OFFICIAL_SETS)}  # a name for several specs (mm-gmpo eval --data paper-math)

# name -> file names tried under <root>/math/ (and <root>/ itself)
MATH_FILES = {
    "math500": ["math500.jsonl"],
    "aime24": ["aime24.jsonl"],
    "aime25": ["aime25.jsonl"],
    "amc23": ["amc23.jsonl"],
    "minerva": ["minerva_math.jsonl", "minerva.jsonl"],
    "olympiadbench": ["olympiadbench.jsonl"],
    "math:train": ["math_train.jsonl"],
    "math:test": ["math_test_full.jsonl", "math_test.jsonl"],
    "math_lvl3to5": ["math_lvl3to5.jsonl"],
    **{spec: [f"official_eval/{name}.jsonl"] for spec, name in OFFICIAL_SETS.items()},
}
# name -> (hub id, config, split)
HUB_IDS = {
    "geometry3k": ("hiyouga/geometry3k", None, None),  # split from the spec
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "aime25": ("math-ai/aime25", None, "test"),
    "amc23": ("math-ai/amc23", None, "test"),
    "minerva": ("math-ai/minervamath", None, "test"),
    "olympiadbench": ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
    "math:train": ("DigitalLearningGmbH/MATH-lighteval", None, "train"),
    "math:test": ("DigitalLearningGmbH/MATH-lighteval", None, "test"),
}
KNOWN_SPECS = [
    "geometry3k:train",
    "geometry3k:validation",
    "geometry3k:test",
    *MATH_FILES,
    *SUITES,
    "jsonl:<path>",
    "parquet:<path>",
    "hf:<org/name or folder>[:<split>]",
    "synthetic:<task>:<split>[:<size>]",
]


@dataclass
class DataStats:
    """What loading one dataset did: rows read, kept, skipped (by reason), diagrams rendered."""

    dataset: str
    rows: int = 0  # rows read
    kept: int = 0  # examples returned
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped (skip_invalid=True)
    rendered: int = 0  # examples whose image was drawn from the annotation
    blanked: int = 0  # images replaced by blank ones (blank_images=True)
    origin: str = ""  # file, folder or hub id the rows came from

    def as_dict(self) -> dict[str, int]:
        out = {"rows": self.rows, "kept": self.kept, "skipped": sum(self.skipped.values()), "rendered": self.rendered}
        out.update({f"skipped_{reason}": n for reason, n in sorted(self.skipped.items())})
        return out


def expand_specs(specs: Iterable[str]) -> list[str]:
    """Specs with each suite name (``paper-math``) replaced by its sets, duplicates dropped, order kept."""
    out: list[str] = []
    for spec in specs:
        for one in SUITES.get(spec.strip(), [spec]):
            if one not in out:
                out.append(one)
    return out


def is_official(spec: str) -> bool:
    """Whether ``spec`` names a set of the official GMPO evaluation suite."""
    return spec.strip() in OFFICIAL_SETS


def parse_spec(spec: str) -> tuple[str, str | None]:
    """A dataset spec -> (name, split or argument).

    - ``"geometry3k:test"`` -> ("geometry3k", "test") (splits train, validation (or val), test; default train);
    - ``"math500"`` -> ("math500", None) (the text sets of ``MATH_FILES``, ``official:amc`` and the other sets of
      the official GMPO evaluation suite included);
    - ``"jsonl:/path/rows.jsonl"`` -> ("jsonl", "/path/rows.jsonl"); ``"parquet:/path/rows.parquet"`` likewise;
    - ``"hf:org/name:test"`` -> ("hf", "org/name:test"): ``datasets`` from the hub (or its cache), or from a local
      folder saved with ``save_to_disk`` or holding data files (split default train);
    - ``"synthetic:<task>:<split>[:<size>]"`` -> ("synthetic", "<task>:<split>:<size>"): a generated image task
      (:mod:`mm_gmpo.data.synthetic`; tasks polygon_sides, longest_segment, number_inside, count_points) or text
      task (:mod:`mm_gmpo.data.synthetic_text`; chain_sum); splits train, val, test from fixed seeds; size
      defaults to 2000 / 300 / 500, e.g. ``synthetic:polygon_sides:train:2000``.
    """
    spec = spec.strip()
    for kind in ("jsonl", "parquet", "hf"):
        if spec.startswith(f"{kind}:"):
            if not spec.removeprefix(f"{kind}:"):
                raise UserError(f"dataset spec {spec!r}: nothing after {kind}:")
            return kind, spec.removeprefix(f"{kind}:")
    if spec.startswith("synthetic:"):
        from mm_gmpo.data.synthetic import parse_synthetic

        parsed = parse_synthetic(spec.removeprefix("synthetic:"))
        return "synthetic", f"{parsed.task}:{parsed.split}:{parsed.size}"
    if spec.startswith("geometry3k"):
        split = spec.partition(":")[2] or "train"
        if split not in GEOMETRY3K_SPLITS:
            raise UserError(f"dataset spec {spec!r}: unknown Geometry3K split {split!r} (train, validation, test)")
        return "geometry3k", "validation" if split == "val" else split
    if spec in MATH_FILES:
        return spec, None
    if spec in SUITES:
        raise UserError(f"dataset spec {spec!r} names several sets ({', '.join(SUITES[spec])}): give it to "
                        "mm-gmpo eval --data, or name one set")  # fmt: skip
    raise UserError(f"unknown dataset spec {spec!r}; known: {', '.join(KNOWN_SPECS)}")


def local_roots(local_dir: str | Path | None) -> list[Path]:
    if local_dir:
        root = Path(local_dir).expanduser()
        if not root.is_dir():
            raise UserError(f"data.local_dir={local_dir}: not a folder")
        return [root]
    return [root for root in DEFAULT_ROOTS if root.is_dir()]


def _find_local(name: str, split: str | None, roots: list[Path]) -> tuple[str, Path] | None:
    """(layout, path) of the first local copy: layout is "jsonl" (a file) or "intergps" (a split folder)."""
    for root in roots:
        if name == "geometry3k":
            for base in (root / "geometry3k", root):
                if (base / f"{split}.jsonl").is_file():
                    return "jsonl", base / f"{split}.jsonl"
                for folder in (base / GEOMETRY3K_SPLITS[split], base / split):
                    if folder.is_dir() and any(folder.glob("*/data.json")):
                        return "intergps", folder
        else:
            for base in (root / "math", root):
                for file_name in MATH_FILES[name]:
                    if (base / file_name).is_file():
                        return "jsonl", base / file_name
            if name == "math_lvl3to5" and all(_find_local(n, None, [root]) for n in ("math:train", "math:test")):
                return "pool", root
    return None


@dataclass(frozen=True)
class UnreadableLine:
    """A JSONL line that is not UTF-8 or not JSON, kept in its place so that ``data.skip_invalid`` can count it."""

    message: str
    reason: str  # "not_utf8" | "malformed_json"


def read_jsonl(path: Path, dataset: str, *, keep_unreadable: bool = False) -> list:
    """The JSON rows of ``path``. A line that is not UTF-8 or not JSON raises :class:`UserError` naming file and
    line, or with ``keep_unreadable`` stands in the list as an :class:`UnreadableLine` (a bad row, see ``_finish``)."""
    rows: list = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                rows.append(json.loads(line))
            except UnicodeDecodeError:
                problem = UnreadableLine(f"{dataset}: {path} line {line_no} is not UTF-8 text", "not_utf8")
            except json.JSONDecodeError as exc:
                problem = UnreadableLine(
                    f"{dataset}: {path} line {line_no} is not valid JSON ({exc.msg})", "malformed_json"
                )
            else:
                continue
            if not keep_unreadable:
                raise UserError(problem.message)
            rows.append(problem)
    return rows


def build_math_pool(train: Iterable[dict], test: Iterable[dict], math500: Iterable[dict]) -> list[dict]:
    """The paper's text-math training pool: MATH levels 3-5 of train plus test, minus the MATH500 problems.

    MATH500 rows are matched by id (``test/<subject>/<n>.json``) or, for copies without those ids, by the
    problem text with whitespace collapsed.
    """
    held_out = list(math500)
    held_ids = {str(r.get("unique_id") or r.get("id")) for r in held_out}
    held_texts = {" ".join(str(r.get("problem", "")).split()) for r in held_out}
    pool = []
    for row in [*train, *test]:
        if rowfmt._level(row.get("level")) not in (3, 4, 5):
            continue
        if str(row.get("id") or row.get("unique_id")) in held_ids or " ".join(row["problem"].split()) in held_texts:
            continue
        pool.append(row)
    return pool


def has_answer(row: dict) -> bool:
    return bool(rowfmt.answer_text(row.get("answer")) or rowfmt.last_boxed(str(row.get("solution") or "")))


def _drop_unanswered(raw: list[dict], stats: DataStats) -> list[dict]:
    """MATH has two training solutions with an empty \\boxed{} (train/number_theory/7115, 7117): the pool is
    defined with them (8,888 rows), but they cannot be graded, so they are counted as skipped, not fatal."""
    kept = [row for row in raw if has_answer(row)]
    if len(kept) < len(raw):
        stats.skipped["missing_answer"] = len(raw) - len(kept)
        stats.rows += len(raw) - len(kept)  # read, then skipped
        log.warning("%s: %d pool rows have no gold answer and are left out", stats.dataset, len(raw) - len(kept))
    return kept


def load_examples(
    spec: str,
    *,
    source: Literal["auto", "local", "hub"] = "auto",
    local_dir: str | Path | None = None,
    split_limit: int | None = None,
    skip_invalid: bool = False,
    blank_images: bool = False,
    render_missing: bool = True,
    keys: ColumnKeys | None = None,
) -> tuple[list[Example], DataStats]:
    """Load a dataset by spec. Bad rows raise :class:`UserError` naming dataset, row id and file, or with
    ``skip_invalid`` are skipped and counted in ``DataStats.skipped`` by reason. ``split_limit`` keeps the first N
    rows read; ``blank_images`` replaces every image by a white one of the same size; ``render_missing`` draws a
    Geometry3K diagram from its annotation where the row has no image. ``keys``: the columns of a user's own
    dataset (jsonl, parquet, hf); without any, JSONL rows keep their historical format (:func:`rows.jsonl_example`)."""
    name, split = parse_spec(spec)
    if source not in ("auto", "local", "hub"):
        raise UserError(f"data.source={source!r}: expected auto, local or hub")
    keys = keys or ColumnKeys()
    if name in ("jsonl", "parquet"):
        path = Path(split).expanduser()
        if not path.is_file():
            raise UserError(f"dataset spec {spec!r}: no such file {path}")
        if name == "jsonl" and not keys.any:
            convert = partial(rowfmt.jsonl_example, dataset=spec, root=path.parent, where=str(path))
        else:
            convert = partial(generic_example, dataset=spec, root=path.parent, where=str(path), keys=keys)
        if name == "jsonl":
            raw = read_jsonl(path, spec, keep_unreadable=skip_invalid)[:split_limit]
        else:
            raw = read_parquet(path, spec)[:split_limit]
        return _finish(convert, raw, DataStats(spec, origin=str(path)), skip_invalid, blank_images)
    if name == "hf":  # data.source and data.local_dir do not apply: the spec says where
        dataset, origin, root = load_hf(split, spec)
        convert = partial(generic_example, dataset=spec, root=root, where=origin, keys=keys)
        count = len(dataset) if split_limit is None else min(split_limit, len(dataset))
        rows = (dataset[i] for i in range(count))
        return _finish(convert, rows, DataStats(spec, origin=origin), skip_invalid, blank_images)
    if name == "synthetic":  # generated in process: data.source and data.local_dir do not apply
        from mm_gmpo.data.synthetic import synthetic_example

        task, split_name, size = split.split(":")
        convert = partial(synthetic_example, task=task, split=split_name, source=spec)
        stats = DataStats(spec, origin=f"generated ({task}, {split_name} seeds)")
        return _finish(convert, list(range(int(size)))[:split_limit], stats, skip_invalid, blank_images)
    roots = [] if source == "hub" else local_roots(local_dir)
    found = _find_local(name, split, roots)
    if found is None:
        where = ", ".join(str(r) for r in roots) or "(no local data folder)"
        if name in OFFICIAL_SETS:  # not on the hub: only local files
            raise UserError(
                f"dataset {spec!r} is not on the hub and there is no math/official_eval/{OFFICIAL_SETS[name]}.jsonl "
                f"under {where}; build it with "
                "data/prepare_paper_eval.py from understand-r1-zero's datasets/evaluation_suite and set "
                "--local-dir (data.local_dir) to the folder above math/"
            )
        if source == "local":
            raise UserError(f"dataset {spec!r} not found under {where}; set data.local_dir or data.source=hub")
        if source == "auto":
            log.info("%s: not found under %s, loading it from the hub", spec, where)
        return examples_from_hub(spec, split_limit=split_limit, skip_invalid=skip_invalid, blank_images=blank_images)
    layout, path = found
    stats = DataStats(spec, origin=str(path))
    if layout == "intergps":
        folders = sorted((p.parent for p in path.glob("*/data.json")), key=lambda p: (len(p.name), p.name))
        convert = partial(rowfmt.intergps_example, dataset=spec, render_missing=render_missing)
        return _finish(convert, folders[:split_limit], stats, skip_invalid, blank_images)
    if layout == "pool":
        raw = _local_pool(path, stats)
    else:
        raw = read_jsonl(path, spec, keep_unreadable=skip_invalid)
    if name == "geometry3k":
        convert = partial(
            rowfmt.geometry3k_example, dataset=spec, root=path.parent, where=str(path), render_missing=render_missing
        )
    elif name in OFFICIAL_SETS:
        convert = partial(rowfmt.official_example, dataset=spec, where=str(path))
    else:
        convert = partial(rowfmt.math_example, dataset=spec, where=str(path))
    return _finish(convert, raw[:split_limit], stats, skip_invalid, blank_images)


def _local_pool(root: Path, stats: DataStats) -> list[dict]:
    """The MATH levels 3-5 pool built on the fly from a root that has MATH train, test and MATH500."""
    held = _find_local("math500", None, [root])
    if held is None:  # without it the pool would silently contain the MATH500 evaluation problems
        raise UserError(f"math_lvl3to5: {root} has MATH train/test but no math500.jsonl to hold out")
    parts = {}
    for name, path in [
        *((n, _find_local(n, None, [root])[1]) for n in ("math:train", "math:test")),
        ("math500", held[1]),
    ]:
        parts[name] = read_jsonl(path, name)
        for index, row in enumerate(parts[name]):  # every row an object before the pool reads its columns
            rowfmt.require_mapping(row, dataset=name, index=index, where=str(path))
    raw = build_math_pool(parts["math:train"], parts["math:test"], parts["math500"])
    stats.origin = f"{root} (MATH train+test levels 3-5 minus MATH500)"
    return _drop_unanswered(raw, stats)


def _finish(
    convert: Callable[..., Example], raw: Iterable, stats: DataStats, skip_invalid: bool, blank_images: bool
) -> tuple[list[Example], DataStats]:
    """Convert rows one by one, skipping (and counting) or raising on bad ones; then blank images if asked."""
    examples, seen = [], set()
    for index, row in enumerate(raw):
        stats.rows += 1
        try:
            if isinstance(row, UnreadableLine):
                raise BadRow(row.message, row.reason)
            example = convert(row, index=index)
            if example.id in seen:
                raise BadRow(f"{stats.dataset} row {example.id} ({stats.origin}): duplicate id", "duplicate_id")
        except BadRow as exc:
            if not skip_invalid:
                raise
            stats.skipped[exc.reason] = stats.skipped.get(exc.reason, 0) + 1
            log.warning("skipping a bad row: %s", exc)
            continue
        seen.add(example.id)
        stats.rendered += bool(example.meta.get("rendered"))
        if blank_images and example.images:
            example.images = [blank_like(img) for img in example.images]
            stats.blanked += len(example.images)
        examples.append(example)
    stats.kept = len(examples)
    if stats.skipped:
        log.warning(
            "%s: skipped %d of %d rows (%s)", stats.dataset, sum(stats.skipped.values()), stats.rows, stats.skipped
        )
    log.info("%s: %d examples from %s (%d rendered diagrams)", stats.dataset, stats.kept, stats.origin, stats.rendered)
    return examples, stats


def examples_from_hub_dataset(
    dataset,
    spec: str,
    *,
    origin: str = "",
    split_limit: int | None = None,
    skip_invalid: bool = False,
    blank_images: bool = False,
) -> tuple[list[Example], DataStats]:
    """Convert rows of a loaded ``datasets.Dataset`` (or any sequence of dicts) for ``spec``."""
    name, _ = parse_spec(spec)
    stats = DataStats(spec, origin=origin or f"hub:{HUB_IDS.get(name, ('?',))[0]}")
    count = len(dataset) if split_limit is None else min(split_limit, len(dataset))
    row_format = rowfmt.geometry3k_hub_example if name == "geometry3k" else rowfmt.math_example
    convert = partial(row_format, dataset=spec, where=stats.origin)
    return _finish(convert, [dataset[i] for i in range(count)], stats, skip_invalid, blank_images)


def examples_from_hub(
    spec: str, *, split_limit: int | None = None, skip_invalid: bool = False, blank_images: bool = False
) -> tuple[list[Example], DataStats]:
    """Load ``spec`` with ``datasets.load_dataset`` (needs the hub; not reachable on our CI machines)."""
    from mm_gmpo.errors import require

    datasets = require("datasets", f"loading {spec} from the hub", "pip install datasets")
    name, split = parse_spec(spec)

    def load(key: str, fallback_split: str | None = None):
        hub_id, config, hub_split = HUB_IDS[key]
        try:
            return datasets.load_dataset(hub_id, config, split=hub_split or fallback_split)
        except Exception as exc:  # the hub raises many types (connection, missing repo, auth)
            raise UserError(f"dataset {spec!r}: could not load {hub_id} from the hub ({exc})") from exc

    if name == "math_lvl3to5":
        train, test, held = load("math:train"), load("math:test"), load("math500")
        pool = build_math_pool((dict(r) for r in train), (dict(r) for r in test), (dict(r) for r in held))
        pool = [row for row in pool if has_answer(row)]  # as for local files: ungradable rows are left out
        return examples_from_hub_dataset(
            pool,
            spec,
            origin="hub:MATH levels 3-5 minus MATH500",
            split_limit=split_limit,
            skip_invalid=skip_invalid,
            blank_images=blank_images,
        )
    dataset = load(name, split)
    return examples_from_hub_dataset(
        dataset,
        spec,
        origin=f"hub:{HUB_IDS[name][0]}",
        split_limit=split_limit,
        skip_invalid=skip_invalid,
        blank_images=blank_images,
    )
