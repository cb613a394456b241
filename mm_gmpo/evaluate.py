"""`mm-gmpo eval`: pass@k (unbiased, from n samples) and avg@n of a model (hub id or folder) on one or more
benchmarks; per-item JSONL with every sample and its verdict, summary.json and a table.

``--data paper-math`` evaluates the official GMPO evaluation suite (``official:aime``, ``official:amc``,
``official:math``, ``official:minerva``, ``official:olympiad_bench``) with the paper's protocol as the default
(:mod:`mm_gmpo.paper_eval`: Qwen-Math prompt, greedy, one sample, 3000 new tokens, 4096 tokens of context, the
official grader); explicit flags override it."""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from mm_gmpo.errors import UserError

log = logging.getLogger(__name__)
BENCHMARKS = ["paper-math", "geometry3k:test", "math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench"]
GRADERS = ("auto", "lenient", "official", "easyr1")  # auto, then reward.graders.EXTRACTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id or local folder (e.g. a run's checkpoint)")
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        help=f"dataset specs: {', '.join(BENCHMARKS)}, jsonl:PATH, parquet:PATH, hf:ORG/NAME[:SPLIT]",
    )
    parser.add_argument(
        "--n", type=int, default=1, help="samples per problem (pass@k and avg@n are computed from them)"
    )
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[1],
        help="pass@k for each k (1 <= k <= n; unbiased estimator), e.g. 1 4 16",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1: off)")
    parser.add_argument("--max-new-tokens", type=int, default=3000, help="response tokens at most")
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="prompt + response tokens at most (vLLM's max_model_len; with hf each prompt's new tokens are capped "
        "to fit); default 4096 for the official suite's sets (paper-math), else no limit but the model's",
    )
    parser.add_argument(
        "--stop-tokens",
        nargs="+",
        default=None,
        help="the tokens that end a response, for every set (as rollout.stop_tokens); default: for the official "
        "suite's sets the model's end-of-sequence tokens only (what the official evaluation's vLLM stops at: "
        "Qwen2.5-Math base <|endoftext|>), for the others <|im_end|> and <|endoftext|>",
    )
    parser.add_argument(
        "--grader",
        choices=GRADERS,
        default="auto",
        help="auto: the official grader (boxed_reward_fn) for the official suite's sets, the lenient verifier for "
        "the others; lenient, official or easyr1 (as reward.extraction): that one for every set",
    )
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument(
        "--template", default="", help="prompt template (default: geo3k for Geometry3K, else qwen_math)"
    )
    parser.add_argument("--show-choices", action="store_true", help="list multiple-choice options in the prompt")
    parser.add_argument("--limit", type=int, default=0, help="first N problems of each set (0: all)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch")
    parser.add_argument("--source", choices=["auto", "local", "hub"], default="auto")
    parser.add_argument("--local-dir", default="", help="local data root (default: data/sample of a source checkout)")
    parser.add_argument(
        "--min-pixels", type=int, default=None, help="image pixel budget, lower bound (default: the checkpoint's)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="image pixel budget, upper bound (default: the checkpoint's own, i.e. what it was trained with)",
    )
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument(
        "--attn-implementation", default="auto", help="auto: flash_attention_2 when importable, else sdpa"
    )
    for column in ("prompt", "answer", "image", "choices"):
        parser.add_argument(
            f"--{column}-key", default="", help=f"{column} column of jsonl/parquet/hf data (as data.{column}_key)"
        )
    parser.add_argument("--output", default="", help="folder for items-<set>.jsonl and summary.json")
    parser.add_argument("--seed", type=int, default=0)


def check_arguments(args: argparse.Namespace) -> list[int]:
    """The sorted distinct ks; raises :class:`UserError` naming the flag (before any model loads)."""

    if args.n < 1:
        raise UserError(f"--n {args.n}: needs at least 1 sample per problem")
    ks = sorted(set(args.k))
    if ks[0] < 1 or ks[-1] > args.n:
        raise UserError(f"--k {' '.join(map(str, args.k))}: every k must be between 1 and --n {args.n}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise UserError(f"--temperature {args.temperature} must be a finite number >= 0 (0: greedy)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if args.output:  # before any sampling: a folder that cannot be written would lose the whole evaluation
        from mm_gmpo.paths import writable_dir

        writable_dir(args.output, "--output")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UserError(f"--temperature {args.temperature} must be >= 0 and --top-p {args.top_p} in (0, 1]")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} must be at least 1")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise UserError(f"--max-model-len {args.max_model_len} must be at least 2 (a prompt token and a response one)")
    if args.n > 1 and args.temperature == 0:
        log.warning("--n %d with --temperature 0: greedy samples are identical, pass@k = pass@1", args.n)
    return ks


def check_sizes(args: argparse.Namespace, sizes: dict[str, int]) -> None:
    """Before any model loads: no data set may be empty (it would score 0.0 and pull the average down), and one
    generation batch (``--batch-size`` prompts x ``--n`` rows of up to ``--max-new-tokens``) must fit in memory
    (:mod:`mm_gmpo.rollout.memory`)."""
    from mm_gmpo.rollout.memory import memory_problem

    empty = [spec for spec, size in sizes.items() if size == 0]
    if empty:
        raise UserError(f"--data {' '.join(empty)}: no problems to evaluate (an empty set would score 0.0)")
    batch = args.n * min(args.batch_size, max(sizes.values(), default=0))  # rows sampled at once
    problem = memory_problem(batch, args.max_new_tokens)
    if problem:
        raise UserError(f"--n {args.n}: one batch of {problem}; lower --n, --batch-size or --max-new-tokens")


def check_device_memory(args: argparse.Namespace, rows: int, device) -> None:
    """Before the model loads on a GPU: the KV cache and next-token scores of one batch of ``rows`` sequences of
    ``--max-new-tokens`` must fit the device's free memory (:mod:`mm_gmpo.rollout.memory`). A model whose config
    cannot be read here is left to the model loader to report."""
    import torch
    from transformers import AutoConfig

    from mm_gmpo.models.loading import resolve_dtype
    from mm_gmpo.rollout.memory import device_memory_problem, kv_bytes_per_token

    try:
        config = AutoConfig.from_pretrained(args.model)
    except Exception:  # noqa: BLE001 (load_model gives the one-line error for a bad or missing model)
        return
    kv = kv_bytes_per_token(config, resolve_dtype(args.dtype).itemsize)
    vocab = getattr(getattr(config, "text_config", None) or config, "vocab_size", None) or 0
    if kv is None:
        return
    free, _ = torch.cuda.mem_get_info(device)
    problem = device_memory_problem(rows, args.max_new_tokens, kv_per_token=kv, vocab_size=int(vocab), available=free)
    if problem:
        raise UserError(f"--n {args.n}: one batch of {problem}; lower --n, --batch-size or --max-new-tokens")


def run(args: argparse.Namespace) -> int:
    from mm_gmpo.config import RolloutConfig
    from mm_gmpo.data import build_prompts, load_examples
    from mm_gmpo.data.generic import ColumnKeys
    from mm_gmpo.data.loaders import expand_specs, is_official
    from mm_gmpo.models import check_model_path, load_model, load_processor
    from mm_gmpo.rollout import RolloutEngine
    from mm_gmpo.rollout.batching import STOP_TOKENS
    from mm_gmpo.trainer.dist import local_device
    from mm_gmpo.trainer.passk import summarize_samples

    ks = check_arguments(args)
    check_model_path(args.model, "--model")  # a missing/empty folder or a file: one line, before anything loads
    specs = expand_specs(args.data)
    # every data set is read before anything loads: a bad spec fails before any set is evaluated
    keys = ColumnKeys(args.prompt_key, args.answer_key, args.image_key, args.choices_key)
    example_sets = {
        spec: load_examples(
            spec, source=args.source, local_dir=args.local_dir or None, split_limit=args.limit or None, keys=keys
        )[0]
        for spec in specs
    }
    check_sizes(args, {spec: len(examples) for spec, examples in example_sets.items()})
    contexts = {spec: context_length(spec, args.max_model_len) for spec in specs}
    device = local_device()
    if device.type == "cuda" and args.backend == "hf":  # vLLM pages its cache and bounds it itself
        check_device_memory(args, args.n * min(args.batch_size, max(map(len, example_sets.values()))), device)
    processor = load_processor(args.model, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    stops = {spec: stop_tokens(spec, args.stop_tokens, args.model, processor) for spec in specs}
    pixels = _pixel_budget(processor)
    prompt_sets = {}
    for spec, examples in example_sets.items():
        template = args.template or ("geo3k" if spec.startswith("geometry3k") else "qwen_math")
        prompts, stats = build_prompts(
            examples,
            processor,
            template=template,
            show_choices=args.show_choices,
            max_prompt_length=1 << 20,
            min_pixels=pixels[0],
            max_pixels=pixels[1],
        )
        budgets = response_budgets(prompts, stats.prompt_tokens, args.max_new_tokens, contexts[spec])
        prompt_sets[spec] = (template, prompts, budgets)
    model = load_model(args.model, args.dtype, args.attn_implementation).to(device).eval()
    engine_context = max(contexts.values()) if all(contexts.values()) else None
    engine = RolloutEngine(
        args.backend, model, processor, config=RolloutConfig(backend=args.backend), max_model_len=engine_context
    )
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    with _Graders() as graders:
        for spec, (template, prompts, budgets) in prompt_sets.items():
            start = time.perf_counter()
            grader = args.grader if args.grader != "auto" else ("official" if is_official(spec) else "lenient")
            verifier = graders.get(grader)
            errors = (verifier.errors, verifier.timeouts)
            result = evaluate_with_budgets(
                engine,
                prompts,
                budgets,
                verifier,
                n=args.n,
                temperature=args.temperature,
                top_p=args.top_p,
                batch_size=args.batch_size,
                seed=args.seed,
                stop_tokens=stops[spec],
            )
            finish = [r for item in result.items for r in item["finish_reasons"]]
            summary[spec] = {
                "pass@1": result.accuracy,
                **summarize_samples([item["verdicts"] for item in result.items], ks),
                "problems": result.count,
                "mean_length": result.length_sum / max(result.count, 1),
                "truncated_frac": sum(r == "length" for r in finish) / max(len(finish), 1),
                "template": template,
                "grader": grader,
                "grader_errors": verifier.errors - errors[0],  # responses the grader failed on (scored 0)
                "grader_timeouts": verifier.timeouts - errors[1],  # responses over the pool's time bound (0)
                "max_model_len": contexts[spec],
                "stop_tokens": list(stops[spec]) if stops[spec] else list(STOP_TOKENS),
                "seconds": time.perf_counter() - start,
            }
            if out_dir:
                name = spec.replace(":", "_").replace("/", "_")
                with (out_dir / f"items-{name}.jsonl").open("w") as f:
                    for item in result.items:
                        f.write(json.dumps(item) + "\n")
    scores = ["pass@1", *(f"pass@{k}" for k in ks if k != 1), f"avg@{args.n}"]
    if summary:
        summary["average"] = {name: sum(v[name] for v in summary.values()) / len(summary) for name in scores}
    if out_dir:
        record = {
            "model": args.model,
            "data": specs,
            "source": args.source,
            "local_dir": args.local_dir,
            "limit": args.limit,
            "sampling": {
                "n": args.n,
                "k": ks,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "top_k": 0,
                "max_new_tokens": args.max_new_tokens,
                "max_model_len": engine_context,
                "seed": args.seed,
            },
            "backend": args.backend,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(device),
            "min_pixels": pixels[0],
            "max_pixels": pixels[1],
            **summary,  # one entry per dataset spec, and "average"
        }
        (out_dir / "summary.json").write_text(json.dumps(record, indent=1))
    print(format_table(summary, scores))
    return 0


def context_length(spec: str, flag: int | None) -> int | None:
    """Prompt + response tokens allowed for ``spec``: ``--max-model-len`` when given, else the official protocol's
    4096 for the official suite's sets and no limit (None) for the others."""
    from mm_gmpo.data.loaders import is_official
    from mm_gmpo.paper_eval import OFFICIAL_MAX_MODEL_LEN

    if flag is not None:
        return flag
    return OFFICIAL_MAX_MODEL_LEN if is_official(spec) else None


def stop_tokens(spec: str, flag: list[str] | None, model: str, processor) -> tuple[str, ...] | None:
    """The tokens that end ``spec``'s responses (``SamplingParams.stop_tokens``; None: <|im_end|> and
    <|endoftext|>): ``--stop-tokens`` when given, else the model's end-of-sequence tokens for the official suite's
    sets (:func:`~mm_gmpo.paper_eval.model_stop_tokens`), else None. An unknown token: one line, exit 2."""
    from mm_gmpo.data.loaders import is_official
    from mm_gmpo.paper_eval import model_stop_tokens
    from mm_gmpo.rollout.batching import stop_token_ids

    if flag is not None:
        chosen = tuple(flag)
    elif is_official(spec):
        chosen = model_stop_tokens(model, processor)
    else:
        return None
    try:
        stop_token_ids(processor, chosen)
    except UserError as exc:
        raise UserError(str(exc).replace("rollout.stop_tokens=", "--stop-tokens ")) from exc
    return chosen


def response_budgets(prompts: list, prompt_tokens: list[int], max_new_tokens: int, context: int | None) -> list[int]:
    """New tokens each prompt may generate: ``max_new_tokens``, less where prompt + response would pass
    ``context`` (as vLLM stops a sequence at ``max_model_len``). A prompt that leaves no room raises
    :class:`UserError` naming its set and row (vLLM refuses such a prompt too)."""

    if context is None:
        return [max_new_tokens] * len(prompts)
    budgets = []
    for prompt, length in zip(prompts, prompt_tokens, strict=True):
        if length >= context:
            example = prompt.example
            raise UserError(
                f"{example.source} row {example.id}: its prompt has {length} tokens, no room for a response under "
                f"--max-model-len {context}"
            )
        budgets.append(min(max_new_tokens, context - length))
    return budgets


def evaluate_with_budgets(engine, prompts, budgets, verifier, **sampling):
    """:func:`~mm_gmpo.trainer.evaluation.evaluate_prompts` once per distinct response budget (in practice one:
    every prompt of the official suite leaves the full 3000 tokens under 4096), items back in prompt order."""
    from mm_gmpo.trainer.evaluation import EvalResult, evaluate_prompts

    total, placed = EvalResult(), {}
    for budget in sorted(set(budgets), reverse=True):
        picked = [i for i, b in enumerate(budgets) if b == budget]
        part = evaluate_prompts(
            engine,
            [prompts[i] for i in picked],
            verifier,
            max_new_tokens=budget,
            format_kind="boxed",
            **sampling,
        )
        total.correct += part.correct
        total.formatted += part.formatted
        total.length_sum += part.length_sum
        total.count += part.count
        for i, item in zip(picked, part.items, strict=True):
            if "golds" in prompts[i].example.meta:  # the official suite's golds, as its grader compares them
                item["golds"] = prompts[i].example.meta["golds"]
            placed[i] = item
    total.items = [placed[i] for i in sorted(placed)]
    return total


class _Graders:
    """The verifier pools of a run, one per grader used (``reward.extraction`` names), started on first use."""

    def __init__(self):
        self.pools = {}

    def get(self, grader: str):
        from mm_gmpo.paper_eval import OFFICIAL_GRADE_TIMEOUT
        from mm_gmpo.reward import VerifierPool

        if grader not in self.pools:
            timeout = OFFICIAL_GRADE_TIMEOUT if grader == "official" else 1.0
            self.pools[grader] = VerifierPool(workers=2, timeout=timeout, extraction=grader)
        return self.pools[grader]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for pool in self.pools.values():
            pool.close()


def format_table(summary: dict[str, dict], scores: list[str]) -> str:
    """One line per data set (and the average): the scores in percent, then the number of problems."""
    lines = [f"{'benchmark':<22}" + "".join(f"{name:>10}" for name in scores) + f"{'problems':>10}"]
    for spec, row in summary.items():
        values = "".join(f"{100 * row[name]:>10.1f}" for name in scores)
        lines.append(f"{spec:<22}{values}{row.get('problems', ''):>10}")
    return "\n".join(lines)


def _pixel_budget(processor) -> tuple[int, int]:
    """(min, max) pixels per image of the processor (the checkpoint's own unless overridden); text models: the
    defaults, unused."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    return int(size.get("shortest_edge", 3136)), int(size.get("longest_edge", 1003520))
