"""Write the sample data shipped in the repo (``data/sample``) and the diagram comparison sheet (``docs/``).

From a full local copy (``--src``: ``geometry3k/`` laid out as ``data/sample/geometry3k``, and ``math/`` with
``math_train.jsonl``, ``math_test_full.jsonl`` and the evaluation sets):
- ``data/sample/geometry3k/{train,validation,test}.jsonl``: the first 300 / 100 / 100 rows of each split, with a
  diagram per row under ``images/<split>/<id>.png``: the 10 clean originals (train ids 11-20) copied as they are,
  every other diagram drawn from its annotation (``rendered: true``);
- ``data/sample/math/``: 300 rows of the MATH levels 3-5 pool (a seeded random draw, so every subject and level
  appears), and the first rows of each evaluation set;
- ``docs/diagrams.png``: each of the 10 originals beside the diagram drawn from the same annotation.

    python data/make_samples.py --src DATA_DIR
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mm_gmpo.data.images import to_rgb  # noqa: E402
from mm_gmpo.data.loaders import build_math_pool, has_answer, read_jsonl  # noqa: E402
from mm_gmpo.data.render import render_diagram, save_png  # noqa: E402

GEOMETRY3K_ROWS = {"train": 300, "validation": 100, "test": 100}
MATH_SLICES = {  # sample file -> (staged file, rows)
    "math500.jsonl": ("math500.jsonl", 100),
    "aime24.jsonl": ("aime24.jsonl", 10),
    "aime25.jsonl": ("aime25.jsonl", 10),
    "amc23.jsonl": ("amc23.jsonl", 10),
    "minerva_math.jsonl": ("minerva_math.jsonl", 20),
    "olympiadbench.jsonl": ("olympiadbench.jsonl", 20),
}
POOL_ROWS = 300


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def geometry3k_samples(src: Path, out: Path) -> None:
    for split, count in GEOMETRY3K_ROWS.items():
        rows = read_jsonl(src / f"{split}.jsonl", f"geometry3k:{split}")[:count]
        rendered = 0
        for row in rows:
            target = Path("images") / split / f"{row['id']}.png"
            (out / target).parent.mkdir(parents=True, exist_ok=True)
            if row.get("image") and (src / row["image"]).is_file():
                shutil.copyfile(src / row["image"], out / target)
                row["rendered"] = False
            else:
                save_png(render_diagram(row)[0], out / target)
                row["rendered"] = True
                rendered += 1
            row["image"] = str(target)
            row.pop("image_overlay", None)
        write_jsonl(out / f"{split}.jsonl", rows)
        print(f"geometry3k {split}: {len(rows)} rows, {rendered} rendered diagrams")


def math_samples(src: Path, out: Path, seed: int) -> None:
    pool = build_math_pool(
        read_jsonl(src / "math_train.jsonl", "math:train"),
        read_jsonl(src / "math_test_full.jsonl", "math:test"),
        read_jsonl(src / "math500.jsonl", "math500"),
    )
    pool = [row for row in pool if has_answer(row)]
    write_jsonl(out / "math_lvl3to5.jsonl", random.Random(seed).sample(pool, POOL_ROWS))
    print(f"math_lvl3to5: {POOL_ROWS} of {len(pool)} pool rows")
    for name, (staged, count) in MATH_SLICES.items():
        write_jsonl(out / name, read_jsonl(src / staged, staged)[:count])
        print(f"{name}: {count} rows")


def comparison_sheet(src: Path, path: Path) -> None:
    """Originals (left) beside the diagrams drawn from the same annotation (right), one row per id."""
    rows = [r for r in read_jsonl(src / "train.jsonl", "geometry3k:train") if r.get("image")]
    font = ImageFont.load_default(size=18)
    pairs = []
    for row in rows:
        original = to_rgb(Image.open(src / row["image"]))
        drawn = render_diagram(row)[0]
        pairs.append((row["id"], original, drawn))
    gap, header = 16, 28
    left = max(p[1].width for p in pairs)
    width = left + max(p[2].width for p in pairs) + 3 * gap
    height = sum(max(p[1].height, p[2].height) + header + gap for p in pairs) + gap
    sheet = Image.new("RGB", (width, height), (235, 235, 235))
    draw, y = ImageDraw.Draw(sheet), gap
    for ident, original, drawn in pairs:
        draw.text((gap, y), f"id {ident}: original", font=font, fill="black")
        draw.text((left + 2 * gap, y), f"id {ident}: drawn from the annotation", font=font, fill="black")
        sheet.paste(original, (gap, y + header))
        sheet.paste(drawn, (left + 2 * gap, y + header))
        y += max(original.height, drawn.height) + header + gap
    save_png(sheet, path, colors=32)
    print(f"wrote {path} ({len(pairs)} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="the full local data (geometry3k/, math/)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "sample")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "diagrams.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    geometry3k_samples(args.src / "geometry3k", args.out / "geometry3k")
    math_samples(args.src / "math", args.out / "math", args.seed)
    comparison_sheet(args.src / "geometry3k", args.docs)
    files = [p for p in args.out.rglob("*") if p.is_file()]
    print(f"{args.out}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
