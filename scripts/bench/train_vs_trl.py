"""Training throughput of mm-gmpo's GMPO trainer against TRL's, side by side in one run.

    python scripts/bench/train_vs_trl.py [--prompts 2 --group 8 --max-new-tokens 32 --steps 5 --threads 2]

Both sides train the same tiny random Qwen2.5-VL (built once with ``mm_gmpo.models.make_tiny_model`` and loaded by
each side with ``from_pretrained``) on the same Geometry3K image+text prompts in the same order (no shuffling),
with the same group size, prompts per step, response limit, sampling (temperature 1, no top-k/top-p), learning
rate, AdamW betas, gradient clipping, fp32, no gradient checkpointing, no KL, HF ``generate`` (TRL:
``use_vllm=False``), one generation and one optimizer step per step, all rows in one forward/backward, and the same
reward (this project's verifier in one worker process, called from a TRL reward function on the TRL side).

- ours: ``mm_gmpo.config.load_config`` + ``mm_gmpo.trainer.trainer.Trainer(cfg).fit()`` with ``algorithm.loss=gmpo``
  and ``trainer.updates_per_round=1`` (exactly on-policy, so no old-log-prob pass), as a user would run it.
- TRL 1.16: ``trl.experimental.gmpo.GMPOTrainer`` (default; ``--trl-trainer grpo`` for ``GRPOTrainer``), with
  ``generation_batch_size`` = per-device batch = prompts x group, ``steps_per_generation=1``, ``num_iterations=1``,
  ``gradient_accumulation_steps=1``.

Honest alternation: each side runs in its own spawned process and is held at every step boundary (ours: the call
to ``trainer.rollout.generate``; TRL: ``TrainerCallback.on_step_begin``) until this process says go, so exactly one
side computes at any time, A B A B ...; a step's time runs from go to the next boundary (everything the loop does
in between: sampling, reward, log-probs, backward, optimizer, logging). Peak RSS is each side's own ``VmHWM``
(the verifier worker, the same on both sides, is not included). The first ``--warmup`` steps of each side are not
measured. The last line printed is one JSON object: the ratio of the median samples/s of the two sides, and
also the median over rounds of each round's step-time ratio (steps of one round ran back to back).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

SIDES = ("ours", "trl")
TEMPLATE = "geo3k"
MIN_PIXELS, MAX_PIXELS = 3136, 50176  # 224x224 at most: up to 64 vision tokens per diagram
MAX_PROMPT_LENGTH = 1024
REWARD = dict(accuracy_weight=0.9, format_weight=0.1, format_kind="think_boxed", zero_truncated=True)
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
STEP_TIMEOUT_S = 900.0


@dataclass
class Settings:
    """What both sides share (written into the JSON line)."""

    model_dir: str
    work_dir: str
    data: str  # dataset spec of mm_gmpo.data.load_examples
    prompts: int  # prompts per step
    group: int  # completions per prompt
    max_new_tokens: int
    threads: int  # torch CPU threads in each side's process
    lr: float
    warmup: int  # unmeasured steps per side
    steps: int  # measured steps per side
    trl_trainer: str  # gmpo | grpo
    seed: int = 0

    @property
    def rows(self) -> int:
        return self.prompts * self.group

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps + 1  # +1: the loop must reach one more boundary after the last step


class StopBench(Exception):
    """Raised at a step boundary when the parent is done: leaves the training loop without saving."""


class Pacer:
    """Holds a training loop at each step boundary until the parent says go; reports the step that just ended."""

    def __init__(self, conn):
        self.conn = conn
        self.started: float | None = None
        self.extra: dict = {}  # facts about the running step (tokens), sent with its time

    def boundary(self) -> None:
        now = time.perf_counter()
        if self.started is None:
            self.conn.send({"event": "ready", "rss_mib": _status_mib("VmRSS")})
        else:
            self.conn.send({"event": "step", "seconds": now - self.started, **self.extra})
        command = self.conn.recv()
        if command == "quit":
            raise StopBench
        self.extra = {}
        self.started = time.perf_counter()


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: peak resident set; VmRSS: current) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------------- ours


def ours_overrides(s: Settings) -> list[str]:
    """The ``key=value`` overrides (over the config defaults) that give our trainer the shared settings."""
    overrides = {
        "model.path": s.model_dir,
        "model.dtype": "float32",
        "data.train": s.data,
        "data.val": "",
        "data.template": TEMPLATE,
        "data.show_choices": True,
        "data.min_pixels": MIN_PIXELS,
        "data.max_pixels": MAX_PIXELS,
        "data.max_prompt_length": MAX_PROMPT_LENGTH,
        "data.shuffle": False,
        "rollout.backend": "hf",
        "rollout.n": s.group,
        "rollout.prompts_per_round": s.prompts,
        "rollout.temperature": 1.0,
        "rollout.top_p": 1.0,
        "rollout.top_k": 0,
        "rollout.max_new_tokens": s.max_new_tokens,
        "algorithm.loss": "gmpo",
        "algorithm.kl_coef": 0.0,
        "reward.workers": 1,
        "reward.format": REWARD["format_kind"],
        "trainer.output_dir": str(Path(s.work_dir) / "ours"),
        "trainer.max_steps": s.total_steps,
        "trainer.updates_per_round": 1,
        "trainer.micro_batch_size": s.rows,
        "trainer.lr": s.lr,
        "trainer.betas": list(BETAS),
        "trainer.grad_clip": GRAD_CLIP,
        "trainer.num_threads": s.threads,
        "trainer.seed": s.seed,
        "trainer.tensorboard": False,
        "trainer.progress": False,
        "warmstart.steps": 0,
    }
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def run_ours(s: Settings, pacer: Pacer) -> None:
    from mm_gmpo.config import load_config
    from mm_gmpo.trainer.trainer import Trainer

    cfg = load_config(None, ours_overrides(s))
    trainer = Trainer(cfg)
    generate = trainer.rollout.generate

    def paced_generate(prompts, n, sampling):
        pacer.boundary()
        batch = generate(prompts, n, sampling)
        pacer.extra = {"completion_tokens": int(batch.response_mask.sum()), "tokens": int(batch.attention_mask.sum())}
        return batch

    trainer.rollout.generate = paced_generate
    try:
        trainer.fit()
    finally:
        trainer.close()


# ---------------------------------------------------------------------------------------------------- TRL


def _trl_dataset(s: Settings, processor):
    """The prompts our loader builds (same rows, same order, same length filter) as TRL's conversational rows."""
    from datasets import Dataset

    from mm_gmpo.data import build_prompts, load_examples
    from mm_gmpo.data.prompts import build_messages

    examples, _ = load_examples(s.data)
    prompts, _ = build_prompts(
        examples,
        processor,
        template=TEMPLATE,
        show_choices=True,
        max_prompt_length=MAX_PROMPT_LENGTH,
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )
    rows = []
    for prompt in prompts:
        messages = build_messages(prompt.example, TEMPLATE, show_choices=True)
        for message in messages:  # TRL inserts the images of the "images" column at the image parts
            if isinstance(message["content"], list):
                message["content"] = [{"type": "image"} if p["type"] == "image" else p for p in message["content"]]
        ex = prompt.example
        rows.append({"prompt": messages, "images": ex.images, "answer": ex.answer, "choices": ex.choices or []})
    return Dataset.from_list(rows)


