"""End-to-end check of the vLLM backend on tiny Qwen2.5-VL and Qwen3-VL models (run by scripts/check_vllm.sh in its
own venv).

Single process: builds a tiny model (head_dim 64, as vLLM's CPU attention needs), samples image+text prompts
through :class:`~mm_gmpo.rollout.engine.RolloutEngine` with ``backend="vllm"``, checks the log-prob parity with
:func:`~mm_gmpo.trainer.forward.policy_logprobs`, changes the training weights, puts the engine to sleep, syncs
in small buckets (staged wake), and checks that vLLM now samples from the changed model (parity again, greedy
tokens equal to HF's); then the same for a LoRA policy, whose merged weights are synced.

Multi-process (:func:`multi_process_check`): the trainer itself under torchrun, 2 processes, DeepSpeed ZeRO-3
with every parameter partitioned, one vLLM engine per process through the external launcher (or one engine over
both with tensor parallelism 2), bucketed sync; the sampler/trainer log-prob gap of every round (measured on every
process, its maximum logged) must stay within the tolerance after each sync.

Qwen3-VL and Qwen3 (:func:`qwen3_check`): a tiny Qwen3-VL (16-pixel patches, interleaved M-RoPE, DeepStack) and a
tiny Qwen3 text model (QK-norm, its thinking template) through the same single-process parity and bucketed sync,
then the 2-process ZeRO-3 trainer run; each prints one line starting ``qwen3-vl:`` / ``qwen3:`` and ending
``PASSED`` or ``FAILED``. ``--only qwen3-vl`` (or ``qwen3``) runs that part alone.

Prints one line per check and, last, ``vLLM check: PASSED`` or the number of failures (exit code 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mm_gmpo.trainer.dist import free_port

REPO = Path(__file__).resolve().parents[1]  # the checkout (configs/ beside mm_gmpo/)


def _prompts(processor, vision: bool = True):
    """Two image prompts of different sizes and a text-only one; three text prompts for a text model."""
    from mm_gmpo.types import Example, Prompt

    rng = np.random.default_rng(0)
    specs = [("Find x.", [(56, 56)]), ("Find the area.", [(112, 84)]), ("What is 2+3?", [])]
    if not vision:
        specs = [("Find x if 2x = 10.", []), ("What is the area of a 2 by 3 rectangle?", []), ("What is 2+3?", [])]
    out = []
    for text, sizes in specs:
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}] if vision else text
        templated = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        out.append(Prompt(templated, images, Example(id=text, problem=text, answer="5")))
    return out


class Report:
    def __init__(self):
        self.failures = 0

    def __call__(self, name: str, ok: bool, detail: str) -> bool:
        self.failures += 0 if ok else 1
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return ok


def _perturb(model: torch.nn.Module, scale: float = 0.02) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def _check_parity(report: Report, name: str, model, batch, temperature: float, args, detail: str = ""):
    """Reports whether the trainer's log-probs of ``batch`` match the sampler's (over at least one token)."""
    from mm_gmpo.trainer.parity import measure_logprob_parity

    r = measure_logprob_parity(model, batch, temperature=temperature, tolerance=args.tolerance)
    report(
        name,
        r.ok and r.num_tokens > 0,
        f"max abs diff {r.max_abs_diff:.2e} mean {r.mean_abs_diff:.2e} over {r.num_tokens} tokens{detail}",
    )
    return r


def _sync_and_check(engine, model, prompts, report: Report, args, label: str) -> None:
    """Stale weights are seen as a mismatch; sleep, sync in small buckets (staged wake); parity again."""
    from mm_gmpo.rollout import SamplingParams
    from mm_gmpo.trainer.parity import measure_logprob_parity

    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens)
    stale = engine.generate(prompts, 2, sampling)
    r = measure_logprob_parity(model, stale, temperature=1.0, tolerance=args.tolerance)
    report(f"{label}: changed weights are a mismatch before the sync", not r.ok, f"max abs diff {r.max_abs_diff:.2e}")
    vllm = engine._vllm
    engine.sleep()
    report(f"{label}: asleep after sleep()", vllm.llm.llm_engine.is_sleeping(), f"tags {sorted(vllm.asleep)}")
    metrics = engine.sync_weights(model)
    stats = vllm.last_sync_stats
    report(
        f"{label}: bucketed sync, awake after it",
        stats.buckets > 1 and not vllm.llm.llm_engine.is_sleeping() and not vllm.asleep,
        f"{metrics['perf/weight_sync_mb']:.1f} MB in {stats.buckets} buckets of <= {args.bucket_mb} MB "
        f"(largest {metrics['perf/weight_sync_max_bucket_mb']:.1f} MB: one tensor) "
        f"in {metrics['perf/weight_sync_s']:.2f} s",
    )
    batch = engine.generate(prompts, 2, sampling)
    r = measure_logprob_parity(model, batch, temperature=1.0, tolerance=args.tolerance)
    report(f"{label}: parity after the sync", r.ok, f"max abs diff {r.max_abs_diff:.2e} over {r.num_tokens} tokens")


class _HostBuffer:
    """Stands in for vLLM's device-side request tables (``UvaBackedTensor``, ``StagedWriteTensor``), which need CUDA
    pinned memory: a numpy array with the same ``np``/``stage_write`` surface."""

    def __init__(self, size, dtype, device=None, **_):
        self.np = np.zeros(size, dtype=torch.empty(0, dtype=dtype).numpy().dtype)

    def stage_write(self, row: int, start: int, values) -> None:
        values = list(values)
        self.np[row, start : start + len(values)] = values

    def copy_to_uva(self, n=None):
        return self.np


def gpu_runner_accepts(rollout, report: Report) -> None:
    """The requests our backend sends, through the request-state code of vLLM's GPU model runner (V2, the default
    on CUDA; this CPU runs the V1 runner, which has none of these limits): sampling states, logit bias and allowed
    ids, bad words. Only the device tables are replaced (host arrays); every check of V2's ``add_request`` runs."""
    from types import SimpleNamespace
    from unittest import mock

    try:
        from vllm.v1.worker.gpu.sample import bad_words, logit_bias, states
    except ImportError as exc:  # a vLLM without the V2 runner
        report("GPU runner (V2) accepts our requests", False, f"cannot import its sampler states: {exc}")
        return
    from mm_gmpo.rollout import SamplingParams
    from mm_gmpo.rollout.batching import stop_token_ids

    rows = 4
    patches = [mock.patch.object(m, name, _HostBuffer) for m in (bad_words, logit_bias, states)
               for name in ("UvaBackedTensor", "StagedWriteTensor") if hasattr(m, name)]  # fmt: skip
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        request_state = SimpleNamespace(
            prompt_len=SimpleNamespace(np=np.full(rows, 100, dtype=np.int32)), max_num_reqs=rows, device="cpu"
        )
        tables = [logit_bias.LogitBiasState(None, request_state), bad_words.BadWordsState(None, request_state)]
        sampling_states = states.SamplingStates(rows, rollout.vocab_size)
        stops = stop_token_ids(rollout.tokenizer)
        problems = []
        for i, (temperature, top_p) in enumerate([(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)]):
            sampling = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=8, seed=1)
            params = rollout._sampling_params(1 if temperature == 0 else 2, sampling, i, stops)
            try:
                sampling_states.add_request(i, params)
                for table in tables:
                    table.add_request(i, params)
            except ValueError as exc:
                problems.append(f"T={temperature} top_p={top_p}: {exc}")
        old_style = rollout._vllm.SamplingParams(allowed_token_ids=list(range(len(rollout.tokenizer) - 300)))
        try:
            tables[0].add_request(rows - 1, old_style)
            refused = False
        except ValueError:
            refused = True
    report(
        "GPU runner (V2) accepts our requests",
        not problems and refused,
        "; ".join(problems)
        or f"{len(rollout.logit_bias)} logit-bias ids (table {logit_bias.MAX_NUM_LOGIT_BIAS_TOKENS}), "
        f"{len(stops)} stop ids; an allowed_token_ids request over the vocabulary is refused: {refused}",
    )


