"""Padding waste of the update: micro-batches of a fixed row count (``before``, each trimmed to its own rows; the
JSON also gives the computed tokens had every one been as wide as the round's longest prompt + response) against
token-budget micro-batches packed without padding (``after``), and the same budget padded but trimmed to each
micro-batch's rows (``budget_padded``), side by side.

    python scripts/bench/padding.py [--rows 64] [--median 64] [--budget 1024] [--repeats 2] [--threads 2]

Workload: MATH prompts from the shipped samples (left-padded, 100-400 tokens) and response lengths drawn
log-normal (median ``--median`` tokens, sigma 0.85, cut to [8, 8 x median]: the longest is about 8x the median,
the long tail of a reasoning run). The model is a random Qwen2 with a toy vocabulary (width 256, 4 layers), so the
backbone, which pays for padding, dominates as it does at 7B (the LM head runs on real tokens only either way).
Each repetition runs one update round (2 optimizer steps) of each, alternating A B C A B C on the same rows with
the same threads. Prints one JSON line. On a CPU, sdpa runs a packed micro-batch with a dense block-diagonal mask
(its attention costs (tokens)^2); flash-attention's variable-length kernels on a GPU do not pay that.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mm_gmpo.algorithms import get_policy_loss
from mm_gmpo.data import build_prompts, load_examples
from mm_gmpo.models import TinyModelSpec, load_model, load_processor, make_tiny_model, tokenizer_of
from mm_gmpo.models.toy_tokenizer import train_toy_tokenizer
from mm_gmpo.rollout.batching import assemble_batch, encode_prompts, stop_token_ids, suppressed_token_ids
from mm_gmpo.rollout.types import SamplingParams
from mm_gmpo.trainer.actor import Actor
from mm_gmpo.trainer.batch import TrainBatch
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.engine import TorchUpdater
from mm_gmpo.trainer.plan import padding_stats, plan_round
from mm_gmpo.trainer.policy import PolicyLogprobs
from mm_gmpo.trainer.update import UpdateSettings


def response_lengths(rows: int, median: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(8 * median, max(8, round(median * math.exp(rng.gauss(0.0, 0.85))))) for _ in range(rows)]


def workload(folder: Path, rows: int, median: int, seed: int) -> TrainBatch:
    processor = load_processor(folder)
    tokenizer = tokenizer_of(processor)
    examples, _ = load_examples("math_lvl3to5", split_limit=rows)
    prompts, _ = build_prompts(
        examples, processor, template="qwen_math", show_choices=False, max_prompt_length=4096, min_pixels=3136,
        max_pixels=12544,
    )  # fmt: skip
    rng = random.Random(seed)
    end = stop_token_ids(tokenizer)[0]
    responses = [[rng.randrange(32, 250) for _ in range(n - 1)] + [end] for n in response_lengths(rows, median, seed)]
    rollout = assemble_batch(
        processor, encode_prompts(processor, prompts), prompts, 1, responses, [[0.0] * len(r) for r in responses],
        ["stop"] * rows, suppressed=suppressed_token_ids(tokenizer, len(tokenizer)), sampling=SamplingParams(),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    advantages = torch.randn(rows, generator=generator)
    old = (torch.randn(rollout.response_mask.shape, generator=generator) * 0.05 - 5.0) * rollout.response_mask
    return TrainBatch(rollout, advantages, old, None)


def timed_round(folder: Path, batch: TrainBatch, settings: UpdateSettings) -> float:
    model = load_model(folder, "float32")
    updater = TorchUpdater(
        DistContext(), PolicyLogprobs(model), lr=1e-6, betas=[0.9, 0.95], weight_decay=0.0, grad_clip=1.0, warmup=0
    )
    actor = Actor(updater, get_policy_loss("gmpo"), settings)
    start = time.perf_counter()
    actor.update(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="responses in the round")
    parser.add_argument("--median", type=int, default=64, help="median response length (tokens)")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="today's batching: rows per micro-batch")
    parser.add_argument("--budget", type=int, default=1024, help="tokens per micro-batch (the new batching)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        examples, _ = load_examples("math_lvl3to5", split_limit=args.rows)
        tokenizer_dir = train_toy_tokenizer(Path(tmp) / "tok", tasks=(), extra_texts=[e.problem for e in examples])
        spec = TinyModelSpec(
            kind="qwen2", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=768, tokenizer=str(tokenizer_dir)
        )
        folder = make_tiny_model(spec, Path(tmp) / "model")
        batch = workload(folder, args.rows, args.median, args.seed)
        common = dict(temperature=1.0, chunk_size=512, updates_per_round=2, sequences_per_step=args.rows // 2)
        before = UpdateSettings(**common, micro_batch_size=args.micro_batch_size)
        padded = UpdateSettings(
            **common, micro_batch_size=args.micro_batch_size, max_tokens_per_micro_batch=args.budget
        )
        after = UpdateSettings(**{**padded.__dict__, "packing": True})
        arms = {"before": before, "after": after, "budget_padded": padded}
        ratios, micro = {}, {}
        for name, settings in arms.items():
            computed = real = 0.0
            plan = plan_round(batch.rollout, settings).steps
            for step in plan:
                c, r = padding_stats(batch.rollout, step, packed=settings.packing)
                computed, real = computed + c, real + r
            ratios[name], micro[name] = computed / real, sum(len(step) for step in plan)
        untrimmed = [
            padding_stats(batch.rollout, step, trim=False) for step in plan_round(batch.rollout, before).steps
        ]
        ratios["untrimmed"] = sum(c for c, _ in untrimmed) / sum(r for _, r in untrimmed)
        times = {name: [] for name in arms}
        timed_round(folder, batch, after)  # warm-up (allocator, kernels)
        for _ in range(args.repeats):
            for name, settings in arms.items():
                times[name].append(timed_round(folder, batch, settings))
    lengths = batch.rollout.response_mask.sum(dim=1).tolist()
    update = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "rows": args.rows,
        "response_length_median": statistics.median(lengths),
        "response_length_max": max(lengths),
        "prompt_tokens_mean": float(batch.rollout.attention_mask.sum() - sum(lengths)) / args.rows,
        "threads": args.threads,
        "budget": args.budget,
        "micro_batches_before": micro["before"],
        "micro_batches_after": micro["after"],
        "computed_over_real_tokens_untrimmed": round(ratios["untrimmed"], 3),
        "computed_over_real_tokens_before": round(ratios["before"], 3),
        "computed_over_real_tokens_after": round(ratios["after"], 3),
        "computed_over_real_tokens_budget_padded": round(ratios["budget_padded"], 3),
        "update_s_before": round(update["before"], 3),
        "update_s_after": round(update["after"], 3),
        "update_s_budget_padded": round(update["budget_padded"], 3),
        "speedup": round(update["before"] / update["after"], 2),
        "speedup_budget_padded": round(update["before"] / update["budget_padded"], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
