"""Build the text-math training pool: MATH levels 3-5 of train plus test, minus the MATH500 problems.

On local files (``--src``: ``math_train.jsonl``, ``math_test_full.jsonl`` and ``math500.jsonl``, rows as in
``data/sample/math``) the rule selects exactly 8,888 rows (asserted). Two of them
(``train/number_theory/7115.json``, ``7117.json``) have an empty ``\\boxed{}`` upstream, so no gold answer: they
are left out of the written file (8,886 rows) and named here. ``--source hub`` builds the same pool from the
hub copies (MATH-lighteval train/test and HuggingFaceH4/MATH-500).

    python data/prepare_math.py --src MATH_DIR --out data/math/math_lvl3to5.jsonl
    python data/prepare_math.py --source hub --out data/math/math_lvl3to5.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mm_gmpo.data.loaders import HUB_IDS, build_math_pool, has_answer, read_jsonl  # noqa: E402

EXPECTED_POOL_ROWS = 8888  # MATH lvl 3-5 (train 5586 + test) minus MATH500, on the staged files


def load_parts(source: str, src: Path) -> tuple[list[dict], list[dict], list[dict]]:
    if source == "local":
        return (
            read_jsonl(src / "math_train.jsonl", "math:train"),
            read_jsonl(src / "math_test_full.jsonl", "math:test"),
            read_jsonl(src / "math500.jsonl", "math500"),
        )
    import datasets

    def hub(key: str) -> list[dict]:
        hub_id, config, split = HUB_IDS[key]
        return [dict(row) for row in datasets.load_dataset(hub_id, config, split=split)]

    return hub("math:train"), hub("math:test"), hub("math500")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, help="folder of the MATH files (required with --source local)")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "math" / "math_lvl3to5.jsonl")
    parser.add_argument("--source", choices=("local", "hub"), default="local")
    args = parser.parse_args()
    if args.source == "local" and args.src is None:
        parser.error("--src is required with --source local (a folder of the MATH JSONL files), or use --source hub")
    train, test, math500 = load_parts(args.source, args.src)
    pool = build_math_pool(train, test, math500)
    print(f"MATH train {len(train)} + test {len(test)}, MATH500 {len(math500)} held out -> pool {len(pool)} rows")
    if args.source == "local":
        assert len(pool) == EXPECTED_POOL_ROWS, f"expected {EXPECTED_POOL_ROWS} pool rows, got {len(pool)}"
    unanswered = [row.get("id", "?") for row in pool if not has_answer(row)]
    pool = [row for row in pool if has_answer(row)]
    print(f"left out {len(unanswered)} rows without a gold answer: {unanswered}")
    print("levels:", dict(sorted(Counter(row.get("level") for row in pool).items(), key=str)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for row in pool:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(pool)} rows to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