def single_process_check(path: str, args, report: Report) -> None:
    import peft

    from mm_gmpo.config import RolloutConfig
    from mm_gmpo.models import load_model, load_processor
    from mm_gmpo.rollout import RolloutEngine, SamplingParams

    processor = load_processor(path)
    model = load_model(path, "float32")
    prompts = _prompts(processor)
    config = RolloutConfig(backend="vllm", vllm_sync_bucket_mb=args.bucket_mb)
    start = time.perf_counter()
    engine = RolloutEngine("vllm", model, processor, config=config)
    print(f"engine started in {time.perf_counter() - start:.1f} s", flush=True)
    gpu_runner_accepts(engine._vllm, report)

    for temperature in (1.0, 0.7):
        sampling = SamplingParams(temperature=temperature, max_new_tokens=args.max_new_tokens, seed=1)
        batch = engine.generate(prompts, 2, sampling)
        _check_parity(
            report, f"parity T={temperature} (images 56x56, 112x84, none; n=2)", model, batch, temperature, args
        )
        report("groups", batch.group_index.tolist() == [0, 0, 1, 1, 2, 2], str(batch.group_index.tolist()))
        vision = {processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>")}
        sampled = set(batch.response_ids[batch.response_mask].tolist())
        report("no placeholder sampled", not (sampled & vision), f"{len(sampled)} distinct tokens")
        print(f"  metrics: {engine.metrics(batch)}", flush=True)
    truncated = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=args.max_new_tokens, seed=1)
    name = "parity T=0.7 top_k=20 top_p=0.9 (the trainer truncates as the sampler)"
    _check_parity(report, name, model, engine.generate(prompts, 2, truncated), 0.7, args)

    _perturb(model)
    _sync_and_check(engine, model, prompts, report, args, "full weights")
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    v = engine.generate(prompts, 1, greedy)
    h = RolloutEngine("hf", model, processor).generate(prompts, 1, greedy)
    report("greedy tokens equal HF after sync", torch.equal(v.input_ids, h.input_ids), f"{v.response_text[0]!r}")

    # LoRA: the engine serves the base model; after a sync it must sample from base + B @ A * scaling
    lora_model = peft.get_peft_model(
        model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "gate_proj", "qkv"])
    )
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    _sync_and_check(engine, lora_model, prompts, report, args, "LoRA (merged weights)")
    engine.close()


