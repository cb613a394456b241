"""GPU smoke test: a few training steps of the recipes' shapes with random models of realistic size.

    bash scripts/gpu_smoke.sh                 # on a CUDA machine with a CUDA torch and this project installed
    python scripts/gpu_smoke.py --tiny        # the same cases with tiny models on a CPU (what CI runs)

Cases: the Geometry3K recipe's shape (a random Qwen2.5-VL of the 3B model's public config, real Qwen vocabulary, image
prompts from the shipped samples), the same with a random Qwen3-VL of the 2B model's public config (16-pixel patches,
DeepStack, interleaved M-RoPE; the Qwen3-VL recipe's settings), and the text-math recipe's shape (a random
Qwen2.5-Math-1.5B-sized Qwen2 on the MATH samples), each in bf16 with gradient checkpointing, HF rollouts, one
process; when DeepSpeed imports, the text case again under ZeRO-2 and the image cases (Qwen2.5-VL, Qwen3-VL) under
ZeRO-3 started by the DeepSpeed launcher as docs/gpu.md types it (`deepspeed --num_gpus N --module mm_gmpo train ...`,
N = the machine's GPUs; 2 processes on a CPU); when vLLM imports, the image case with the vLLM backend (the engine's
sleep after sampling, the weight sync and the wake, every round). Every case is a real `mm-gmpo train` run. Per case
and phase (rollout, old log-probs, update) it prints the peak GPU memory (torch.cuda.max_memory_allocated, from the
run's metrics) and tokens/s, then PASS, or FAIL with the phase that failed. Random models rarely stop, so responses
run to --max-new-tokens: that is the length under test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Public config values (hub config.json of Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-Math-1.5B).
QWEN2_5_VL_3B = dict(
    kind="qwen2_5_vl", hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vision_hidden=1280,
    vision_layers=32, vision_intermediate=3420, vision_heads=16, rope_theta=1e6,
)  # fmt: skip
QWEN2_5_MATH_1_5B = dict(kind="qwen2", hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, rope_theta=1e4)
# hub config.json of Qwen/Qwen3-VL-2B-Instruct (head_dim 128 = 2048 / 16; 2.1 B parameters)
QWEN3_VL_2B = dict(
    kind="qwen3_vl", hidden=2048, layers=28, heads=16, kv_heads=8, intermediate=6144, vision_hidden=1024,
    vision_layers=24, vision_intermediate=4096, vision_heads=16, deepstack="5,11,17", rope_theta=5e6,
)  # fmt: skip
REALISTIC = {"qwen2_5_vl": QWEN2_5_VL_3B, "qwen3_vl": QWEN3_VL_2B, "qwen2": QWEN2_5_MATH_1_5B}
TINY = {"qwen2_5_vl": dict(kind="qwen2_5_vl"), "qwen3_vl": dict(kind="qwen3_vl"), "qwen2": dict(kind="qwen2")}
VL_CONFIGS = {"qwen2_5_vl": "configs/geo3k_qwen2_5_vl_7b_gmpo.yaml", "qwen3_vl": "configs/geo3k_qwen3_vl_8b_gmpo.yaml"}
# vLLM's CPU attention needs a head size of 64: the tiny model of the vLLM case on a CPU
TINY_VLLM = {"qwen2_5_vl": dict(kind="qwen2_5_vl", hidden=128, heads=2, kv_heads=2, intermediate=256)}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # qwen2_5_vl, qwen3_vl or qwen2
    deepspeed: str = ""  # a DeepSpeed JSON, or none
    launcher_procs: int = 0  # > 0: started by the DeepSpeed launcher with this many processes
    backend: str = "hf"  # rollout backend


# Where a failure happened, read from the traceback: the innermost of these frames names the phase.
PHASES = [
    ("setup", ("Trainer.__init__", "build_policy", "build_actor", "build_updater", "ensure_model")),
    ("rollout", ("hf_generate", "def generate", "in generate")),
    ("old log-probs", ("no_grad_logprobs", "_old_and_ref_logprobs")),
    ("update", ("update_round", "optimizer_step", "in _step")),
    ("validation", ("validate", "evaluate_prompts")),
    ("checkpoint", ("save_checkpoint",)),
]


def build_model(sizes: dict, out: Path, dtype: str) -> None:
    import torch

    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    try:
        with torch.device(device):  # a 3B model initialised on the GPU in seconds, not on the CPU in minutes
            make_tiny_model(TinyModelSpec(**sizes), out)
    finally:
        torch.set_default_dtype(previous)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def case_overrides(case: Case, args, model: Path, out: Path) -> tuple[str, list[str]]:
    """The recipe config of the case, scaled to ``args`` (prompts, group size, lengths, steps)."""
    if case.kind in VL_CONFIGS:
        config = REPO / VL_CONFIGS[case.kind]
        data = ["data.train=geometry3k:train", "data.val=", "data.source=local", "reward.format=think_boxed"]
        if args.tiny:
            data += ["data.min_pixels=3136", "data.max_pixels=50176"]
    else:
        config = REPO / "configs/math_qwen2_5_math_7b_gmpo.yaml"
        data = ["data.train=math_lvl3to5", "data.val=", "data.source=local"]
    steps = args.steps * args.updates
    return str(config), [
        f"model.path={model}",
        f"model.dtype={args.dtype}",
        "model.gradient_checkpointing=true",
        *data,
        "data.train_limit=64",
        f"rollout.backend={case.backend}",
        f"rollout.n={args.n}",
        f"rollout.prompts_per_round={args.prompts * max(case.launcher_procs, 1)}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"trainer.output_dir={out}",
        f"trainer.deepspeed={case.deepspeed}",
        f"trainer.max_steps={steps}",
        f"trainer.updates_per_round={args.updates}",
        f"trainer.micro_batch_size={args.micro_batch_size}",
        f"trainer.save_every={steps}",
        "trainer.val_every=0",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "warmstart.steps=0",
        "reward.workers=2",
    ]


def failing_phase(stderr: str) -> str:
    """The phase whose frame comes last in the traceback (the innermost one); setup when none shows."""
    last = {phase: max(stderr.rfind(m) for m in markers) for phase, markers in PHASES}
    phase = max(last, key=last.get)
    return phase if last[phase] >= 0 else "setup"


def report(run: Path, rows_per_round: int) -> list[str]:
    """Per phase: peak GiB and tokens/s (generated tokens for the rollout, prompt + response tokens for the
    passes over the batch), the mean over the run's rounds."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds = {r["step"]: r for r in rows if "perf/rollout_s" in r}.values()  # one row per step, same round values
    lines = []
    for phase, key in (("rollout", "rollout"), ("old log-probs", "old_logprobs"), ("update", "update")):
        seconds = sum(r[f"perf/{key}_s"] for r in rounds)
        if key == "rollout":
            tokens = sum(r["response_length/mean"] * rows_per_round for r in rounds)
        else:
            tokens = sum(r["perf/round_tokens"] for r in rounds)
        peaks = [r.get(f"perf/{key}_peak_gib") for r in rounds]
        peak = f"{max(peaks):.2f} GiB" if peaks and None not in peaks else "n/a (no GPU)"
        lines.append(f"  {phase:<14} peak {peak:>14}   {tokens / max(seconds, 1e-9):>10.0f} tokens/s")
    return lines


