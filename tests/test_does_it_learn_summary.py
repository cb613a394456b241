"""scripts/does_it_learn.py's summary on hand-made runs: paired gains, the shared warm start of --task text, the
per-step log-ratio and p99 statistics and the response-length table (no training)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts/does_it_learn.py"


@pytest.fixture(scope="module")
def does_it_learn():
    spec = importlib.util.spec_from_file_location("does_it_learn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["does_it_learn"] = module  # its dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _write_run(path: Path, start: float, end: float, p99: float, seconds: float = 60.0) -> None:
    path.mkdir(parents=True)
    rows = [{"step": 0, "val/accuracy": start, "val/accuracy_greedy": start + 0.1, "val/response_length": 57.0}]
    for step in range(1, 21):
        rows.append(
            {
                "step": step,
                "actor/entropy": 0.2 if step <= 10 else 0.1,
                "actor/log_ratio_min": -0.1 * step,
                "actor/log_ratio_max": 0.05 * step,
                "actor/log_ratio_abs_p99": p99,
                "response_length/mean": 55.0 if step <= 10 else 50.0,
            }
        )
    rows.append({"step": 20, "val/accuracy": end, "val/accuracy_greedy": end + 0.1, "val/response_length": 52.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "final.json").write_text(json.dumps({"seconds": seconds}))


def test_text_summary_pairs_gains_per_seed_and_reports_p99_and_lengths(does_it_learn, tmp_path):
    setting = does_it_learn.SETTINGS["text"]
    _write_run(tmp_path / "warmstart", 0, 0, 0, seconds=120.0)
    for seed, (start, end) in {1: (0.40, 0.55), 2: (0.42, 0.50)}.items():
        _write_run(tmp_path / f"gmpo-seed{seed}", start, end, p99=0.3)
        _write_run(tmp_path / f"grpo-seed{seed}", start, start - 0.02, p99=0.2)
    result = does_it_learn.summarise(setting, tmp_path, [1, 2], ["gmpo", "grpo"])
    assert result["warmstart_shared"] and result["warmstart_minutes"] == pytest.approx(2.0)
    assert result["gmpo"]["gains"] == pytest.approx([0.15, 0.08])
    assert result["gmpo"]["gain_min"] == pytest.approx(0.08)
    assert result["grpo"]["gain_mean_sd"][0] == pytest.approx(-0.02)
    dynamics = result["gmpo"]["dynamics"]  # steps after settle=8 only: 9..20
    assert dynamics["log_ratio_min_lowest"] == pytest.approx(-2.0)
    assert dynamics["log_ratio_max_highest"] == pytest.approx(1.0)
    assert dynamics["log_ratio_abs_p99_median"] == pytest.approx(0.3)
    assert result["gmpo"]["val_response_length"]["end_mean_sd"][0] == pytest.approx(52.0)
    text = does_it_learn.table(setting, result, ["gmpo", "grpo"])
    assert "| GMPO | 0.410 ± 0.014 | 0.525 ± 0.035 | +0.115 ± 0.049 |" in text
    assert "once, shared by every seed and arm" in text
    assert "| GRPO | 57.0, 52.0 | 0.200, 0.200 |" in text


def test_jobs_share_one_warm_start_and_keep_stress_overrides_out_of_it(does_it_learn, tmp_path):
    setting = does_it_learn.SETTINGS["text"]
    warm, rl = does_it_learn.jobs(setting, tmp_path, [1, 2], ["gmpo", "gmpo_stress"], [])
    assert len(warm) == 1 and len(rl) == 4
    (_, folder, command) = warm[0]
    assert folder == tmp_path / "warmstart" and "trainer.seed=1" in command
    assert not any(o in command for o in does_it_learn.STRESS)
    stress = [cmd for name, _, cmd in rl if name.startswith("gmpo_stress")]
    assert all(set(does_it_learn.STRESS) <= set(cmd) for cmd in stress)
    assert all(f"model.path={tmp_path / 'warmstart'}" in cmd for _, _, cmd in rl)


@pytest.mark.parametrize("task", ["image", "text"])
def test_every_arm_is_a_valid_config(does_it_learn, task):
    from mm_gmpo.config import load_config
    from mm_gmpo.trainer.setup import check_config

    repo = SCRIPT.parents[1]
    for config, extra, _ in does_it_learn.SETTINGS[task].arms.values():
        check_config(load_config(repo / config, extra), world_size=1)  # raises a UserError naming the key if not


def test_runs_without_a_greedy_pass_get_it_from_evaluations_of_their_start_and_last_checkpoint(
    does_it_learn, tmp_path
):
    import yaml

    warm = tmp_path / "warmstart"
    warm.mkdir()
    logged, silent = tmp_path / "grpo-seed1", tmp_path / "gmpo-seed1"
    _write_run(logged, 0.40, 0.50, p99=0.1)
    _write_run(silent, 0.40, 0.55, p99=0.1)
    rows = [json.loads(line) for line in (silent / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("val/accuracy_greedy", None)
    (silent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model": {"path": str(warm)}, "data": {"val": "synthetic:chain_sum:test:300", "template": "geo3k"},
              "rollout": {"max_new_tokens": 96, "temperature": 1.0, "top_p": 1.0, "top_k": 0}}  # fmt: skip
    for run in (logged, silent):
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        for step in (10, 20):
            (run / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    setting = does_it_learn.SETTINGS["text"]
    jobs = does_it_learn.eval_jobs(setting, tmp_path, [1], ["gmpo", "grpo"], "greedy")
    assert [out for _, out, _ in jobs] == [warm / "greedy", silent / "greedy"]  # the logged run needs none
    commands = {out: cmd for _, out, cmd in jobs}
    assert str(silent / "checkpoints/checkpoint-20") in commands[silent / "greedy"]  # the last validation's step
    assert commands[warm / "greedy"][commands[warm / "greedy"].index("--temperature") + 1] == "0"
    assert does_it_learn.accuracies(silent)["greedy_end"] is None  # not evaluated yet: no greedy row in the table
    for out, value in ((warm / "greedy", 0.7), (silent / "greedy", 0.8)):
        out.mkdir()
        spec = "synthetic:chain_sum:test:300"
        (out / "summary.json").write_text(json.dumps({"data": [spec], spec: {"pass@1": value}}))
    record = does_it_learn.accuracies(silent)
    assert (record["greedy_start"], record["greedy_end"]) == (0.7, 0.8)
    (silent / "checkpoints" / "checkpoint-20").rmdir()
    with pytest.raises(SystemExit, match="no checkpoint at its last validation step"):
        does_it_learn.eval_jobs(setting, tmp_path, [1], ["gmpo"], "greedy")
    assert does_it_learn.accuracies(logged)["greedy_end"] == pytest.approx(0.6)  # logged: from its metrics


def test_the_stress_arms_differ_from_the_short_setting_only_in_the_stress(does_it_learn):
    from dataclasses import asdict

    from mm_gmpo.config import load_config

    config = SCRIPT.parents[1] / "configs/toy_text_gmpo.yaml"
    short = asdict(load_config(config, does_it_learn.SHORT))
    stress = asdict(load_config(config, does_it_learn.STRESS))
    changed = {(part, key) for part in short if isinstance(short[part], dict)
               for key in short[part] if short[part][key] != stress[part][key]}  # fmt: skip
    assert changed == {("trainer", k) for k in ("lr", "updates_per_round", "micro_batch_size", "max_steps")}
    assert (short["rollout"]["prompts_per_round"], short["trainer"]["max_steps"]) == (8, 100)
    assert short["rollout"]["val_also_greedy"] and short["trainer"]["val_every"] == 0


def test_every_run_gets_a_sampled_evaluation_of_its_start_and_end_and_the_table_lists_each_seeds_gain(
    does_it_learn, tmp_path
):
    import yaml

    setting = does_it_learn.SETTINGS["text"]
    warm = tmp_path / "warmstart"
    _write_run(warm, 0, 0, 0)
    spec = "synthetic:chain_sum:test:300"
    for seed in (1, 2):
        run = tmp_path / f"gmpo-seed{seed}"
        _write_run(run, 0.60 + seed / 100, 0.70, p99=0.1)  # in-run validation, kept beside the evaluations
        config = {"model": {"path": str(warm)}, "data": {"val": spec, "template": "geo3k"},
                  "rollout": {"max_new_tokens": 96, "temperature": 0.9, "top_p": 0.95, "top_k": 0}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "checkpoints" / "checkpoint-20").mkdir(parents=True)
    jobs = does_it_learn.eval_jobs(setting, tmp_path, [1, 2], ["gmpo"], "sampled")
    outs = [out for _, out, _ in jobs]
    assert outs == [warm.resolve() / "sampled", tmp_path / "gmpo-seed1/sampled", tmp_path / "gmpo-seed2/sampled"]
    command = dict((out, cmd) for _, out, cmd in jobs)[tmp_path / "gmpo-seed2/sampled"]
    flag = {key: command[command.index(key) + 1] for key in ("--temperature", "--top-p", "--n", "--seed")}
    assert flag == {"--temperature": "0.9", "--top-p": "0.95", "--n": str(setting.sampled_n), "--seed": "2"}
    assert str(tmp_path / "gmpo-seed2/checkpoints/checkpoint-20") in command
    for out, value in zip(outs, (0.65, 0.80, 0.72), strict=True):
        out.mkdir()
        (out / "summary.json").write_text(json.dumps({"data": [spec], spec: {"pass@1": value}}))
        # two prompts: one right on 1 sample of 2 (sample variance 0.5), one on both (0): SE sqrt(0.5 / 2) / 2
        items = [{"verdicts": [True, False]}, {"verdicts": [True, True]}]
        (out / "items-synthetic_chain_sum_test_300.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    assert does_it_learn.sampling_se(warm.resolve()) == pytest.approx(0.25)
    result = does_it_learn.summarise(setting, tmp_path, [1, 2], ["gmpo"])
    assert result["gmpo"]["sampled"]["gains"] == pytest.approx([0.15, 0.07])
    assert result["gmpo"]["gains"] == pytest.approx([0.09, 0.08])  # the in-run validation, unchanged
    text = does_it_learn.table(setting, result, ["gmpo"])
    assert result["gmpo"]["sampled"]["gain_sampling_se"] == pytest.approx([0.25 * 2**0.5] * 2)
    assert "| GMPO | 0.650 ± 0.000 | 0.760 ± 0.057 | +0.110 ± 0.057 | +0.150 +0.070 | +0.0700 | 0.354-0.354 |" in text
    grpo = {**result["gmpo"], "sampled": {**result["gmpo"]["sampled"], "gains": [0.10, 0.08]}}
    pair = does_it_learn.table(setting, {**result, "grpo": grpo}, ["gmpo", "grpo"])
    assert "- GMPO minus GRPO, gain per seed: +0.050 -0.010; GMPO ahead on 1 of 2, by +0.020 on average" in pair
    config["rollout"]["top_k"] = 20
    (tmp_path / "gmpo-seed2" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="gmpo-seed2: rollout.top_k=20"):
        does_it_learn.eval_jobs(setting, tmp_path, [1, 2], ["gmpo"], "sampled")