# The Qwen3 parts: (label, tiny kind, config of the 2-process run, its extra overrides)
QWEN3_CHECKS = {
    "qwen3-vl": ("qwen3_vl", "configs/geo3k_tiny.yaml", ()),
    "qwen3": ("qwen3", "configs/math_tiny.yaml", ("data.template=qwen3_thinking",)),
}


def qwen3_check(label: str, tmp: Path, args, report: Report) -> None:
    """A Qwen3 model end to end: generation (images of 2 sizes and a text-only prompt for Qwen3-VL), parity with
    the trainer's log-probs (DeepStack and the interleaved rope index on both sides for Qwen3-VL), a bucketed sync
    of changed weights (vLLM's own Qwen3 weight names), parity again; then the trainer under torchrun with 2
    processes and ZeRO-3. Prints one line ``<label>: ... PASSED`` (or ``FAILED``)."""
    from mm_gmpo.config import RolloutConfig
    from mm_gmpo.models import TinyModelSpec, load_model, load_processor, make_tiny_model
    from mm_gmpo.rollout import RolloutEngine, SamplingParams

    kind, config, extra = QWEN3_CHECKS[label]
    vision = kind != "qwen3"
    failures = report.failures
    tmp = tmp / label  # its own run folders beside the Qwen2.5-VL ones
    tmp.mkdir()
    spec = TinyModelSpec(kind=kind, hidden=128, heads=2, kv_heads=2, intermediate=256)
    path = str(make_tiny_model(spec, tmp / f"tiny-{label}"))
    processor = load_processor(path, min_pixels=3136) if vision else load_processor(path)
    model = load_model(path, "float32")
    prompts = _prompts(processor, vision)
    engine = RolloutEngine(
        "vllm", model, processor, config=RolloutConfig(backend="vllm", vllm_sync_bucket_mb=args.bucket_mb)
    )
    batch = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=1))
    grids = sorted({tuple(g) for g in batch.image_grid_thw.tolist()}) if vision else []
    name = f"{label} parity before any sync ({'images 56x56, 112x84, none' if vision else '3 text prompts'}; n=2)"
    r = _check_parity(report, name, model, batch, 1.0, args, detail=f", image grids {grids}" if vision else "")
    _perturb(model)
    _sync_and_check(engine, model, prompts, report, args, f"{label} full weights")
    single = r.max_abs_diff
    engine.close()
    multi_mb = (
        None
        if args.skip_multi
        else multi_process_check(path, tmp, args, report, tensor_parallel=1, lora=False, config=config, extra=extra)
    )
    ok = report.failures == failures
    runs = "single process" + ("" if multi_mb is None else " and 2 processes (ZeRO-3)")
    print(f"{label}: {runs}, parity {single:.2e} before and within {args.tolerance:g} after each sync: "
          + ("PASSED" if ok else "FAILED"), flush=True)  # fmt: skip