def run_trl(s: Settings, pacer: Pacer) -> None:
    import torch

    torch.set_num_threads(s.threads)
    from transformers import TrainerCallback

    from mm_gmpo.models import load_processor
    from mm_gmpo.reward import VerifierPool, compute_rewards
    from mm_gmpo.rollout.batching import stop_token_ids, suppressed_token_ids

    if s.trl_trainer == "gmpo":
        from trl.experimental.gmpo import GMPOConfig as TRLConfig
        from trl.experimental.gmpo import GMPOTrainer as TRLTrainer
    else:
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer as TRLTrainer

    processor = load_processor(s.model_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    tokenizer = processor.tokenizer
    stops = set(stop_token_ids(tokenizer))
    pool = VerifierPool(workers=1)

    def reward(completions, completion_ids, answer, choices, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        truncated = [not ids or ids[-1] not in stops for ids in completion_ids]
        choices = [c or None for c in choices]
        return compute_rewards(texts, answer, choices=choices, truncated=truncated, pool=pool, **REWARD).total

    class Paced(TrainerCallback):
        tokens_seen = 0.0  # TRL logs prompt+completion tokens cumulatively

        def on_step_begin(self, args, state, control, **kwargs):
            pacer.boundary()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                tokens = float(logs["num_tokens"]) - self.tokens_seen
                self.tokens_seen = float(logs["num_tokens"])
                pacer.extra = {"completion_tokens": float(logs["completions/mean_length"]) * s.rows, "tokens": tokens}

    # the same tokens our sampler suppresses (vision placeholders: TRL already suppresses <|image_pad|>)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(s.model_dir).get_text_config().vocab_size
    args = TRLConfig(
        output_dir=str(Path(s.work_dir) / "trl"),
        use_cpu=True,
        seed=s.seed,
        max_steps=s.total_steps,
        per_device_train_batch_size=s.rows,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=s.group,
        max_completion_length=s.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"suppress_tokens": suppressed_token_ids(tokenizer, vocab).tolist()},
        use_vllm=False,
        beta=0.0,
        learning_rate=s.lr,
        lr_scheduler_type="constant",
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        max_grad_norm=GRAD_CLIP,
        weight_decay=0.0,
        bf16=False,
        gradient_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32},
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = TRLTrainer(
        model=s.model_dir,
        reward_funcs=reward,
        args=args,
        train_dataset=_trl_dataset(s, processor),
        processing_class=processor,
        callbacks=[Paced()],
    )
    if (args.generation_batch_size, args.steps_per_generation, trainer.num_iterations) != (s.rows, 1, 1):
        raise RuntimeError("TRL would not do exactly one generation and one optimizer step per step")
    try:
        trainer.train()
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------------- driver


def _worker(side: str, settings: Settings, conn) -> None:
    log_file = open(Path(settings.work_dir) / f"{side}.log", "w")  # noqa: SIM115 - lives as long as the process
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        (run_ours if side == "ours" else run_trl)(settings, Pacer(conn))
    except StopBench:
        pass
    except BaseException:
        conn.send({"event": "error", "traceback": traceback.format_exc()})
        return
    conn.send({"event": "done", "peak_rss_mib": _status_mib("VmHWM")})


class Side:
    """One side's process and pipe."""

    def __init__(self, name: str, settings: Settings):
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(name, settings, child), daemon=False)
        self.log = Path(settings.work_dir) / f"{name}.log"
        self.step_s: list[float] = []
        self.completion_tokens: list[float] = []  # per measured step
        self.tokens: list[float] = []  # prompt + completion tokens per measured step

    def receive(self, expected: str) -> dict:
        if not self.conn.poll(STEP_TIMEOUT_S):
            raise RuntimeError(f"{self.name}: no answer in {STEP_TIMEOUT_S:.0f} s (log: {self.log})")
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.name}: the process died (log: {self.log})") from None
        if message["event"] == "error":
            raise RuntimeError(f"{self.name} failed:\n{message['traceback']}")
        if message["event"] != expected:
            raise RuntimeError(f"{self.name}: expected {expected}, got {message}")
        return message


