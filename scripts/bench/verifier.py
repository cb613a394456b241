"""Benchmark: this verifier vs math-verify and mathruler on the same labelled rows, one process, one run.

    python scripts/bench/verifier.py [--input ../shared/data/verifier/public_cases.jsonl] [--limit N] [--misses]

Rows: ``pred``/``gold`` with a boolean ``equivalent`` (public_cases.jsonl) or ``label`` (bench_public.jsonl).
For each verifier: accuracy, false-positive rate (wrong "correct" among rows labelled not equivalent), rows/s;
then the throughput ratio ours / math-verify and one JSON line last. ``--misses`` also lists the rows this
verifier gets wrong (false positives and false negatives against the labels), before the JSON line.

Fairness: every verifier first grades all rows once untimed (all share the ANTLR LaTeX parser, whose prediction
cache warms up on first use, so the first one timed would otherwise pay for everyone), then our result caches are
cleared and each verifier is timed on one pass. math-verify: ``verify(parse(gold), parse(pred))`` with the gold
wrapped in ``$...$`` when it has no math delimiters (its documented use). mathruler: ``grade_answer`` on the boxed
content when there is a box, else on the whole prediction (the Geometry3K recipe boxes first; bare answers are
passed whole so that mathruler is not charged for the missing box on rows that are bare answers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "verifier" / "public_cases.jsonl"


def load_rows(path: Path, limit: int) -> list[tuple[str, str, bool]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            label = row.get("equivalent", row.get("label"))
            rows.append(
                (
                    "" if row["pred"] is None else str(row["pred"]),
                    "" if row["gold"] is None else str(row["gold"]),
                    bool(label),
                )
            )
    return rows[:limit] if limit else rows


def ours():
    from mm_gmpo.reward import grade
    from mm_gmpo.reward.grading import clear_caches

    return lambda pred, gold: grade(pred, gold).correct, clear_caches


def math_verify_peer():
    from math_verify import parse, verify

    def run(pred: str, gold: str) -> bool:
        wrapped = gold if any(m in gold for m in ("$", "\\(", "\\[", "\\boxed")) else f"${gold}$"
        return bool(verify(parse(wrapped), parse(pred)))

    return run, lambda: None


def mathruler_peer():
    from mathruler.grader import extract_boxed_content, grade_answer

    def run(pred: str, gold: str) -> bool:
        answer = extract_boxed_content(pred) if "\\boxed" in pred else pred
        return bool(grade_answer(answer, gold))

    return run, lambda: None


PEERS = {"ours": ours, "math-verify": math_verify_peer, "mathruler": mathruler_peer}


def score(fn, rows) -> tuple[list[bool], float]:
    verdicts = []
    start = time.perf_counter()
    for pred, gold, _ in rows:
        try:
            verdicts.append(bool(fn(pred, gold)))
        except Exception:  # noqa: BLE001 (a peer's crash counts as "not equal", as its callers would treat it)
            verdicts.append(False)
    return verdicts, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="labelled JSONL (pred, gold, equivalent|label)")
    parser.add_argument("--limit", type=int, default=0, help="first N rows only (0: all)")
    parser.add_argument("--misses", action="store_true", help="list the rows this verifier gets wrong")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # peers log parse failures per row
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = load_rows(Path(args.input), args.limit)
    negatives = sum(not label for _, _, label in rows)
    print(f"{len(rows)} rows ({negatives} labelled not equivalent) from {args.input}")
    verifiers = {}
    for name, factory in PEERS.items():
        try:
            verifiers[name] = factory()
        except ImportError as exc:
            print(f"{name}: missing ({exc}); pip install {'math-verify' if name == 'math-verify' else name}")
    for fn, _ in verifiers.values():  # warm-up pass (untimed), see the module docstring
        score(fn, rows)
    results, ours_verdicts = {}, []
    for name, (fn, clear) in verifiers.items():
        clear()
        verdicts, seconds = score(fn, rows)
        if name == "ours":
            ours_verdicts = verdicts
        correct = sum(v == label for v, (_, _, label) in zip(verdicts, rows, strict=True))
        false_pos = sum(v and not label for v, (_, _, label) in zip(verdicts, rows, strict=True))
        results[name] = {
            "accuracy": correct / len(rows),
            "false_positive_rate": false_pos / max(negatives, 1),
            "false_positives": false_pos,
            "rows_per_s": len(rows) / seconds,
        }
        r = results[name]
        print(
            f"{name:12s} accuracy {r['accuracy']:.3f}  false positives {false_pos}/{negatives} "
            f"({r['false_positive_rate']:.3f})  {r['rows_per_s']:.0f} rows/s"
        )
    if args.misses:
        for line, (verdict, (pred, gold, label)) in enumerate(zip(ours_verdicts, rows, strict=False), start=1):
            if verdict != label:
                kind = "false positive" if verdict else "false negative"
                print(f"{kind} line {line}: pred {pred[-160:]!r} gold {gold[-160:]!r}")
    summary = {"input": str(args.input), "rows": len(rows), "results": results}
    if "ours" in results and "math-verify" in results:
        ratio = results["ours"]["rows_per_s"] / results["math-verify"]["rows_per_s"]
        summary["throughput_ratio_ours_over_math_verify"] = ratio
        print(f"throughput ours / math-verify: {ratio:.1f}x")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
