"""Issue 8, "Does it learn?": GMPO, GRPO and a blank-image GMPO control on the toy task, over several seeds.

    python scripts/does_it_learn.py                      # 3 seeds x 3 arms, two runs at a time, then the summary
    python scripts/does_it_learn.py --summary-only       # re-read finished runs, rewrite the table and figures

Per seed, ``mm-gmpo sft`` runs the configs' warm start once (and once more on blank images for the control), then
every arm is ``mm-gmpo train`` on configs/toy_gmpo.yaml or configs/toy_grpo.yaml (nothing else differs) from that
model with ``warmstart.steps=0``; this is the same as letting each run warm-start itself, minus the repeated work.
Jobs use one torch thread, so two share 2 cores. Each run writes ``val/accuracy`` on 300 held-out prompts at step 0
and at the end, and is summarised as:

- warm start: ``val/accuracy`` at step 0 (after the warm start, before any RL);
- final: ``val/accuracy`` at the last step;
- gain: final minus warm start, per seed (the paired difference removes the warm start's seed-to-seed spread).

Prints a Markdown table and one JSON line last; ``--out`` gets ``results.json``, ``table.md`` and the figures made
by ``mm-gmpo plot`` (seed 1 of every arm overlaid, and all GMPO/GRPO seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = {  # name -> (config, extra overrides, warm start)
    "gmpo": ("configs/toy_gmpo.yaml", [], "warmstart"),
    "grpo": ("configs/toy_grpo.yaml", [], "warmstart"),
    "blank": ("configs/toy_gmpo.yaml", ["data.blank_images=true"], "warmstart_blank"),
}
BASE_MODEL = "runs/models/toy-count_points"  # model.path of the toy configs


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm}-seed{seed}"


def jobs(root: Path, seeds: list[int], arms: list[str], overrides: list[str]) -> tuple[list, list]:
    """(warm-start jobs, RL jobs): each a (name, output folder, command)."""
    cli = [sys.executable, "-m", "mm_gmpo.cli"]
    warm, rl = {}, []
    for seed in seeds:
        for arm in arms:
            config, extra, start = ARMS[arm]
            start_dir = run_dir(root, start, seed)
            sft = [*cli, "sft", "configs/toy_gmpo.yaml", f"trainer.seed={seed}", "trainer.num_threads=1"]
            warm[start_dir] = (f"{start} seed {seed}", start_dir, [*sft, *extra, *overrides, "--out", str(start_dir)])
            out = run_dir(root, arm, seed)
            train = [*cli, "train", config, f"trainer.seed={seed}", f"trainer.output_dir={out}"]
            settings = [f"model.path={start_dir}", "warmstart.steps=0", "trainer.num_threads=1"]
            rl.append((f"{arm} seed {seed}", out, [*train, *settings, *extra, *overrides]))
    return list(warm.values()), rl


def run_queue(queue: list, parallel: int) -> None:
    """Run the jobs, ``parallel`` at a time; a job whose folder has ``final.json`` is done already."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    queue = [job for job in queue if not (job[1] / "final.json").exists()]
    running: list = []
    while queue or running:
        while queue and len(running) < parallel:
            name, out, cmd = queue.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            print(f"start {name}", flush=True)
            log = (out / "job.log").open("w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, out, proc, time.time()))
        time.sleep(2)
        for item in list(running):
            name, out, proc, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            took = time.time() - start
            print(f"done {name}: exit {proc.returncode} in {took:.0f} s", flush=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed: see {out / 'job.log'}")
            (out / "final.json").write_text(json.dumps({"seconds": took}) + "\n")


def run_all(root: Path, seeds: list[int], arms: list[str], parallel: int, overrides: list[str]) -> None:
    if not Path(BASE_MODEL).exists():  # built once here, not by two parallel jobs at the same time
        subprocess.run([sys.executable, "scripts/make_toy_model.py", "--task", "count_points", "--out", BASE_MODEL])
    warm, rl = jobs(root, seeds, arms, overrides)
    run_queue(warm, parallel)
    run_queue(rl, parallel)


def accuracies(path: Path) -> dict:
    """First and last ``val/accuracy`` of a run, with their steps, and the run's wall time when known."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [(r["step"], r["val/accuracy"]) for r in rows if "val/accuracy" in r]
    if len(val) < 2:
        raise SystemExit(f"{path}: fewer than two val/accuracy rows (did the run finish?)")
    final = path / "final.json"
    seconds = json.loads(final.read_text())["seconds"] if final.exists() else None
    return {"start": val[0][1], "end": val[-1][1], "end_step": val[-1][0], "seconds": seconds, "curve": val}


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(root: Path, seeds: list[int], arms: list[str]) -> dict:
    per_run = {arm: {seed: accuracies(run_dir(root, arm, seed)) for seed in seeds} for arm in arms}
    result = {"seeds": seeds, "runs": {f"{a}-seed{s}": v for a in arms for s, v in per_run[a].items()}}
    warm = [run_dir(root, "warmstart", s) / "final.json" for s in seeds]
    if all(p.exists() for p in warm):
        result["warmstart_minutes"] = statistics.fmean(json.loads(p.read_text())["seconds"] for p in warm) / 60
    for arm in arms:
        starts = [per_run[arm][s]["start"] for s in seeds]
        ends = [per_run[arm][s]["end"] for s in seeds]
        gains = [e - s for s, e in zip(starts, ends, strict=True)]
        times = [per_run[arm][s]["seconds"] for s in seeds if per_run[arm][s]["seconds"] is not None]
        result[arm] = {
            "start_mean_sd": mean_sd(starts),
            "end_mean_sd": mean_sd(ends),
            "gain_mean_sd": mean_sd(gains),
            "gain_min": min(gains),
            "minutes_mean": statistics.fmean(times) / 60 if times else None,
        }
    return result


def table(result: dict, arms: list[str]) -> str:
    names = {"gmpo": "GMPO", "grpo": "GRPO", "blank": "GMPO, blank images (control)"}
    seeds = len(result["seeds"])
    lines = [
        f"| run ({seeds} seeds) | val/accuracy after warm start | val/accuracy at the end | gain (paired) | RL minutes/run |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        r = result[arm]
        (s, s_sd), (e, e_sd), (g, g_sd) = r["start_mean_sd"], r["end_mean_sd"], r["gain_mean_sd"]
        minutes = f"{r['minutes_mean']:.1f}" if r["minutes_mean"] else "-"
        lines.append(
            f"| {names[arm]} | {s:.3f} ± {s_sd:.3f} | {e:.3f} ± {e_sd:.3f} | {g:+.3f} ± {g_sd:.3f} | {minutes} |"
        )
    warm = result.get("warmstart_minutes")
    note = f" The warm start (`mm-gmpo sft`) took {warm:.1f} minutes per seed." if warm else ""
    return "\n".join(lines) + f"\n\nmean ± standard deviation over seeds; chance is 1/6 = 0.167.{note}\n"


def figures(root: Path, out: Path, seeds: list[int], arms: list[str]) -> None:
    plot = [sys.executable, "-m", "mm_gmpo.cli", "plot", "--smooth", "10"]
    first = [str(run_dir(root, arm, seeds[0])) for arm in arms]
    subprocess.run([*plot, *first, "--out", str(out / "arms"), "--labels", *arms], check=True)
    both = [a for a in ("gmpo", "grpo") if a in arms]
    dirs = [str(run_dir(root, a, s)) for a in both for s in seeds]
    labels = [f"{a}-seed{s}" for a in both for s in seeds]
    subprocess.run([*plot, *dirs, "--out", str(out / "seeds"), "--labels", *labels], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/toy", help="where the runs go")
    parser.add_argument("--out", default="docs/does_it_learn", help="results.json, table.md and figures")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--summary-only", action="store_true", help="only summarise finished runs")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    if not args.summary_only:
        run_all(root, args.seeds, args.arms, args.parallel, args.overrides)
    result = summarise(root, args.seeds, args.arms)
    out.mkdir(parents=True, exist_ok=True)
    text = table(result, args.arms)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    figures(root, out, args.seeds, args.arms)
    print(text)
    print(json.dumps({arm: result[arm] for arm in args.arms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