def run_bench(s: Settings) -> dict:
    from mm_gmpo.models import TinyModelSpec, make_tiny_model

    make_tiny_model(TinyModelSpec(kind="qwen2_5_vl"), s.model_dir)
    os.environ.update(OMP_NUM_THREADS=str(s.threads), MKL_NUM_THREADS=str(s.threads), TOKENIZERS_PARALLELISM="false")
    sides = {name: Side(name, s) for name in SIDES}
    ready_rss = {}
    try:
        for side in sides.values():  # one at a time: model loading does not overlap either
            side.process.start()
            ready_rss[side.name] = side.receive("ready")["rss_mib"]
        for step in range(s.warmup + s.steps):
            for side in sides.values():
                side.conn.send("go")
                message = side.receive("step")
                if step >= s.warmup:
                    side.step_s.append(message["seconds"])
                    side.completion_tokens.append(message.get("completion_tokens", float("nan")))
                    side.tokens.append(message.get("tokens", float("nan")))
                print(f"step {step + 1} {side.name}: {message['seconds']:.2f} s", file=sys.stderr, flush=True)
        peak = {}
        for side in sides.values():
            side.conn.send("quit")
            peak[side.name] = side.receive("done")["peak_rss_mib"]
            side.process.join(timeout=60)
    finally:
        for side in sides.values():
            if side.process.is_alive():
                side.process.terminate()
                side.process.join(timeout=10)
    return _summary(s, sides, peak, ready_rss)


