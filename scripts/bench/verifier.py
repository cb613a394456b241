"""Benchmark: this verifier vs math-verify and mathruler on the same labelled rows, one process, one run.

    python scripts/bench/verifier.py [--verifier-dir DIR] [--input FILE.jsonl ...] [--limit N] [--misses]

Inputs (default): ``public_cases.jsonl`` and ``bench_public.jsonl`` of ``--verifier-dir`` (other libraries' test
cases, when the folder is given), and ``scripts/bench/verifier_cases.jsonl``, our own: the categories of the
grading policy (false acceptances, degrees, choice letters, sets, equations, sentences in boxes, unicode) and answers that are expensive
to evaluate (ratios of large factorials and gammas, sums with huge bounds, huge powers, deep nesting) and
trigonometric identities, labelled with the
mathematical truth (where our policy refuses to evaluate, such as a sum, that is counted as our miss).
Rows: ``pred``/``gold`` with a boolean ``equivalent`` or ``label``, optional ``choices`` (ours only) and
``category``. For each file and verifier: accuracy, false-positive rate (wrong "correct" among rows labelled not
equivalent), rows/s (median of ``--rounds`` timed passes, interleaved between the verifiers so that a change in
the machine's load hits both, each after a full garbage collection so that none pays for another's garbage); for ours also the slowest single rows (worst over the rounds), in wall time and in
this process's CPU time (other processes may share the cores), and per-category accuracy; then the throughput ratio ours /
math-verify (median of the paired rounds, wall and CPU) and one JSON line last. Ours also reports each row's first
grading (the untimed pass, after ``warm_up`` as a verifier worker runs it), in CPU time: a new answer shape's first
parse builds the LaTeX parser's prediction cache, which the timed passes no longer pay. ``--misses`` also lists the rows
this verifier gets wrong.

Fairness: every verifier first grades all rows once untimed (all share the ANTLR LaTeX parser, whose prediction
cache warms up on first use, so the first one timed would otherwise pay for everyone), then our result caches are
cleared and each verifier is timed on one pass. math-verify: ``verify(parse(gold), parse(pred))`` with the gold
wrapped in ``$...$`` when it has no math delimiters (its documented use). mathruler: ``grade_answer`` on the boxed
content when there is a box, else on the whole prediction (the Geometry3K recipe boxes first; bare answers are
passed whole so that mathruler is not charged for the missing box on rows that are bare answers).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PUBLIC_FILES = ("public_cases.jsonl", "bench_public.jsonl")  # under --verifier-dir
OWN_CASES = Path(__file__).with_name("verifier_cases.jsonl")
SLOW_MS = 50.0  # the per-row bound our in-process grading is held to


def load_rows(path: Path, limit: int) -> list[tuple]:
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
                    row.get("choices"),
                    row.get("category", ""),
                )
            )
    return rows[:limit] if limit else rows


def ours():
    from mm_gmpo.reward import grade
    from mm_gmpo.reward.grading import clear_caches
    from mm_gmpo.reward.symbolic import warm_up

    warm_up()  # as every verifier worker does at start (before the clock of its first item), and as it then does:
    gc.collect()
    gc.freeze()  # start-up objects are left out of later full collections

    return lambda pred, gold, choices=None: grade(pred, gold, choices=choices).correct, clear_caches


def math_verify_peer():
    from math_verify import parse, verify

    def run(pred: str, gold: str, choices=None) -> bool:
        wrapped = gold if any(m in gold for m in ("$", "\\(", "\\[", "\\boxed")) else f"${gold}$"
        return bool(verify(parse(wrapped), parse(pred)))

    return run, lambda: None


def mathruler_peer():
    from mathruler.grader import extract_boxed_content, grade_answer

    def run(pred: str, gold: str, choices=None) -> bool:
        answer = extract_boxed_content(pred) if "\\boxed" in pred else pred
        return bool(grade_answer(answer, gold))

    return run, lambda: None


PEERS = {"ours": ours, "math-verify": math_verify_peer, "mathruler": mathruler_peer}


def score(fn, rows, *, with_choices: bool = False) -> tuple[list[bool], float, list[tuple[float, float]]]:
    """Verdicts, total wall seconds, and (wall, cpu) seconds of each row."""
    verdicts, per_row = [], []
    start = time.perf_counter()
    for pred, gold, _, choices, _ in rows:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            verdicts.append(bool(fn(pred, gold, choices) if with_choices else fn(pred, gold)))
        except Exception:  # noqa: BLE001 (a peer's crash counts as "not equal", as its callers would treat it)
            verdicts.append(False)
        per_row.append((time.perf_counter() - wall, time.process_time() - cpu))
    return verdicts, time.perf_counter() - start, per_row


def bench_file(path: Path, verifiers: dict, args) -> dict:
    """Accuracy and speed of each verifier on one file: ``args.rounds`` timed passes per verifier, interleaved
    (ours, math-verify, ..., then again), so that a change in the machine's load hits both alike."""
    rows = load_rows(path, args.limit)
    negatives = sum(not label for _, _, label, _, _ in rows)
    labels = [label for _, _, label, _, _ in rows]
    print(f"{len(rows)} rows ({negatives} labelled not equivalent) from {path}")
    first = None
    for name, (fn, _) in verifiers.items():  # warm-up pass (untimed), see the module docstring
        _, _, per_row = score(fn, rows, with_choices=name == "ours")
        if name == "ours":
            first = per_row  # each row's first grading in this process (the parser warmed by warm_up only)
    passes: dict[str, list] = {name: [] for name in verifiers}  # per round: (verdicts, wall s, cpu s, per-row)
    for _ in range(args.rounds):
        for name, (fn, clear) in verifiers.items():
            clear()
            gc.collect()  # a full collection of the other verifier's garbage would otherwise land in this pass
            cpu = time.process_time()
            verdicts, seconds, per_row = score(fn, rows, with_choices=name == "ours")
            passes[name].append((verdicts, seconds, time.process_time() - cpu, per_row))
    results = {}
    for name, runs in passes.items():
        verdicts = runs[0][0]
        correct = sum(v == label for v, label in zip(verdicts, labels, strict=True))
        false_pos = sum(v and not label for v, label in zip(verdicts, labels, strict=True))
        results[name] = {
            "accuracy": correct / len(rows),
            "false_positive_rate": false_pos / max(negatives, 1),
            "false_positives": false_pos,
            "rows_per_s": len(rows) / statistics.median(run[1] for run in runs),
            "rows_per_cpu_s": len(rows) / statistics.median(run[2] for run in runs),
            "max_row_ms": 1000 * max(wall for run in runs for wall, _ in run[3]),
        }
        r = results[name]
        print(
            f"{name:12s} accuracy {r['accuracy']:.3f}  false positives {false_pos}/{negatives} "
            f"({r['false_positive_rate']:.3f})  {r['rows_per_s']:.0f} rows/s ({r['rows_per_cpu_s']:.0f} per CPU s)  "
            f"slowest row {r['max_row_ms']:.0f} ms"
        )
    ours_verdicts = passes["ours"][0][0] if "ours" in passes else []
    if "ours" in passes:
        per_row = zip(*(run[3] for run in passes["ours"]), strict=True)  # each row's (wall, cpu) in every round
        worst = [(max(wall for wall, _ in row), max(cpu for _, cpu in row)) for row in per_row]
        _print_slowest(rows, worst, results["ours"])
        _print_first_pass(rows, first, results["ours"])
        _print_categories(rows, ours_verdicts)
    if args.misses:
        for line, (verdict, row) in enumerate(zip(ours_verdicts, rows, strict=False), start=1):
            if verdict != row[2]:
                kind = "false positive" if verdict else "false negative"
                print(f"{kind} line {line}: pred {row[0][-160:]!r} gold {row[1][-160:]!r}")
    summary = {"input": str(path), "rows": len(rows), "results": results}
    if "ours" in passes and "math-verify" in passes:
        paired = zip(passes["ours"], passes["math-verify"], strict=True)
        wall, cpu = zip(*((peer[1] / own[1], peer[2] / own[2]) for own, peer in paired), strict=True)
        summary["throughput_ratio_ours_over_math_verify"] = statistics.median(wall)
        summary["cpu_ratio_ours_over_math_verify"] = statistics.median(cpu)
        print(
            f"throughput ours / math-verify: {statistics.median(wall):.1f}x wall, {statistics.median(cpu):.1f}x CPU "
            f"(median of {args.rounds} paired rounds; wall per round: {', '.join(f'{w:.1f}' for w in wall)})"
        )
    return summary


