"""Write the official GMPO evaluation suite as JSONL, the files the ``official:<set>`` specs read.

The suite is understand-r1-zero's ``datasets/evaluation_suite`` (sail-sg/understand-r1-zero, MIT licence), a
``datasets.DatasetDict`` saved with ``save_to_disk`` with one split per set: aime (30), amc (83), math (500),
minerva (272), olympiad_bench (675). callsys/GMPO's evaluation reads it as it is. Each row is written unchanged
(``problem``, ``answer``: a string, a float or a list of strings, and ``difficulty`` where the set has it) after
an added ``id`` of ``<set>/<row>``. Every row is checked as the loader checks it (a missing answer, an empty
list, an answer of another type: one line naming the set and row, exit 2).

    git clone https://github.com/sail-sg/understand-r1-zero
    python data/prepare_paper_eval.py --src understand-r1-zero/datasets/evaluation_suite

writes ``data/sample/math/official_eval/<set>.jsonl`` (the repo ships these five files, so this only rebuilds
them); with ``--out DIR/math/official_eval`` the sets are read with ``--local-dir DIR`` (``data.local_dir``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mm_gmpo.data.loaders import OFFICIAL_SETS  # noqa: E402
from mm_gmpo.data.rows import official_example  # noqa: E402
from mm_gmpo.errors import UserError  # noqa: E402

SET_NAMES = list(OFFICIAL_SETS.values())  # aime, amc, math, minerva, olympiad_bench
EXPECTED_ROWS = {"aime": 30, "amc": 83, "math": 500, "minerva": 272, "olympiad_bench": 675}


def suite_rows(src: Path) -> dict[str, list[dict]]:
    """{set: rows with ``id`` first} from the ``save_to_disk`` folder ``src``; each row checked."""
    import datasets

    if not (src / "dataset_dict.json").is_file():
        raise UserError(f"--src {src}: not a saved DatasetDict (no dataset_dict.json)")
    suite = datasets.load_from_disk(str(src))
    missing = [name for name in SET_NAMES if name not in suite]
    if missing:
        raise UserError(f"--src {src}: no split {', '.join(missing)} (splits: {', '.join(suite)})")
    out = {}
    for name in SET_NAMES:
        rows = [{"id": f"{name}/{index}", **dict(row)} for index, row in enumerate(suite[name])]
        for index, row in enumerate(rows):
            official_example(row, dataset=f"official:{name}", index=index, where=f"{src / name}")
        out[name] = rows
    return out


def write_suite(rows: dict[str, list[dict]], out: Path) -> dict[str, Path]:
    """One ``<set>.jsonl`` per set under ``out`` (JSON with ASCII escapes, one row a line)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, set_rows in rows.items():
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in set_rows), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, required=True, help="understand-r1-zero's datasets/evaluation_suite")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "sample" / "math" / "official_eval")
    args = parser.parse_args(argv)
    try:
        rows = suite_rows(args.src)
    except UserError as exc:
        print(f"prepare_paper_eval: error: {exc}", file=sys.stderr)
        return 2
    for name, path in write_suite(rows, args.out).items():
        note = "" if len(rows[name]) == EXPECTED_ROWS[name] else f" (the official suite has {EXPECTED_ROWS[name]})"
        print(f"{name}: {len(rows[name])} rows{note} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
