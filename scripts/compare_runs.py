"""Are two training runs the same? Compares their ``metrics.jsonl`` row by row (every logged number but the
timings: ``perf/*`` and ``*tokens_per_s``) and the weight files (``*.safetensors``, shards included) of their newest checkpoints, byte for byte.

    python scripts/compare_runs.py runs/toy_text/gmpo-seed6 /tmp/fresh/gmpo-seed6

Prints what it compared and what differed; exits 1 when anything did.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
from pathlib import Path


def timing(key: str) -> bool:
    return key.startswith("perf/") or key.endswith("tokens_per_s")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def compare_metrics(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """(rows, numbers compared, what differed) of two runs' metrics, row by row in order."""
    rows_a, rows_b = _rows(a), _rows(b)
    differ = [f"{len(rows_a)} rows against {len(rows_b)}"] if len(rows_a) != len(rows_b) else []
    compared = 0
    for row_a, row_b in zip(rows_a, rows_b):  # noqa: B905 (unequal lengths are reported above)
        for key in sorted(set(row_a) | set(row_b)):
            if timing(key):
                continue
            compared += 1
            if row_a.get(key) != row_b.get(key):
                differ.append(f"step {row_a.get('step')}: {key} {row_a.get(key)!r} against {row_b.get(key)!r}")
    return len(rows_a), compared, differ


def compare_weights(a: Path, b: Path) -> tuple[Path, Path, bool]:
    """(newest checkpoint of a, of b, whether they are at the same step with byte-identical weight files, shards
    included)."""
    from mm_gmpo.trainer.checkpoint import latest_checkpoint

    first, second = latest_checkpoint(a), latest_checkpoint(b)
    files = sorted(f.name for f in first.glob("*.safetensors"))
    same = first.name == second.name and files == sorted(f.name for f in second.glob("*.safetensors"))
    return first, second, same and all(filecmp.cmp(first / f, second / f, shallow=False) for f in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    rows, compared, differ = compare_metrics(args.a, args.b)
    print(f"metrics: {rows} rows, {compared} logged values compared (timings left out), {len(differ)} differ")
    for line in differ[:20]:
        print(f"  {line}")
    first, second, same = compare_weights(args.a, args.b)
    print(f"weights of {first} and {second}: {'identical bytes' if same else 'DIFFERENT'}")
    return 0 if same and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