def _zero3_config(tmp: Path) -> Path:
    config = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition everything, as a 7B model is
    path = tmp / "zero3-partitioned.json"
    path.write_text(json.dumps(config))
    return path


def multi_process_check(
    path: str,
    tmp: Path,
    args,
    report: Report,
    *,
    tensor_parallel: int,
    lora: bool,
    full_mb: float = 0.0,
    config: str = "configs/geo3k_tiny.yaml",
    extra: tuple[str, ...] = (),
) -> float:
    """The trainer under torchrun (2 processes, ZeRO-3, vLLM); checks its logs and metrics. Returns the MB of the
    last sync (0.0 when the run failed). With tensor parallelism it also validates every round on 5 prompts
    (shares of 3 and 2, one padded), sampled and greedy: both members of the group then ask for their share at
    once and must each get their own responses back. With LoRA the engine sleeps at level 1 (keeps its weights),
    so after the first sync only the merged LoRA weights are sent: fewer than ``full_mb``."""
    run = tmp / f"run-tp{tensor_parallel}{'-lora' if lora else ''}"
    rounds = 3
    overrides = [
        f"model.path={path}", "model.tiny_if_missing=false", f"trainer.output_dir={run}",
        f"trainer.deepspeed={_zero3_config(tmp)}", "rollout.backend=vllm", f"rollout.vllm_sync_bucket_mb={args.bucket_mb}",
        f"rollout.vllm_tensor_parallel_size={tensor_parallel}", f"rollout.max_new_tokens={args.max_new_tokens}",
        "rollout.n=4", "rollout.prompts_per_round=4", "warmstart.steps=0",
        *([
            "data.val_limit=5", "trainer.val_every=1", "rollout.val_temperature=1.0", "rollout.val_n=2",
            "rollout.val_also_greedy=true",
        ] if tensor_parallel > 1 else ["data.val=", "trainer.val_every=0"]),
        f"trainer.max_steps={2 * rounds}", "trainer.updates_per_round=2", "trainer.save_every=0",
        "trainer.micro_batch_size=4", "trainer.num_threads=1", f"trainer.lr={1e-2 if lora else 1e-3}",
        f"rollout.preflight_mean_tolerance={args.tolerance / 10}", f"rollout.preflight_p99_tolerance={args.tolerance}",
        "algorithm.kl_coef=0.01", "model.ref_offload=true",
        # a random model's 8 tokens never earn the verifier's reward: a brevity bonus (by characters) varies within
        # every group, so the advantages are not all 0 and the policy moves
        "reward.function=mm_gmpo.reward.examples:correct_and_short", "reward.zero_truncated=false",
        f"model.lora.enabled={'true' if lora else 'false'}",
        f"rollout.vllm_sleep_level={1 if lora else 2}",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), "-m", "mm_gmpo", "train",
        str(REPO / config), *overrides,
    ]  # fmt: skip
    label = f"multi-process: 2 ranks, ZeRO-3 (all parameters partitioned), tensor parallel {tensor_parallel}" + (
        ", LoRA" if lora else ""
    )
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    seconds = time.perf_counter() - start
    log_text = result.stdout + result.stderr
    (tmp / f"{run.name}.log").write_text(log_text)
    ok = report(f"{run.name}: trainer ran", result.returncode == 0, f"exit {result.returncode} in {seconds:.0f} s")
    if not ok:
        print(log_text[-3000:], flush=True)
        print(f"{label}: FAILED", flush=True)
        return 0.0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds_rows = [row for row in rows if row.get("step", 0) % 2 == 1]
    engines = log_text.count("Using external launcher for distributed inference")
    ok &= report(f"{run.name}: one engine per process (external_launcher)", engines == 2, f"{engines} engines")
    diffs = [row["rollout/logprob_diff_max"] for row in rounds_rows]
    ok &= report(
        f"{run.name}: parity every round, max over both ranks (round 1: the engine's first sync; later: after a sync)",
        len(diffs) == rounds and max(diffs) <= args.tolerance,
        "max abs diff per round " + ", ".join(f"{d:.2e}" for d in diffs),
    )
    if tensor_parallel > 1:
        vals = [row for row in rows if "val/accuracy" in row]
        ok &= report(
            f"{run.name}: validation in tensor-parallel groups, every round and before the first",
            len(vals) == rounds + 1 and all("val/accuracy_greedy" in row for row in vals),
            f"{len(vals)} validations, accuracy " + ", ".join(f"{row['val/accuracy']:.2f}" for row in vals),
        )
    kl = rounds_rows[-1].get("actor/kl_ref", 0.0)
    ok &= report(f"{run.name}: the policy moved", kl > 1e-4, f"KL to the reference in the last round {kl:.2e}")
    last = rounds_rows[-1]
    gathered, bucket = last.get("perf/weight_sync_gathered_mb", float("inf")), last["perf/weight_sync_max_bucket_mb"]
    mb = last["perf/weight_sync_mb"]
    sizes = (
        f"{mb:.2f} MB in {last['perf/weight_sync_buckets']:.0f} buckets, at most {gathered:.2f} MB gathered at once"
    )
    if lora:
        ok &= report(
            f"{run.name}: after the first sync only the merged LoRA weights (ZeRO-3 gathered one bucket at a time)",
            # gathered counts the base and adapter tensors a merged weight is computed from: within the bucket size
            0 < mb < 0.5 * full_mb and gathered <= max(args.bucket_mb, bucket) + 1e-6,
            f"{sizes}, against {full_mb:.1f} MB for the whole model, {last['perf/weight_sync_s']:.2f} s",
        )
    else:
        ok &= report(
            f"{run.name}: bucketed sync, ZeRO-3 gathered one bucket at a time",
            last["perf/weight_sync_buckets"] > 1 and gathered <= bucket + 1e-6,
            f"{sizes} (largest bucket {bucket:.1f} MB), {last['perf/weight_sync_s']:.2f} s",
        )
    ok &= _check_sleep_wake(log_text, rounds, report, run.name)
    print(f"{label}, {rounds} rounds, parity max {max(diffs):.2e} <= {args.tolerance:g}: " + (
        "PASSED" if ok else "FAILED"
    ), flush=True)  # fmt: skip
    return mb if ok else 0.0