def _print_slowest(rows, times, result: dict) -> None:
    order = sorted(range(len(rows)), key=lambda k: times[k][0], reverse=True)
    result["max_row_cpu_ms"] = 1000 * max(cpu for _, cpu in times)
    cpu = sorted(1000 * c for _, c in times)
    result["p50_row_cpu_ms"], result["p99_row_cpu_ms"] = statistics.median(cpu), cpu[int(0.99 * (len(cpu) - 1))]
    result["rows_over_50ms_wall"] = sum(wall * 1000 > SLOW_MS for wall, _ in times)
    result["rows_over_50ms_cpu"] = sum(cpu * 1000 > SLOW_MS for _, cpu in times)
    print(
        f"ours per row (worst of the rounds): p50 {result['p50_row_cpu_ms']:.2f} ms CPU, p99 "
        f"{result['p99_row_cpu_ms']:.1f}, max {1000 * times[order[0]][0]:.1f} ms wall, {result['max_row_cpu_ms']:.1f} ms CPU; "
        f"over {SLOW_MS:.0f} ms: {result['rows_over_50ms_wall']} wall, {result['rows_over_50ms_cpu']} CPU"
    )
    for k in order[:3]:
        print(
            f"  {1000 * times[k][0]:6.1f} ms wall {1000 * times[k][1]:6.1f} ms CPU  {rows[k][0][:60]!r} vs {rows[k][1][:40]!r}"
        )