def command(case: Case, config: str, overrides: list[str]) -> list[str]:
    """`python -m mm_gmpo train ...`, or the DeepSpeed launcher line of docs/gpu.md for a launched case."""
    if not case.launcher_procs:
        return [sys.executable, "-m", "mm_gmpo", "train", config, *overrides]
    from mm_gmpo.trainer.dist import free_port

    launcher = Path(sys.executable).with_name("deepspeed")
    return [
        str(launcher), "--num_gpus", str(case.launcher_procs), "--master_port", str(free_port()),
        "--module", "mm_gmpo", "train", config, *overrides,
    ]  # fmt: skip


def run_case(case: Case, args, work: Path) -> bool:
    name, kind = case.name, case.kind
    tiny_vllm = args.tiny and case.backend == "vllm"
    if args.tiny:
        sizes = (TINY_VLLM if tiny_vllm else TINY)[kind]
    else:
        sizes = REALISTIC[kind]
    model = work / f"model-{kind}{'-vllm' if tiny_vllm else ''}"
    if not model.exists():
        build_model(sizes, model, args.dtype)
    out = work / name
    config, overrides = case_overrides(case, args, model, out)
    rows_per_round = args.prompts * max(case.launcher_procs, 1) * args.n
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if case.backend == "vllm":
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in the trainer's process
    start = time.perf_counter()
    result = subprocess.run(command(case, config, overrides), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-12:])
        print(f"{name}: FAIL in {failing_phase(result.stderr)} after {seconds:.0f} s\n{tail}", flush=True)
        return False
    print(
        f"{name}: {args.steps} rounds x {args.updates} updates, {rows_per_round} responses per round, {seconds:.0f} s"
    )
    print("\n".join(report(out, rows_per_round)), flush=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU check of this script and the path)")
    parser.add_argument("--steps", type=int, default=3, help="rollout rounds per case")
    parser.add_argument("--updates", type=int, default=2, help="optimizer steps per round")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="", help="default: bfloat16 on a GPU, float32 with --tiny on a CPU")
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="run only these cases (vl, vl-qwen3, text, text-zero2, vl-zero3-launcher, vl-qwen3-zero3-launcher, vl-vllm)",
    )
    parser.add_argument("--work", default="", help="folder for the models and runs (default: a temporary one)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print("no CUDA device: run on a GPU machine, or pass --tiny for the CPU check\nGPU smoke: FAIL")
        return 1
    args.dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    cases = [Case("vl", "qwen2_5_vl"), Case("vl-qwen3", "qwen3_vl"), Case("text", "qwen2")]
    if importlib.util.find_spec("deepspeed") is not None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 2
        cases.append(Case("text-zero2", "qwen2", str(REPO / "configs/deepspeed/zero2.json")))
        cases.append(Case("vl-zero3-launcher", "qwen2_5_vl", str(REPO / "configs/deepspeed/zero3.json"), gpus))
        cases.append(Case("vl-qwen3-zero3-launcher", "qwen3_vl", str(REPO / "configs/deepspeed/zero3.json"), gpus))
    else:
        print("deepspeed is not importable: the ZeRO-2 and ZeRO-3 launcher cases are skipped")
    if importlib.util.find_spec("vllm") is not None:
        cases.append(Case("vl-vllm", "qwen2_5_vl", backend="vllm"))
    else:
        print("vllm is not importable: the vLLM case is skipped (pip install -e .[gpu])")
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"GPU smoke on {device}: torch {torch.__version__}, {args.dtype}, {'tiny' if args.tiny else 'realistic'} models"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        results = [run_case(case, args, work) for case in cases]
    ok = all(results)
    print(f"GPU smoke: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
