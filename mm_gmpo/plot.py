"""`mm-gmpo plot RUN_DIR [RUN_DIR ...]`: figures from metrics.jsonl, runs overlaid (e.g. GMPO beside GRPO)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mm_gmpo.errors import UserError
from mm_gmpo.paths import writable_dir

# (file stem, title, metric key or (low key, high key) for a band)
PANELS = [
    ("reward", "reward (mean)", "reward/mean"),
    ("accuracy", "validation accuracy", "val/accuracy"),
    ("entropy", "policy entropy (nats/token)", "actor/entropy"),
    ("response_length", "response length (tokens)", "response_length/mean"),
    ("log_ratio_range", "log importance ratio: min/max band", ("actor/log_ratio_min", "actor/log_ratio_max")),
    ("clip_frac", "clipped token fraction", "actor/clip_frac"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    parser.add_argument("--out", default="", help="output folder (default: the first run directory)")
    parser.add_argument("--labels", nargs="*", default=None, help="legend labels, one per run (default: folder names)")
    parser.add_argument("--smooth", type=int, default=1, help="trailing moving average over N logged points (1: raw)")


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl")
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}:{number}: not UTF-8 text (a damaged metrics file)") from exc
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc})") from exc
            step = row.get("step") if isinstance(row, dict) else None
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                raise UserError(f"{path}:{number}: not a metrics row (a JSON object with a numeric step)")
            rows.append(row)
    return rows


def series(rows: list[dict], key: str, *also: str) -> tuple[list[int], list[float], ...]:
    """Steps and values of ``key`` (and of each of ``also``) over the rows that log them all as numbers."""
    keys = (key, *also)
    points = [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in keys)]
    return [r["step"] for r in points], *([float(r[k]) for r in points] for k in keys)


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average: point i is the mean of the last ``window`` values up to i (fewer at the start)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.smooth < 1:
        raise UserError(f"--smooth {args.smooth}: must be at least 1")
    runs = [Path(r) for r in args.runs]
    labels = args.labels or [r.name for r in runs]
    if len(labels) != len(runs):
        raise UserError(f"--labels has {len(labels)} names for {len(runs)} runs")
    data = {label: read_metrics(run) for label, run in zip(labels, runs, strict=True)}
    out = writable_dir(args.out or runs[0], "--out" if args.out else "the run folder")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (stem, title, key) in zip(axes.flat, PANELS, strict=True):
        single, single_ax = plt.subplots(figsize=(6, 4))
        for target in (ax, single_ax):
            for label, rows in data.items():
                if isinstance(key, tuple):
                    steps, low, high = series(rows, key[0], key[1])
                    low, high = smooth(low, args.smooth), smooth(high, args.smooth)
                    if steps:
                        target.fill_between(steps, low, high, alpha=0.3, label=label)
                else:
                    steps, values = series(rows, key)
                    if key != "val/accuracy":  # evaluations are few and each one is already a mean
                        values = smooth(values, args.smooth)
                    if steps:
                        target.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
            target.set_title(title)
            target.set_xlabel("optimizer step")
            target.grid(alpha=0.3)
            if target.has_data():
                target.legend()
        single.tight_layout()
        single.savefig(out / f"{stem}.png", dpi=100)
        plt.close(single)
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=100)
    plt.close(fig)
    print(f"figures written to {out}: summary.png and {', '.join(p[0] + '.png' for p in PANELS)}")
    return 0