def _check_sleep_wake(log_text: str, rounds: int, report: Report, name: str) -> bool:
    """vLLM's executor logs every sleep and every staged wake; per process: sleep, weights, KV cache, each round."""
    import re

    events: dict[str, list[str]] = {}
    pattern = re.compile(r"pid=(\d+)\).*?(fall asleep|wake up tags \['weights'\]|wake up tags \['kv_cache'\])")
    for pid, event in pattern.findall(log_text):
        events.setdefault(pid, []).append(event.split("'")[1] if "'" in event else "sleep")
    expected = ["sleep", "weights", "kv_cache"] * rounds
    ok = len(events) == 2 and all(seq == expected for seq in events.values())
    shown = "; ".join(f"pid {pid}: " + " ".join(seq[:3]) + f" x{len(seq) // 3}" for pid, seq in events.items())
    return report(f"{name}: sleep, then wake weights / load / wake KV cache, every round", ok, shown or "no events")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--bucket-mb", type=int, default=1, help="weight-sync bucket (small: several buckets)")
    parser.add_argument("--timeout", type=int, default=1500, help="seconds per multi-process run")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-multi", action="store_true")
    parser.add_argument("--only", choices=["qwen2.5-vl", *QWEN3_CHECKS], help="run one model's checks alone")
    args = parser.parse_args(argv)

    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "qwen2.5-vl"):
            spec = TinyModelSpec(hidden=128, heads=2, kv_heads=2, intermediate=256)
            path = str(make_tiny_model(spec, tmp / "tiny-vl"))
            if not args.skip_single:
                single_process_check(path, args, report)
            if not args.skip_multi:
                full_mb = multi_process_check(path, tmp, args, report, tensor_parallel=1, lora=False)
                multi_process_check(path, tmp, args, report, tensor_parallel=2, lora=True, full_mb=full_mb or 150.0)
        for label in QWEN3_CHECKS:
            if args.only in (None, label):
                qwen3_check(label, tmp, args, report)
    print("vLLM check: " + ("PASSED" if not report.failures else f"{report.failures} FAILED"), flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
