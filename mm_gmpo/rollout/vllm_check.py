"""End-to-end check of the vLLM backend on a tiny Qwen2.5-VL (run by scripts/check_vllm.sh in its own venv).

Builds a tiny model (head_dim 64, as vLLM's CPU attention needs), samples image+text prompts through
:class:`~mm_gmpo.rollout.engine.RolloutEngine` with ``backend="vllm"``, checks the log-prob parity with
:func:`~mm_gmpo.rollout.logprobs.policy_logprobs`, changes the training weights, syncs them, and checks that
vLLM now samples from the changed model (parity again, and greedy tokens equal to HF's). Prints one line per
check and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def _prompts(processor):
    from mm_gmpo.types import Example, Prompt

    rng = np.random.default_rng(0)
    specs = [("Find x.", [(56, 56)]), ("Find the area.", [(112, 84)]), ("What is 2+3?", [])]
    out = []
    for text, sizes in specs:
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
        templated = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        out.append(Prompt(templated, images, Example(id=text, problem=text, answer="5")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args(argv)

    from mm_gmpo.models import TinyModelSpec, load_model, load_processor, make_tiny_model
    from mm_gmpo.rollout import RolloutEngine, SamplingParams, measure_logprob_parity

    failures = 0

    def report(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(TinyModelSpec(hidden=128, heads=2, kv_heads=2, intermediate=256), f"{tmp}/tiny-vl")
        processor = load_processor(path)
        model = load_model(path, "float32")
        prompts = _prompts(processor)
        start = time.perf_counter()
        engine = RolloutEngine("vllm", model, processor)
        print(f"engine started in {time.perf_counter() - start:.1f} s", flush=True)

        for temperature in (1.0, 0.7):
            sampling = SamplingParams(temperature=temperature, max_new_tokens=args.max_new_tokens, seed=1)
            batch = engine.generate(prompts, 2, sampling)
            r = measure_logprob_parity(model, batch, temperature=temperature, tolerance=args.tolerance)
            report(
                f"parity T={temperature} (images 56x56, 112x84, none; n=2)",
                r.ok and r.num_tokens > 0,
                f"max abs diff {r.max_abs_diff:.2e} mean {r.mean_abs_diff:.2e} over {r.num_tokens} tokens",
            )
            report("groups", batch.group_index.tolist() == [0, 0, 1, 1, 2, 2], str(batch.group_index.tolist()))
            vision = {processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>")}
            sampled = set(batch.response_ids[batch.response_mask].tolist())
            report("no placeholder sampled", not (sampled & vision), f"{len(sampled)} distinct tokens")
            print(f"  metrics: {engine.metrics(batch)}", flush=True)

        # change the training weights, sync, and check vLLM follows
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        stale = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens))
        r = measure_logprob_parity(model, stale, temperature=1.0, tolerance=args.tolerance)
        report(
            "changed weights are seen as a mismatch before the sync", not r.ok, f"max abs diff {r.max_abs_diff:.2e}"
        )
        start = time.perf_counter()
        engine.sync_weights(model)
        sync_s = time.perf_counter() - start
        batch = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens))
        r = measure_logprob_parity(model, batch, temperature=1.0, tolerance=args.tolerance)
        report("parity after weight sync", r.ok, f"max abs diff {r.max_abs_diff:.2e} (sync {sync_s:.2f} s)")
        greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
        v = engine.generate(prompts, 1, greedy)
        h = RolloutEngine("hf", model, processor).generate(prompts, 1, greedy)
        report("greedy tokens equal HF after sync", torch.equal(v.input_ids, h.input_ids), f"{v.response_text[0]!r}")
    print("vLLM check: " + ("PASSED" if not failures else f"{failures} FAILED"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
