"""Does it learn? GMPO, GRPO and a blank-image GMPO control on the toy task, over several seeds.

    python scripts/does_it_learn.py                      # 6 seeds x 3 arms, two runs at a time, then the summary
    python scripts/does_it_learn.py --summary-only       # re-read finished runs, rewrite the table and figures
    python scripts/does_it_learn.py --task text          # the text task chain_sum (see below)

Per seed, ``mm-gmpo sft`` runs the configs' warm start once (and once more on blank images for the control), then
every arm is ``mm-gmpo train`` on configs/toy_gmpo.yaml or configs/toy_grpo.yaml (nothing else differs) from that
model with ``warmstart.steps=0``; this is the same as letting each run warm-start itself, minus the repeated work.
Jobs use one torch thread, so two share 2 cores (about 85 minutes for everything). Each run writes ``val/accuracy``
(and ``val/accuracy_greedy``) on 300 held-out prompts at step 0 and at the end, and is summarised as:

- warm start: ``val/accuracy`` at step 0 (after the warm start, before any RL);
- final: ``val/accuracy`` at the last step;
- gain: final minus warm start, per seed (the paired difference removes the warm start's seed-to-seed spread);
- the same three for greedy accuracy, and the log-ratio range and entropy over the run (a second table).

Prints a Markdown table and one JSON line last; ``--out`` gets ``results.json``, ``table.md`` and the figures made
by ``mm-gmpo plot`` (seed 1 of every arm overlaid, and every seed of GMPO, and of GRPO).

``--task text`` runs configs/toy_text_gmpo.yaml and configs/toy_text_grpo.yaml on ``synthetic:chain_sum``
(worked responses of 45..69 tokens; 150 rounds of 16 prompts), the same two in the first recorded setting ``SHORT``
(25 rounds of 8 prompts; arms ``gmpo_short``, ``grpo_short``) and with the stress overrides ``STRESS`` on top of it
(arms ``gmpo_stress``, ``grpo_stress``), into runs/toy_text and docs/does_it_learn/text. One warm start (seed 1) is
shared by every seed and arm there: the seeds vary RL (sampling, batch order), not the starting point, which saves
a warm start per seed (2.4 minutes on an idle core). A main run's first 400 steps took 9.1-10.1 minutes there and
steps 401-600 4.4-5.7, a 25-round run 2.5-2.6, so 6 seeds x 6 arms, two at a time, is about 2 hours on 2 idle cores,
and the evaluations below about 30 minutes more. Runs that log no greedy pass (the
main arms) get greedy accuracy at both ends from ``eval_jobs``; every run gets sampled accuracy at both ends from
``mm-gmpo eval`` with 16 samples per prompt (``Setting.sampled_n``), 4800 samples where validation draws 600.
Its third table adds the held-out and training response lengths and the per-step p99 of |log r|.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Setting:
    """One experiment: its arms, where runs and results go, and how it is summarised."""

    arms: dict  # name -> (config, extra overrides, warm start name)
    root: str  # where the runs go
    out: str  # results.json, table.md and figures
    base_model: str | None  # built once before parallel warm starts; None: the first warm start builds it
    chance: str  # the table's note on chance level
    shared_warm_start: bool = False  # one warm start (seed 1) for every seed, instead of one per seed
    settle: int = 50  # steps left out of the log-ratio extremes (the warm-up of the first rounds)
    sampled_n: int = 0  # samples per held-out prompt in the evaluation of the start and the end (0: none)
    names: dict = field(default_factory=dict)  # arm -> label in the tables


# the text task's first recorded setting, kept as the stress setting's reference (and run by the CI test and the
# quickstart): 25 rounds of 8 prompts, validated after the warm start and at the end, greedy pass included
SHORT = [
    "rollout.prompts_per_round=8", "trainer.max_steps=100", "trainer.val_every=0", "rollout.val_also_greedy=true",
]  # fmt: skip
# the stress setting, for both objectives: from SHORT, three times the learning rate and twice the
# updates per round (mini-batches of 8), over the same 25 rounds
STRESS = [
    *(o for o in SHORT if not o.startswith("trainer.max_steps=")),
    "trainer.lr=3.0e-4", "trainer.updates_per_round=8", "trainer.micro_batch_size=8", "trainer.max_steps=200",
]  # fmt: skip
SETTINGS = {
    "image": Setting(
        arms={
            "gmpo": ("configs/toy_gmpo.yaml", [], "warmstart"),
            "grpo": ("configs/toy_grpo.yaml", [], "warmstart"),
            "blank": ("configs/toy_gmpo.yaml", ["data.blank_images=true"], "warmstart_blank"),
        },
        root="runs/toy",
        out="docs/does_it_learn",
        base_model="runs/models/toy-count_points",  # model.path of the toy configs
        chance="chance is 1/6 = 0.167.",
        names={"gmpo": "GMPO", "grpo": "GRPO", "blank": "GMPO, blank images (control)"},
    ),
    "text": Setting(
        arms={
            "gmpo": ("configs/toy_text_gmpo.yaml", [], "warmstart"),
            "grpo": ("configs/toy_text_grpo.yaml", [], "warmstart"),
            "gmpo_short": ("configs/toy_text_gmpo.yaml", SHORT, "warmstart"),
            "grpo_short": ("configs/toy_text_grpo.yaml", SHORT, "warmstart"),
            "gmpo_stress": ("configs/toy_text_gmpo.yaml", STRESS, "warmstart"),
            "grpo_stress": ("configs/toy_text_grpo.yaml", STRESS, "warmstart"),
        },
        root="runs/toy_text",
        out="docs/does_it_learn/text",
        base_model=None,
        chance="the most frequent answer (9) is right on 44 of the 300 held-out items (0.15).",
        shared_warm_start=True,
        settle=8,
        # in-run validation (2 samples on each of 300 prompts) measured the one shared warm start at 0.620..0.677
        # over 12 runs (sd 0.024, the size of the seed-to-seed spread of the gains): 4800 samples at both ends
        sampled_n=16,
        names={
            "gmpo": "GMPO",
            "grpo": "GRPO",
            "gmpo_short": "GMPO, 25 rounds of 8 prompts",
            "grpo_short": "GRPO, 25 rounds of 8 prompts",
            "gmpo_stress": "GMPO, stress (25 rounds of 8)",
            "grpo_stress": "GRPO, stress (25 rounds of 8)",
        },
    ),
}


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm}-seed{seed}"


def jobs(setting: Setting, root: Path, seeds: list[int], arms: list[str], overrides: list[str]) -> tuple[list, list]:
    """(warm-start jobs, RL jobs): each a (name, output folder, command)."""
    cli = [sys.executable, "-m", "mm_gmpo.cli"]
    warm, rl = {}, []
    for seed in seeds:
        for arm in arms:
            config, extra, start = setting.arms[arm]
            warm_seed = 1 if setting.shared_warm_start else seed
            start_dir = root / start if setting.shared_warm_start else run_dir(root, start, seed)
            # the warm start takes the arm's data overrides (blank images), never its RL ones (the stress)
            data_extra = [o for o in extra if o.startswith("data.")]
            sft = [*cli, "sft", config, f"trainer.seed={warm_seed}", "trainer.num_threads=1", *data_extra]
            job = (f"{start} seed {warm_seed}", start_dir, [*sft, *overrides, "--out", str(start_dir)])
            warm.setdefault(start_dir, job)  # the first arm's config: the arms share model, data and warmstart
            out = run_dir(root, arm, seed)
            # a job rerun after a kill starts afresh; the killed run is moved aside (run.old-<time>), not deleted
            train = [
                *cli,
                "train",
                config,
                f"trainer.seed={seed}",
                f"trainer.output_dir={out}",
                "trainer.overwrite=true",
            ]
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


def run_all(setting: Setting, root: Path, seeds: list[int], arms: list[str], parallel: int, overrides: list[str]):
    base = setting.base_model
    if base and not Path(base).exists():  # built once here, not by two parallel jobs at the same time
        subprocess.run([sys.executable, "scripts/make_toy_model.py", "--task", "count_points", "--out", base])
    warm, rl = jobs(setting, root, seeds, arms, overrides)
    run_queue(warm, parallel)
    run_queue(rl, parallel)


def eval_jobs(setting: Setting, root: Path, seeds: list[int], arms: list[str], kind: str) -> list:
    """``mm-gmpo eval`` of each run's model at step 0 (its ``model.path``, the warm start) and of its checkpoint at
    its last validation step, on its validation set (same prompts and template), into ``<folder>/<kind>``:

    - ``greedy``: temperature 0, for runs that logged no greedy accuracy (``rollout.val_also_greedy=false``, as the
      text task's main arms: five greedy passes would add a third to a run); the number the trainer's greedy pass
      logs (0.707 both ways for the text task's warm start);
    - ``sampled``: ``setting.sampled_n`` samples per prompt at the run's rollout temperature and top-p, for every
      run: the in-run ``val/accuracy`` (``rollout.val_n`` samples per prompt) measured more precisely."""
    from mm_gmpo.trainer.checkpoint import PREFIX, checkpoint_dir

    found: dict = {}
    for arm in arms:
        for seed in seeds:
            run = run_dir(root, arm, seed)
            rows = _rows(run)
            if kind == "greedy" and any("val/accuracy_greedy" in row for row in rows):
                continue
            config = _config(run)
            end = checkpoint_dir(run) / f"{PREFIX}{max(r['step'] for r in rows if 'val/accuracy' in r)}"
            if not end.is_dir():
                raise SystemExit(f"{run}: no checkpoint at its last validation step ({end}) for the {kind} evaluation")
            rollout = config["rollout"]
            if kind == "greedy":
                sampling = ["--temperature", "0"]
            elif rollout.get("top_k", 0):
                raise SystemExit(f"{run}: rollout.top_k={rollout['top_k']}; mm-gmpo eval samples with top_k 0 only")
            else:
                sampling = ["--temperature", str(rollout["temperature"]), "--top-p", str(rollout["top_p"]),
                            "--n", str(setting.sampled_n), "--k", "1"]  # fmt: skip
            start = Path(config["model"]["path"]).resolve()  # one evaluation for every spelling of the path
            for model, out, eval_seed in ((start, start / kind, 0), (end, run / kind, seed)):
                found.setdefault(out, (f"{kind} {out.parent.name}", out, [
                    sys.executable, "-m", "mm_gmpo.cli", "eval", "--model", str(model), "--data",
                    config["data"]["val"], "--template", config["data"]["template"], *sampling,
                    "--max-new-tokens", str(rollout["max_new_tokens"]), "--seed", str(eval_seed), "--output", str(out),
                ]))  # fmt: skip
    return list(found.values())


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _evaluated(path: Path, kind: str) -> float | None:
    summary = path / kind / "summary.json"
    if not summary.exists():
        return None
    record = json.loads(summary.read_text())
    return record[record["data"][0]]["pass@1"]


def sampling_se(path: Path, kind: str = "sampled") -> float | None:
    """Standard error of an evaluation's accuracy from its sampling alone, for its fixed prompts: the per-prompt
    spread of the verdicts over the samples (``mm-gmpo eval``'s items file), ``sqrt(sum_i var_i / n_i) / N``."""
    items = sorted((path / kind).glob("items-*.jsonl"))
    if len(items) != 1:
        return None
    total, prompts = 0.0, 0
    for line in items[0].read_text().splitlines():
        verdicts = [float(v) for v in json.loads(line)["verdicts"]]
        if len(verdicts) < 2:
            return None
        total += statistics.variance(verdicts) / len(verdicts)
        prompts += 1
    return total**0.5 / prompts


def accuracies(path: Path) -> dict:
    """First and last ``val/accuracy`` (and ``val/accuracy_greedy`` when logged) of a run, with the last step and
    the run's wall time when known."""
    rows = _rows(path)
    val = [(r["step"], r["val/accuracy"], r.get("val/accuracy_greedy")) for r in rows if "val/accuracy" in r]
    lengths = [r["val/response_length"] for r in rows if "val/response_length" in r]
    if len(val) < 2:
        raise SystemExit(f"{path}: fewer than two val/accuracy rows (did the run finish?)")
    final = path / "final.json"
    seconds = json.loads(final.read_text())["seconds"] if final.exists() else None
    greedy_start, greedy_end = val[0][2], val[-1][2]
    start = Path(_config(path)["model"]["path"]) if (path / "config.yaml").exists() else None
    if greedy_end is None and start:  # not logged: from eval_jobs' evaluations, when they ran
        greedy_start, greedy_end = _evaluated(start, "greedy"), _evaluated(path, "greedy")
    return {
        "start": val[0][1],
        "end": val[-1][1],
        "greedy_start": greedy_start,
        "greedy_end": greedy_end,
        "sampled_start": _evaluated(start, "sampled") if start else None,
        "sampled_end": _evaluated(path, "sampled"),
        "sampled_start_se": sampling_se(start) if start else None,
        "sampled_end_se": sampling_se(path),
        "end_step": val[-1][0],
        "response_length_start": lengths[0] if lengths else None,
        "response_length_end": lengths[-1] if lengths else None,
        "seconds": seconds,
        "curve": [list(v) for v in val],
    }


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _paired(runs: list[dict], start: str, end: str) -> dict:
    """Mean and spread of the start, the end and the per-seed gain (end minus start of the same seed)."""
    starts, ends = [r[start] for r in runs], [r[end] for r in runs]
    gains = [e - s for s, e in zip(starts, ends, strict=True)]
    return {
        "start_mean_sd": mean_sd(starts),
        "end_mean_sd": mean_sd(ends),
        "gain_mean_sd": mean_sd(gains),
        "gain_min": min(gains),
        "gains": gains,
    }


def summarise(setting: Setting, root: Path, seeds: list[int], arms: list[str]) -> dict:
    per_run = {arm: {seed: accuracies(run_dir(root, arm, seed)) for seed in seeds} for arm in arms}
    result = {"seeds": seeds, "runs": {f"{a}-seed{s}": v for a in arms for s, v in per_run[a].items()}}
    if setting.shared_warm_start:
        warm = [root / "warmstart" / "final.json"]
        result["warmstart_shared"] = True
    else:
        warm = [run_dir(root, "warmstart", s) / "final.json" for s in seeds]
    if all(p.exists() for p in warm):
        result["warmstart_minutes"] = statistics.fmean(json.loads(p.read_text())["seconds"] for p in warm) / 60
    for arm in arms:
        runs = [per_run[arm][s] for s in seeds]
        times = [r["seconds"] for r in runs if r["seconds"] is not None]
        result[arm] = {
            **_paired(runs, "start", "end"),
            "minutes_mean": statistics.fmean(times) / 60 if times else None,
        }
        for kind in ("greedy", "sampled"):
            if all(r[f"{kind}_start"] is not None and r[f"{kind}_end"] is not None for r in runs):
                result[arm][kind] = _paired(runs, f"{kind}_start", f"{kind}_end")
        if "sampled" in result[arm] and all(r["sampled_start_se"] and r["sampled_end_se"] for r in runs):
            # start and end sample independently: the standard error of a seed's gain from sampling alone
            ses = [(r["sampled_start_se"] ** 2 + r["sampled_end_se"] ** 2) ** 0.5 for r in runs]
            result[arm]["sampled"]["gain_sampling_se"] = ses
        result[arm]["dynamics"] = dynamics([run_dir(root, arm, s) for s in seeds], settle=setting.settle)
        if all(r["response_length_start"] is not None for r in runs):
            result[arm]["val_response_length"] = {
                "start_mean_sd": mean_sd([r["response_length_start"] for r in runs]),
                "end_mean_sd": mean_sd([r["response_length_end"] for r in runs]),
            }
    return result


def dynamics(paths: list[Path], settle: int = 50, window: int = 40) -> dict:
    """Over all seeds of an arm: the per-step log-ratio extremes after the first ``settle`` steps (median, 5th
    percentile of the minimum, 95th of the maximum, and the most extreme), the per-step p99 of |log r| (median and
    highest), and the mean entropy and training response length of the first and last ``window`` steps."""
    lows, highs, p99s, first, last, len_first, len_last = [], [], [], [], [], [], []
    for path in paths:
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        steps = [r for r in rows if "actor/entropy" in r]
        lows += [r["actor/log_ratio_min"] for r in steps if r["step"] > settle]
        highs += [r["actor/log_ratio_max"] for r in steps if r["step"] > settle]
        p99s += [r["actor/log_ratio_abs_p99"] for r in steps if r["step"] > settle and "actor/log_ratio_abs_p99" in r]
        first.append(statistics.fmean(r["actor/entropy"] for r in steps[:window]))
        last.append(statistics.fmean(r["actor/entropy"] for r in steps[-window:]))
        len_first.append(statistics.fmean(r["response_length/mean"] for r in steps[:window]))
        len_last.append(statistics.fmean(r["response_length/mean"] for r in steps[-window:]))
    lows.sort()
    highs.sort()
    tail = max(len(lows) // 20, 1)
    return {
        "log_ratio_min_median": statistics.median(lows),
        "log_ratio_min_p5": lows[tail - 1],
        "log_ratio_min_lowest": lows[0],
        "log_ratio_max_median": statistics.median(highs),
        "log_ratio_max_p95": highs[-tail],
        "log_ratio_max_highest": highs[-1],
        "log_ratio_abs_p99_median": statistics.median(p99s) if p99s else None,
        "log_ratio_abs_p99_highest": max(p99s) if p99s else None,
        "entropy_first": statistics.fmean(first),
        "entropy_last": statistics.fmean(last),
        "response_length_first": statistics.fmean(len_first),
        "response_length_last": statistics.fmean(len_last),
        "window": window,
    }


def head_to_head(result: dict, arms: list[str], kind: str) -> list[tuple[str, str, list[float]]]:
    """(GMPO arm, its GRPO twin, GMPO's gain minus GRPO's per seed) for every ``gmpo*`` arm whose ``grpo*`` twin
    (the same suffix) is among ``arms``, from the ``kind`` measurement."""
    pairs = [(a, "grpo" + a[4:]) for a in arms if a.startswith("gmpo") and "grpo" + a[4:] in arms]
    return [
        (a, b, [x - y for x, y in zip(result[a][kind]["gains"], result[b][kind]["gains"], strict=True)])
        for a, b in pairs
    ]


def table(setting: Setting, result: dict, arms: list[str]) -> str:
    names = setting.names
    seeds = len(result["seeds"])
    greedy = all("greedy" in result[arm] for arm in arms)
    head = f"| run ({seeds} seeds) | val/accuracy after warm start | val/accuracy at the end | gain (paired) |"
    rule = "|---|---|---|---|"
    if greedy:
        head += " greedy: after warm start | greedy: at the end | greedy gain |"
        rule += "---|---|---|"
    lines = [head + " RL minutes/run |", rule + "---|"]

    def cells(r: dict) -> str:
        (s, s_sd), (e, e_sd), (g, g_sd) = r["start_mean_sd"], r["end_mean_sd"], r["gain_mean_sd"]
        return f" {s:.3f} ± {s_sd:.3f} | {e:.3f} ± {e_sd:.3f} | {g:+.3f} ± {g_sd:.3f} |"

    for arm in arms:
        r = result[arm]
        minutes = f"{r['minutes_mean']:.1f}" if r["minutes_mean"] else "-"
        lines.append(f"| {names[arm]} |{cells(r)}{cells(r['greedy']) if greedy else ''} {minutes} |")
    warm = result.get("warmstart_minutes")
    shared = result.get("warmstart_shared")
    note = ""
    if warm:
        each = "once, shared by every seed and arm" if shared else "per seed"
        note = f" The warm start (`mm-gmpo sft`) took {warm:.1f} minutes, {each}."
    lines += ["", f"mean ± standard deviation over seeds; {setting.chance}{note}", ""]
    if all("sampled" in result[arm] for arm in arms):
        n = setting.sampled_n
        lines += [
            f"| run | held-out accuracy, {n} samples per prompt: after warm start | at the end | gain |"
            " gain per seed | lowest gain | sampling SE of a seed's gain |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm in arms:
            r = result[arm]["sampled"]
            per_seed = " ".join(f"{g:+.3f}" for g in r["gains"])
            se = r.get("gain_sampling_se")
            se_cell = f"{min(se):.3f}-{max(se):.3f}" if se else "-"
            lines.append(f"| {names[arm]} |{cells(r)} {per_seed} | {r['gain_min']:+.4f} | {se_cell} |")
        lines += ["", f"`mm-gmpo eval` at the training temperature, {n} samples on each held-out prompt, of the warm"
                  " start and of each run's last checkpoint (`eval_jobs`); the SE is the spread that resampling"
                  " the same two models on the same prompts would give.", ""]  # fmt: skip
        for gmpo, grpo, diffs in head_to_head(result, arms, "sampled"):
            ahead = sum(d > 0 for d in diffs)
            lines.append(
                f"- {names[gmpo]} minus {names[grpo]}, gain per seed: {' '.join(f'{d:+.3f}' for d in diffs)};"
                f" GMPO ahead on {ahead} of {len(diffs)}, by {statistics.fmean(diffs):+.3f} on average"
            )
        lines.append("")
    lines += [
        "| run | log-ratio min per step: median, 5th pct, lowest | log-ratio max per step: median, 95th pct,"
        " highest | entropy (nats/token): first 40 steps, last 40 |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        d = result[arm]["dynamics"]
        lines.append(
            f"| {names[arm]} | {d['log_ratio_min_median']:.2f}, {d['log_ratio_min_p5']:.2f},"
            f" {d['log_ratio_min_lowest']:.2f} | {d['log_ratio_max_median']:.2f}, {d['log_ratio_max_p95']:.2f},"
            f" {d['log_ratio_max_highest']:.2f} | {d['entropy_first']:.3f}, {d['entropy_last']:.3f} |"
        )
    text = "\n".join(lines)
    text += f"\n\nlog-ratios over all seeds' steps after step {setting.settle} (the warm-up of the first rounds).\n"
    if not all("val_response_length" in result[arm] for arm in arms):
        return text
    window = result[arms[0]]["dynamics"]["window"]
    lines = [
        "",
        "| run | val response length (tokens): after warm start, at the end | per-step p99 of abs(log r):"
        f" median, highest | training response length: first {window} steps, last {window} |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        d, length = result[arm]["dynamics"], result[arm]["val_response_length"]
        (s, _), (e, _) = length["start_mean_sd"], length["end_mean_sd"]
        lines.append(
            f"| {names[arm]} | {s:.1f}, {e:.1f} | {d['log_ratio_abs_p99_median']:.3f},"
            f" {d['log_ratio_abs_p99_highest']:.3f} | {d['response_length_first']:.1f},"
            f" {d['response_length_last']:.1f} |"
        )
    return text + "\n".join(lines) + "\n"


def figures(root: Path, out: Path, seeds: list[int], arms: list[str]) -> None:
    """``out/arms``: seed 1 of every arm overlaid; ``out/<arm>``: every seed of GMPO, and of GRPO."""
    plot = [sys.executable, "-m", "mm_gmpo.cli", "plot", "--smooth", "10"]
    first = [str(run_dir(root, arm, seeds[0])) for arm in arms]
    subprocess.run([*plot, *first, "--out", str(out / "arms"), "--labels", *arms], check=True)
    for arm in (a for a in arms if a != "blank"):
        dirs = [str(run_dir(root, arm, s)) for s in seeds]
        subprocess.run([*plot, *dirs, "--out", str(out / arm), "--labels", *[f"seed {s}" for s in seeds]], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="image", choices=list(SETTINGS), help="image: count_points; text: chain_sum")
    parser.add_argument("--root", default="", help="where the runs go (default: the task's)")
    parser.add_argument("--out", default="", help="results.json, table.md and figures (default: the task's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--arms", nargs="+", default=None, help="a subset of the task's arms (default: all)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--summary-only", action="store_true", help="only summarise finished runs")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.task]
    arms = args.arms or list(setting.arms)
    unknown = [a for a in arms if a not in setting.arms]
    if unknown:
        parser.error(f"--arms {' '.join(unknown)}: not an arm of --task {args.task} ({', '.join(setting.arms)})")
    root, out = Path(args.root or setting.root), Path(args.out or setting.out)
    if not args.summary_only:
        run_all(setting, root, args.seeds, arms, args.parallel, args.overrides)
        run_queue(eval_jobs(setting, root, args.seeds, arms, "greedy"), args.parallel)
        if setting.sampled_n:
            run_queue(eval_jobs(setting, root, args.seeds, arms, "sampled"), args.parallel)
    result = summarise(setting, root, args.seeds, arms)
    out.mkdir(parents=True, exist_ok=True)
    text = table(setting, result, arms)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    figures(root, out, args.seeds, arms)
    print(text)
    print(json.dumps({arm: result[arm] for arm in arms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
