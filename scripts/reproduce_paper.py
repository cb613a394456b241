"""Evaluate trained models with the paper's protocol and print our table beside the paper's.

    python scripts/reproduce_paper.py runs/math_qwen2_5_math_7b_gmpo runs/math_qwen2_5_math_7b_grpo \\
        --backend vllm --output runs/reproduce

Each MODEL is a run folder (its newest complete checkpoint is evaluated), a checkpoint or model folder, or a hub
id. Each is evaluated with ``mm-gmpo eval --data paper-math`` and the official protocol (docs/reproduce.md:
Qwen-Math prompt, greedy, one sample, 3000 new tokens, 4096 tokens of context, the official grader) on the
official suite (AIME24 30, AMC 83, MATH500 500, Minerva 272, OlympiadBench 675). The table has one row per model,
the problems each column counted, then the paper's rows (docs/paper_results.md). ``--geometry3k MODEL`` adds the
paper's Geometry3K protocol for a vision-language model (EasyR1's prompt and grader, 16 samples at temperature 0.5,
the mean accuracy; the test split from data/sample holds 100 of the 601 problems: use --source hub or --local-dir).

``--limit N`` (first N problems of each set) and ``--max-new-tokens`` are for smoke tests: the numbers are then
not comparable with the paper's, and the table says so. Writes ``table.md`` and ``reproduce.json`` (and each
evaluation's folder) under ``--output``. Exit 2 on a bad argument or bad data (one line), else 0.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mm_gmpo.data.loaders import SUITES  # noqa: E402
from mm_gmpo.errors import UserError  # noqa: E402

PAPER_RESULTS = REPO / "docs" / "paper_results.md"
COLUMNS = {  # paper column -> data spec, in the paper's order
    "AIME24": "official:aime",
    "AMC": "official:amc",
    "MATH500": "official:math",
    "Minerva": "official:minerva",
    "OlympiadBench": "official:olympiad_bench",
}
OFFICIAL_PROBLEMS = {"AIME24": 30, "AMC": 83, "MATH500": 500, "Minerva": 272, "OlympiadBench": 675}
# the paper's Geometry3K protocol on EasyR1's example: its prompt (geo3k_easyr1), 16 samples at temperature 0.5,
# responses up to 2048 tokens, EasyR1's accuracy (mathruler's grader: --grader easyr1); the mean accuracy is reported
GEOMETRY3K = {
    "spec": "geometry3k:test",
    "template": "geo3k_easyr1",
    "n": 16,
    "temperature": 0.5,
    "max_new_tokens": 2048,
    "grader": "easyr1",
    "problems": 601,
}
assert list(COLUMNS.values()) == SUITES["paper-math"], "the table's columns are the sets of paper-math"


@dataclass
class Row:
    """One line of the table: a label and a score (percent) per column; None where not evaluated."""

    label: str
    scores: dict[str, float | None]
    avg: float | None


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """{header cells joined by "|": rows of cells} of every markdown table in ``text``."""
    tables: dict[str, list[list[str]]] = {}
    header = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = "|".join(cells)
            tables[header] = []
        elif not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            tables[header].append(cells)
    return tables


def paper_rows(path: Path = PAPER_RESULTS) -> tuple[list[Row], list[Row]]:
    """(text-math rows, Geometry3K rows) of the paper, read from ``path``."""
    tables = markdown_tables(path.read_text(encoding="utf-8"))
    math_header = "|".join(["model", *COLUMNS, "avg"])
    geo_header = "model|Geometry3K"
    for header in (math_header, geo_header):
        if header not in tables:
            raise UserError(f"{path}: no table with the header | {header.replace('|', ' | ')} |")
    math = [
        Row(cells[0], dict(zip(COLUMNS, map(float, cells[1:6]), strict=True)), float(cells[6]))
        for cells in tables[math_header]
    ]
    geo = [Row(cells[0], {"Geometry3K": float(cells[1])}, None) for cells in tables[geo_header]]
    return math, geo


def resolve_model(model: str) -> tuple[str, str]:
    """(path or hub id to evaluate, label): a run folder's newest complete checkpoint, a checkpoint or model folder
    as it is, a hub id as it is."""
    from mm_gmpo.trainer.checkpoint import checkpoint_dir, latest_checkpoint

    path = Path(model).expanduser()
    if not path.exists():
        if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
            raise UserError(f"{model}: no such run, checkpoint or model folder")
        return model, model  # a hub id (org/name)
    if (path / "config.json").is_file():
        label = f"{path.parent.parent.name}/{path.name}" if path.parent.name == "checkpoints" else path.name
        return str(path), label
    if checkpoint_dir(path).is_dir():
        try:
            newest = latest_checkpoint(path)
        except UserError as exc:
            raise UserError(f"{model}: {exc}") from exc
        return str(newest), f"{path.name}/{newest.name}"
    raise UserError(f"{model}: neither a model folder (config.json) nor a run folder (checkpoints/)")


def eval_args(args: argparse.Namespace, model: str, out: Path, data: list[str], **protocol) -> list[str]:
    """The ``mm-gmpo eval`` command line of one evaluation."""
    argv = ["eval", "--model", model, "--data", *data, "--output", str(out), "--backend", args.backend]
    argv += ["--source", args.source, "--batch-size", str(args.batch_size), "--dtype", args.dtype]
    for flag, value in (("--local-dir", args.local_dir), ("--limit", args.limit)):
        if value:
            argv += [flag, str(value)]
    for key, value in protocol.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_eval(argv: list[str]) -> dict:
    """Run ``mm-gmpo eval`` in this process; its summary.json (exit 2 with its one-line error when it fails)."""
    from mm_gmpo.cli import main as mm_gmpo

    code = mm_gmpo(argv)
    if code != 0:
        raise SystemExit(code)
    return json.loads((Path(argv[argv.index("--output") + 1]) / "summary.json").read_text())


def math_row(label: str, summary: dict) -> tuple[Row, dict[str, int]]:
    """Our row (pass@1 in percent; avg = mean of the five) and the problems each column counted."""
    scores = {column: 100 * summary[spec]["pass@1"] for column, spec in COLUMNS.items()}
    problems = {column: int(summary[spec]["problems"]) for column, spec in COLUMNS.items()}
    return Row(label, scores, sum(scores.values()) / len(scores)), problems


def format_table(columns: list[str], ours: list[Row], problems: list[dict[str, int]], paper: list[Row]) -> str:
    """Markdown: our rows, each followed by its problem counts, then the paper's rows."""
    has_avg = any(row.avg is not None for row in [*ours, *paper])
    head = ["model", *columns, *(["avg"] if has_avg else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(row: Row) -> list[str]:
        values = [f"{row.scores[c]:.1f}" if row.scores.get(c) is not None else "" for c in columns]
        return [row.label, *values, *([f"{row.avg:.1f}" if row.avg is not None else ""] if has_avg else [])]

    for row, counts in zip(ours, problems, strict=True):
        lines.append("| " + " | ".join(cells(row)) + " |")
        count_cells = ["problems", *(str(counts[c]) for c in columns), *([""] if has_avg else [])]
        lines.append("| " + " | ".join(count_cells) + " |")
    for row in paper:
        lines.append("| " + " | ".join(cells(Row(f"paper: {row.label}", row.scores, row.avg))) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", metavar="RUN_OR_CHECKPOINT", help="text-math models to evaluate")
    parser.add_argument("--label", nargs="+", default=[], help="a row name per model (default: from the path)")
    parser.add_argument(
        "--geometry3k", nargs="+", default=[], metavar="RUN_OR_CHECKPOINT", help="vision-language models: Geometry3K"
    )
    parser.add_argument("--output", default="runs/reproduce", help="folder for the evaluations and the table")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--source", choices=["auto", "local", "hub"], default="auto")
    parser.add_argument("--local-dir", default="", help="data root (default: data/sample, which ships the suite)")
    parser.add_argument("--limit", type=int, default=0, help="smoke tests: first N problems of each set (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="smoke tests: override the protocol's")
    parser.add_argument("--paper", type=Path, default=PAPER_RESULTS, help="the paper's numbers (markdown tables)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return reproduce(args)
    except UserError as exc:
        print(f"reproduce_paper: error: {exc}", file=sys.stderr)
        return 2


def reproduce(args: argparse.Namespace) -> int:
    if not args.models and not args.geometry3k:
        raise UserError("nothing to evaluate: give RUN_OR_CHECKPOINT and/or --geometry3k RUN_OR_CHECKPOINT")
    if args.label and len(args.label) != len(args.models):
        raise UserError(f"--label: {len(args.label)} names for {len(args.models)} models")
    paper_math, paper_geo = paper_rows(args.paper)
    resolved = [resolve_model(m) for m in args.models]
    resolved_geo = [resolve_model(m) for m in args.geometry3k]
    labels = args.label or [label for _, label in resolved]
    out = Path(args.output)
    ours, problems, record = [], [], {"models": [], "geometry3k": []}
    for k, ((model, _), label) in enumerate(zip(resolved, labels, strict=True)):
        folder = out / f"math-{k}"
        summary = run_eval(eval_args(args, model, folder, ["paper-math"], max_new_tokens=args.max_new_tokens))
        row, counts = math_row(label, summary)
        ours.append(row)
        problems.append(counts)
        record["models"].append({"label": label, "model": model, "eval": str(folder), **row.scores, "avg": row.avg})
    text = []
    if ours:
        text.append(format_table(list(COLUMNS), ours, problems, paper_math))
        short = [c for c in COLUMNS if any(p[c] != OFFICIAL_PROBLEMS[c] for p in problems)]
        if short or args.max_new_tokens is not None:
            text.append(
                "not the paper's protocol: "
                + (f"fewer problems than the official suite in {', '.join(short)}" if short else "")
                + ("; " if short and args.max_new_tokens is not None else "")
                + (f"--max-new-tokens {args.max_new_tokens}" if args.max_new_tokens is not None else "")
            )
    geo_rows, geo_counts = [], []
    for k, (model, label) in enumerate(resolved_geo):
        folder = out / f"geometry3k-{k}"
        protocol = {key: GEOMETRY3K[key] for key in ("template", "n", "temperature", "max_new_tokens", "grader")}
        if args.max_new_tokens is not None:
            protocol["max_new_tokens"] = args.max_new_tokens
        summary = run_eval(eval_args(args, model, folder, [GEOMETRY3K["spec"]], **protocol))
        result = summary[GEOMETRY3K["spec"]]
        geo_rows.append(Row(label, {"Geometry3K": 100 * result[f"avg@{GEOMETRY3K['n']}"]}, None))
        geo_counts.append({"Geometry3K": int(result["problems"])})
        record["geometry3k"].append({"label": label, "model": model, "eval": str(folder), **geo_rows[-1].scores})
    if geo_rows:
        text.append(format_table(["Geometry3K"], geo_rows, geo_counts, paper_geo))
        if any(c["Geometry3K"] != GEOMETRY3K["problems"] for c in geo_counts):
            text.append(f"not the paper's protocol: fewer than the {GEOMETRY3K['problems']} Geometry3K test problems")
    table = "\n\n".join(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "reproduce.json").write_text(json.dumps(record, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
