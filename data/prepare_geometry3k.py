"""Prepare Geometry3K for training: one JSONL per split plus a PNG diagram per problem.

From a local copy (``--src``: ``{train,validation,test}.jsonl`` with ``images/<split>/<id>.png`` where a clean
original exists, rows as in ``data/sample/geometry3k``, or the Inter-GPS release layout) every diagram is
drawn from its annotation (``mm_gmpo.data.render``); where the clean original is present it is copied instead
(``--render-all`` draws those too). Rows keep every field of the source and get ``image`` pointing at the PNG and
``rendered`` saying which it is. ``--source hub`` writes the same layout from ``hiyouga/geometry3k``.

    python data/prepare_geometry3k.py --src GEOMETRY3K_DIR --out data/geometry3k
    python data/prepare_geometry3k.py --source hub --out data/geometry3k
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mm_gmpo.data.loaders import read_jsonl  # noqa: E402
from mm_gmpo.data.render import render_diagram, save_png  # noqa: E402

SPLITS = ("train", "validation", "test")


def prepare_split_local(src: Path, out: Path, split: str, render_all: bool, limit: int | None) -> dict[str, int]:
    """Write ``out/<split>.jsonl`` and ``out/images/<split>/<id>.png``; returns counts."""
    counts = {"rows": 0, "rendered": 0, "original": 0, "with_missing_points": 0}
    rows = read_jsonl(src / f"{split}.jsonl", f"geometry3k:{split}")[:limit]
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            target = Path("images") / split / f"{row['id']}.png"
            original = src / row["image"] if row.get("image") else None
            if original is not None and original.is_file() and not render_all:
                (out / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(original, out / target)
                row["rendered"] = False
                counts["original"] += 1
            else:
                image, scene = render_diagram(row)
                save_png(image, out / target)
                row["rendered"] = True
                counts["rendered"] += 1
                counts["with_missing_points"] += bool(scene.missing)
            row["image"] = str(target)
            row.pop("image_overlay", None)  # the overlay copies stay out of training data
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts["rows"] += 1
    return counts


def prepare_split_hub(out: Path, split: str, limit: int | None) -> dict[str, int]:
    """Same layout from hiyouga/geometry3k (columns images / problem / answer; needs the hub)."""
    import datasets

    dataset = datasets.load_dataset("hiyouga/geometry3k", split=split)
    counts = {"rows": 0, "rendered": 0, "original": 0}
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
        for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
            row = dataset[index]
            images = row["images"]
            if row["problem"].count("<image>") != len(images):
                print(f"skipping {split} row {index}: placeholders do not match its {len(images)} image(s)")
                continue
            paths = []
            for k, image in enumerate(images):
                target = Path("images") / split / f"{index}_{k}.png"
                (out / target).parent.mkdir(parents=True, exist_ok=True)
                image.save(out / target)
                paths.append(str(target))
            record = {
                "id": f"{split}-{index}",
                "problem": row["problem"].replace("<image>", "").strip(),
                "answer": row["answer"],
                "images": paths,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["rows"] += 1
            counts["original"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, help="the local copy (required with --source local)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "geometry3k")
    parser.add_argument("--source", choices=("local", "hub"), default="local")
    parser.add_argument("--render-all", action="store_true", help="draw diagrams even where the original exists")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each split")
    args = parser.parse_args()
    if args.source == "local" and args.src is None:
        parser.error("--src is required with --source local (a folder of Geometry3K JSONL), or use --source hub")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for split in SPLITS:
        if args.source == "hub":
            counts = prepare_split_hub(args.out, split, args.limit)
        else:
            counts = prepare_split_local(args.src, args.out, split, args.render_all, args.limit)
        print(f"{split}: {counts}")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
