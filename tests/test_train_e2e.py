"""End-to-end runs of `mm-gmpo train` on the tiny configs: single process, resume, 2-process ZeRO-2/3; the resume,
checkpoint and ZeRO tests for every model kind in ``CASES`` (Qwen2.5-VL, Qwen3-VL, Qwen3)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import (
    QUIET_RUN,
    REPO,
    TINY_DIR_FIXTURES,
    assert_same_updates,
    checkpoint_weights,
    cli_command,
    cli_env,
    metrics_rows,
    run_cli,
    update_rows,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# A scaled-down geo3k_tiny: 2 prompts x 4 responses per round, 2 updates per round, short responses.
SMALL = [
    "rollout.prompts_per_round=2",
    "rollout.n=4",
    "rollout.max_new_tokens=20",
    "trainer.updates_per_round=2",
    "trainer.micro_batch_size=2",
    "trainer.val_every=0",
    "data.val_limit=4",
    "data.train_limit=40",
    "reward.workers=1",
    *QUIET_RUN,
]


def _train(tmp: Path, run: str, model_dir: Path, *extra: str, nproc: int = 1, kind: str = "qwen2_5_vl") -> Path:
    out = tmp / run
    run_cli(*_args(out, model_dir, *extra, kind=kind), cwd=tmp, nproc=nproc)
    return out


def _args(out: Path, model_dir: Path, *extra: str, kind: str = "qwen2_5_vl") -> list[str]:
    case = CASES[kind]
    config = str(REPO / case.config)
    return ["train", config, f"trainer.output_dir={out}", f"model.path={model_dir}", *SMALL, *case.extra, *extra]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL warm-started once on the answer format, so RL groups get mixed rewards."""
    from mm_gmpo.config import load_config
    from mm_gmpo.models import TinyModelSpec, load_model, load_processor, make_tiny_model
    from mm_gmpo.trainer.data import load_prompt_sets
    from mm_gmpo.trainer.sft import warm_start

    torch.set_num_threads(1)
    folder = make_tiny_model(TinyModelSpec(kind="qwen2_5_vl"), tmp_path_factory.mktemp("m") / "tiny-vl")
    cfg = load_config(REPO / "configs/geo3k_tiny.yaml", ["data.train_limit=40", "data.val="])
    processor = load_processor(folder, min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    prompts, _, _ = load_prompt_sets(cfg, processor)
    model = load_model(folder, "float32")
    losses = warm_start(
        model,
        processor,
        prompts,
        template="geo3k",
        reasoning="Look.",  # short targets: the response fits rollout.max_new_tokens
        steps=80,
        lr=cfg.warmstart.lr,
        batch_size=8,
        seed=0,
        chunk_size=512,
    )
    assert losses[-1] < 1.5 < losses[0]
    model.save_pretrained(folder)
    return folder


@dataclass(frozen=True)
class Case:
    """A model kind the end-to-end runs cover: its config, the overrides it needs, what stock transformers loads."""

    config: str
    extra: tuple[str, ...]
    model_class: str
    vision: bool = True


# A random tiny model earns no accuracy: a brevity bonus varies within every group, so the policy moves; it never
# stops within 20 tokens, so truncated responses keep their reward; no validation (it would score 0 anyway).
RANDOM_POLICY = (
    "reward.function=mm_gmpo.reward.examples:correct_and_short",
    "reward.zero_truncated=false",
    "data.val=",
)
CASES = {
    "qwen2_5_vl": Case("configs/geo3k_tiny.yaml", (), "Qwen2_5_VLForConditionalGeneration"),
    # DeepStack, interleaved M-RoPE, 32-pixel merged patches
    "qwen3_vl": Case("configs/geo3k_tiny.yaml", RANDOM_POLICY, "Qwen3VLForConditionalGeneration"),
    # the thinking template; the reward reads what follows </think>
    "qwen3": Case(
        "configs/math_tiny.yaml",
        (*RANDOM_POLICY, "data.template=qwen3_thinking", "warmstart.steps=0"),
        "Qwen3ForCausalLM",
        vision=False,
    ),
}


def _model_dir(request, kind: str) -> Path:
    """The warm-started Qwen2.5-VL of this module, or the session's random tiny model of ``kind``."""
    return request.getfixturevalue("model_dir" if kind == "qwen2_5_vl" else TINY_DIR_FIXTURES[kind])


# The straight run and the resumed one sample dynamically (DAPO), so exact resume is checked with it on.
DYNAMIC = ["algorithm.dynamic_sampling=true", "rollout.max_sampling_rounds=2"]


@pytest.fixture(scope="module")
def straight_run(request, tmp_path_factory):
    """``straight_run(kind)``: 4 optimizer steps straight, checkpoints every 2; made on first use, once per kind."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = _train(
                tmp_path_factory.mktemp("runs"),
                "straight",
                _model_dir(request, kind),
                "trainer.max_steps=4",
                "trainer.save_every=2",
                *DYNAMIC,
                kind=kind,
            )
        return made[kind]

    return get


@pytest.fixture(scope="module")
def straight(straight_run) -> Path:
    return straight_run("qwen2_5_vl")


def test_single_process_run(straight, model_dir):
    rows = metrics_rows(straight)
    assert rows[0]["step"] == 0 and "val/accuracy" in rows[0]  # validation after the warm start, before RL
    required = [
        "reward/mean",
        "reward/accuracy",
        "reward/format",
        "response_length/mean",
        "actor/pg_loss",
        "actor/entropy",
        "actor/clip_frac",
        "actor/log_ratio_min",
        "actor/log_ratio_max",
        "actor/grad_norm",
        "perf/step_s",
        "perf/tokens_per_s",
        "rollout/logprob_diff_mean",  # trainer vs sampler, every round with old log-probs (2 updates per round)
        "rollout/logprob_diff_p99",
        "rollout/logprob_diff_max",
    ]
    train_rows = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]  # one row per optimizer step
    for row in train_rows:
        for key in required:
            assert key in row, key
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row[key])
    assert "val/accuracy" in rows[-1] and rows[-1]["step"] == 4  # final validation
    assert any(r["reward/std"] > 0 for r in train_rows)  # mixed rewards: the updates are informative
    # dynamic sampling: one or two samplings per round, the share of informative groups before filtering logged
    assert all(r["batch/sampling_rounds"] in (1.0, 2.0) for r in train_rows)
    assert all(0.0 <= r["batch/informative_groups_frac"] <= 1.0 for r in train_rows)
    for r in train_rows:  # a round ends early only when it has enough informative groups
        assert r["batch/sampling_rounds"] == 2.0 or r["batch/uninformative_groups_kept"] == 0.0
    assert all(r["rollout/logprob_diff_max"] < 1e-4 for r in train_rows)  # fp32: the sampler is the trainer
    # the second update of a round is off-policy: its log-ratios are not all zero
    assert any(r["actor/log_ratio_max"] - r["actor/log_ratio_min"] > 0 for r in train_rows)
    # parameters changed
    start = load_file(model_dir / "model.safetensors")
    final = checkpoint_weights(straight, 4)
    assert _max_diff({k: start[k] for k in final}, final) > 0
    assert (straight / "config.yaml").is_file()


@pytest.mark.parametrize("kind", CASES)
def test_checkpoint_loads_with_stock_transformers(straight_run, kind):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    case, folder = CASES[kind], straight_run(kind) / "checkpoints" / "checkpoint-4"
    model = (AutoModelForImageTextToText if case.vision else AutoModelForCausalLM).from_pretrained(folder)
    assert type(model).__name__ == case.model_class
    if case.vision:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    saved = checkpoint_weights(straight_run(kind), 4)
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved if k in state)


@pytest.mark.parametrize("kind", CASES)
def test_resume_is_exact(request, tmp_path, straight_run, kind):
    straight, model_dir = straight_run(kind), _model_dir(request, kind)
    first = _train(tmp_path, "resumed", model_dir, "trainer.max_steps=2", "trainer.save_every=2", *DYNAMIC, kind=kind)
    _train(
        tmp_path,
        "resumed",
        model_dir,
        "trainer.max_steps=4",
        "trainer.save_every=2",
        f"trainer.resume_from={first}",
        *DYNAMIC,
        kind=kind,
    )
    assert _max_diff(checkpoint_weights(straight, 4), checkpoint_weights(first, 4)) <= 1e-6
    assert_same_updates(update_rows(straight), update_rows(first))
    # fp32: the sampler is the trainer
    assert all(r["rollout/logprob_diff_max"] < 1e-4 for r in update_rows(straight))
    start, final = load_file(model_dir / "model.safetensors"), checkpoint_weights(straight, 4)
    assert _max_diff({k: start[k] for k in final}, final) > 0  # it trained


def _signalled_run(out: Path, model_dir: Path, *extra: str, signals: list[int], after: str) -> tuple[int, str]:
    """Start `mm-gmpo train`, send ``signals`` (1.5 s apart: closer ones are one request) once ``after`` is in its
    log; (exit code, log)."""
    cmd, env = cli_command(*_args(out, model_dir, *extra)), cli_env()
    log_file = out.parent / f"{out.name}-{len(list(out.parent.glob('*.log')))}.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out.parent)
        deadline = time.monotonic() + 600
        while after not in log_file.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(1.5)
        returncode = proc.wait(timeout=600)
    return returncode, log_file.read_text()


def test_interrupts_stop_at_a_round_boundary_and_resume_exactly(tmp_path, straight, model_dir):
    """Issue 18. SIGTERM during round 1 (steps 1-2): the round finishes, checkpoint-2 is saved though save_every is
    4, exit 143. Resumed, Ctrl-C during round 2: checkpoint-4, exit 130, equal to the straight run's step 4.
    Resumed again, Ctrl-C twice during round 3 (a round takes several seconds here): stops at once, no
    checkpoint-6; checkpoint-4 stays valid."""
    from mm_gmpo.trainer.checkpoint import checkpoint_problem, latest_checkpoint

    run = tmp_path / "run"
    common = ["trainer.max_steps=6", "trainer.save_every=4", *DYNAMIC]  # as the straight run samples
    code, log = _signalled_run(run, model_dir, *common, signals=[signal.SIGTERM], after="training steps 1 to 6")
    assert code == 143, log[-3000:]
    assert "SIGTERM: stopping at the end of this round" in log and "Traceback" not in log
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert [r["step"] for r in metrics_rows(run) if "actor/pg_loss" in r] == [1, 2]

    resume = [*common, f"trainer.resume_from={run}"]
    code, log = _signalled_run(run, model_dir, *resume, signals=[signal.SIGINT], after="training steps 3 to 6")
    assert code == 130, log[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert _max_diff(checkpoint_weights(straight, 4), checkpoint_weights(run, 4)) <= 1e-6
    assert [r["step"] for r in update_rows(run)] == [1, 2, 3, 4]  # every step once: none repeated, none skipped
    assert_same_updates(update_rows(straight), update_rows(run))

    start = time.monotonic()
    code, log = _signalled_run(
        run, model_dir, *resume, signals=[signal.SIGINT, signal.SIGINT], after="training steps 5 to 6"
    )
    assert code == 130, log[-3000:]
    assert "SIGINT again: stopping now" in log and "Traceback" not in log
    assert time.monotonic() - start < 300
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert (
        latest_checkpoint(run).name == "checkpoint-4" and checkpoint_problem(run / "checkpoints/checkpoint-4") is None
    )
    assert [r["step"] for r in metrics_rows(run) if "actor/pg_loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("kind", CASES)
def test_two_process_deepspeed_matches_one_process(request, tmp_path, straight_run, kind, stage):
    """2 processes under DeepSpeed ZeRO-2/3 make the same first two steps as the straight run: 1 process, AdamW on
    the plain module."""
    one, model_dir = straight_run(kind), _model_dir(request, kind)
    ds = f"trainer.deepspeed={REPO}/configs/deepspeed/{stage}.json"
    two = _train(tmp_path, "two", model_dir, "trainer.max_steps=2", ds, *DYNAMIC, nproc=2, kind=kind)
    w1, w2 = checkpoint_weights(one, 2), checkpoint_weights(two, 2)
    assert _max_diff(w1, w2) <= 1e-5
    r1 = update_rows(one)
    r2 = update_rows(two)
    assert [r["step"] for r in r2] == [1, 2]
    for key in ("reward/mean", "actor/pg_loss", "actor/grad_norm"):
        assert r2[-1][key] == pytest.approx(r1[1][key], abs=1e-5), key
    start = load_file(model_dir / "model.safetensors")
    assert _max_diff({k: start[k] for k in w2}, w2) > 0


def test_token_budget_on_two_processes_matches_one_big_batch(tmp_path, model_dir):
    """Issue 15: packed token-budget micro-batches on 2 processes, rows balanced between them by tokens, give the
    update of one padded micro-batch per step on 1 process."""
    ds = f"trainer.deepspeed={REPO}/configs/deepspeed/zero2.json"
    one = _train(tmp_path, "one", model_dir, "trainer.max_steps=2", ds, "trainer.micro_batch_size=8")
    two = _train(
        tmp_path,
        "two",
        model_dir,
        "trainer.max_steps=2",
        ds,
        "trainer.max_tokens_per_micro_batch=200",
        "trainer.packing=true",
        nproc=2,
    )
    assert _max_diff(checkpoint_weights(one, 2), checkpoint_weights(two, 2)) <= 1e-5
    rows_one = update_rows(one)
    rows_two = update_rows(two)
    assert all(r["perf/micro_batches"] == 1 for r in rows_one)
    assert all(r["perf/micro_batches"] > 1 for r in rows_two)
    assert rows_one[0]["perf/padding_frac"] > 0 and rows_two[0]["perf/padding_frac"] == 0.0
    assert rows_two[0]["perf/token_imbalance_after"] <= rows_two[0]["perf/token_imbalance_before"]
    assert rows_two[-1]["actor/pg_loss"] == pytest.approx(rows_one[-1]["actor/pg_loss"], abs=1e-5)


def _zero3_partition_everything(tmp: Path) -> Path:
    """configs/deepspeed/zero3.json with every parameter partitioned (persistence threshold 0), as a 7B model's are:
    the default threshold leaves every tiny-model tensor but the embedding whole, which hides the collectives."""
    config = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp / "zero3-partitioned.json"
    path.write_text(json.dumps(config))
    return path


def test_zero3_two_processes_with_unequal_lengths_finishes(tmp_path, model_dir):
    """Issue 19's repro: 2 processes, ZeRO-3 with everything partitioned, responses that stop at different lengths
    on each rank (warm-started model), LM-head chunks of 4 tokens (unequal chunk counts per rank) and a validation
    set of 3 prompts (unequal shards). Before the fix gloo aborted at the first step ("Received data size doesn't
    match expected size")."""
    ds = _zero3_partition_everything(tmp_path)
    run = _train(
        tmp_path,
        "z3",
        model_dir,
        "trainer.max_steps=2",
        f"trainer.deepspeed={ds}",
        "trainer.logprob_chunk_size=4",
        "data.val_limit=3",
        "rollout.max_new_tokens=24",
        nproc=2,
    )
    rows = metrics_rows(run)
    train_rows = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert train_rows[0]["response_length/max"] > train_rows[0]["response_length/mean"]  # unequal lengths
    assert "val/accuracy" in rows[0] and "val/accuracy" in rows[-1]
    assert all(r["actor/skipped"] == 0.0 for r in train_rows)


def test_zero3_two_processes_text_model_finishes(tmp_path):
    """The second repro: math_tiny after its warm start (responses of different lengths), 2 processes, ZeRO-3; with
    packed token-budget micro-batches and rows balanced between the processes (issue 15)."""
    ds = _zero3_partition_everything(tmp_path)
    out = tmp_path / "math-z3"
    run_cli(
        "train", str(REPO / "configs/math_tiny.yaml"), f"trainer.output_dir={out}",
        f"model.path={tmp_path / 'tiny-text'}", f"trainer.deepspeed={ds}", "trainer.max_steps=2", "trainer.save_every=0", "warmstart.steps=20",
        "rollout.prompts_per_round=2", "rollout.max_new_tokens=16", "data.val_limit=3", "data.train_limit=20",
        "trainer.num_threads=1", "trainer.progress=false", "trainer.tensorboard=false", "trainer.logprob_chunk_size=4",
        "trainer.packing=true", "trainer.max_tokens_per_micro_batch=160", "trainer.val_every=0",
        cwd=tmp_path, nproc=2,
    )  # fmt: skip
    rows = update_rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["perf/padding_frac"] == 0.0 and r["actor/skipped"] == 0.0 for r in rows)


def test_text_math_run(tmp_path):
    """math_tiny: a text-only Qwen2 on the MATH samples, built on the fly; checkpoint loads as a causal LM. With
    the KL term and its reference offloaded to host memory (moved in for its pass each round)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "math"
    run_cli(
        "train",
        str(REPO / "configs/math_tiny.yaml"),
        f"trainer.output_dir={out}",
        f"model.path={tmp_path / 'tiny-text'}",
        "trainer.max_steps=2",
        "trainer.save_every=0",
        "warmstart.steps=3",
        "rollout.prompts_per_round=2",
        "rollout.max_new_tokens=8",
        "data.val_limit=2",
        "data.train_limit=20",
        "trainer.num_threads=1",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "algorithm.kl_coef=0.05",
        "model.ref_offload=true",
        cwd=tmp_path,
        timeout=600,
    )
    rows = update_rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    # the reference is the warm-started policy (RL step 0), not the checkpoint on disk
    assert rows[0]["actor/kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert all(math.isfinite(r["actor/kl_ref"]) and r["actor/kl_ref"] >= 0 for r in rows)
    assert all(math.isfinite(r["actor/entropy"]) and r["response_length/mean"] > 0 for r in rows)
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "checkpoint-2")
    assert model.config.model_type == "qwen2"