def _print_first_pass(rows, times, result: dict) -> None:
    """Latency of each row's first grading (what a reward worker sees for a new answer shape: the parser's
    prediction cache holds only what ``warm_up`` and the rows before it built), in CPU time."""
    cpu = sorted(1000 * c for _, c in times)
    result["first_pass_p99_cpu_ms"] = cpu[int(0.99 * (len(cpu) - 1))]
    result["first_pass_max_cpu_ms"] = cpu[-1]
    result["first_pass_over_50ms_cpu"] = sum(c > SLOW_MS for c in cpu)
    k = max(range(len(rows)), key=lambda i: times[i][1])
    print(
        f"ours first grading of each row (after warm_up): median {statistics.median(cpu):.2f} ms CPU, p99 "
        f"{result['first_pass_p99_cpu_ms']:.1f}, max {cpu[-1]:.1f} ({rows[k][0][:40]!r}), over {SLOW_MS:.0f} ms: "
        f"{result['first_pass_over_50ms_cpu']}"
    )


def _print_categories(rows, verdicts) -> None:
    categories: dict[str, list[int]] = {}
    for (_, _, label, _, category), verdict in zip(rows, verdicts, strict=True):
        if category:
            counts = categories.setdefault(category, [0, 0, 0])  # right, rows, false positives
            counts[0] += verdict == label
            counts[1] += 1
            counts[2] += verdict and not label
    if categories:
        print("ours by category: " + ", ".join(f"{c} {r}/{n} (fp {fp})" for c, (r, n, fp) in categories.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier-dir", type=Path, help=f"folder of {' and '.join(PUBLIC_FILES)}")
    parser.add_argument("--input", action="append", help="labelled JSONL (pred, gold, equivalent|label); repeatable")
    parser.add_argument("--limit", type=int, default=0, help="first N rows of each file only (0: all)")
    parser.add_argument("--misses", action="store_true", help="list the rows this verifier gets wrong")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per verifier, interleaved (median)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # peers log parse failures per row
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.input:
        paths = [Path(p) for p in args.input]
    else:
        public = [args.verifier_dir / name for name in PUBLIC_FILES] if args.verifier_dir else []
        paths = [*public, OWN_CASES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    verifiers = {}
    for name, factory in PEERS.items():
        try:
            verifiers[name] = factory()
        except ImportError as exc:
            print(f"{name}: missing ({exc}); pip install {'math-verify' if name == 'math-verify' else name}")
    summaries = [bench_file(path, verifiers, args) for path in paths]
    print(json.dumps(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