def _summary(s: Settings, sides: dict[str, Side], peak: dict, ready_rss: dict) -> dict:
    import torch
    import transformers
    import trl

    rate = {name: s.rows / statistics.median(side.step_s) for name, side in sides.items()}
    # per round, the two steps ran back to back: their ratio shrugs off load that drifts over the run
    paired = [trl / ours for ours, trl in zip(sides["ours"].step_s, sides["trl"].step_s, strict=True)]
    trainer_name = {"gmpo": "trl.experimental.gmpo.GMPOTrainer", "grpo": "trl.GRPOTrainer (its default loss)"}
    settings = {k: v for k, v in asdict(s).items() if k not in ("model_dir", "work_dir")}
    return {
        "bench": "train_vs_trl",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ours_samples_per_s": round(rate["ours"], 3),
        "trl_samples_per_s": round(rate["trl"], 3),
        "ratio_ours_over_trl": round(rate["ours"] / rate["trl"], 2),
        "ratio_paired_median": round(statistics.median(paired), 2),  # median over rounds of TRL s / our s
        "ours_peak_rss_mib": round(peak["ours"], 1),
        "trl_peak_rss_mib": round(peak["trl"], 1),
        "ours_ready_rss_mib": round(ready_rss["ours"], 1),
        "trl_ready_rss_mib": round(ready_rss["trl"], 1),
        "ours_step_s": [round(t, 2) for t in sides["ours"].step_s],
        "trl_step_s": [round(t, 2) for t in sides["trl"].step_s],
        "ours_completion_tokens_per_step": statistics.median(sides["ours"].completion_tokens),
        "trl_completion_tokens_per_step": statistics.median(sides["trl"].completion_tokens),
        "ours_tokens_measured": sum(sides["ours"].tokens),  # prompt + completion tokens of the measured steps
        "trl_tokens_measured": sum(sides["trl"].tokens),
        "trl_trainer": trainer_name[s.trl_trainer],
        "settings": {**settings, "samples_per_step": s.rows, "template": TEMPLATE, "max_pixels": MAX_PIXELS},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }


def settings_from_args(args: argparse.Namespace, work: Path, **rest) -> Settings:
    """The settings of a parsed command line (--data, --prompts, --group, --max-new-tokens, --threads) and
    ``rest``, with the model and run folders under ``work``."""
    return Settings(
        model_dir=str(work / "model"),
        work_dir=str(work),
        data=args.data,
        prompts=args.prompts,
        group=args.group,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        **rest,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="geometry3k:train", help="dataset spec (mm_gmpo.data.load_examples)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each side's process")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per side")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per side")
    parser.add_argument("--trl-trainer", choices=["gmpo", "grpo"], default="gmpo")
    parser.add_argument("--work-dir", default="", help="keep the model, logs and run folders here (default: temp)")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_train_vs_trl_"))
    work.mkdir(parents=True, exist_ok=True)
    settings = settings_from_args(
        args, work, lr=args.lr, warmup=args.warmup, steps=args.steps, trl_trainer=args.trl_trainer
    )
    result = run_bench(settings)  # on failure the folder stays, with each side's log
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
