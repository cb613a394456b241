"""The sampler/trainer mismatch and what the rollout importance correction does with it, side by side.

    python scripts/bench/rollout_is.py [--backend hf|vllm] [--prompts 8] [--n 4] [--max-new-tokens 64]
                                       [--logit-scale 20] [--threads 2]

The trainer's policy is a tiny random Qwen2 in fp32; the sampler computes in bf16: with ``--backend hf`` a bf16
copy of the policy samples through the HF backend, with ``--backend vllm`` a vLLM engine in bf16 (vLLM must be
importable: the CPU build works). A random tiny model is nearly uniform over its 152k tokens, unlike a trained
one; ``--logit-scale`` multiplies its logits (the final norm's gain) so that its next-token distributions are
peaked the way a real model's are (1: as built). The mean entropy of the sampled distributions is printed. Prints the mismatch metrics the trainer logs (``rollout/logprob_diff_*``,
``rollout/is_weight_*``, ``rollout/is_clipped_frac`` / ``is_masked_frac``) at each level, and for each setting
of the correction how much it changes the GMPO and GRPO policy gradient of the batch (relative to the
uncorrected one; synthetic rewards: the fraction of even token ids in the response). One JSON line at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch

from mm_gmpo.algorithms import RolloutIS, corrected, get_policy_loss, group_advantages
from mm_gmpo.algorithms.rollout_is import rollout_is_metrics, rollout_is_stats
from mm_gmpo.config import RolloutConfig
from mm_gmpo.models import TinyModelSpec, load_model, load_processor, make_tiny_model
from mm_gmpo.rollout import RolloutEngine, SamplingParams, parity_report
from mm_gmpo.testing.batches import sample_prompts
from mm_gmpo.trainer.forward import policy_logprobs

LEVELS = ("token", "sequence", "geometric")


def sample(args, model, processor):
    """A batch sampled in bf16 (its sampler log-probs are the bf16 ones)."""
    prompts = sample_prompts(processor, args.prompts, with_images=False)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.backend == "vllm":
        engine = RolloutEngine("vllm", model, processor, config=RolloutConfig(backend="vllm"), dtype=torch.bfloat16)
        try:
            return engine.generate(prompts, args.n, sampling)
        finally:
            engine.close()
    sampler = copy.deepcopy(model).to(torch.bfloat16)
    return RolloutEngine("hf", sampler, processor).generate(prompts, args.n, sampling)


def gradient(model, batch, loss_fn, advantages, old, **extra) -> torch.Tensor:
    """The policy gradient of the batch with respect to the LM head (flattened)."""
    model.zero_grad(set_to_none=True)
    logprobs, _ = policy_logprobs(model, batch, temperature=1.0)
    loss, _ = loss_fn(logprobs, old, advantages, batch.response_mask, **extra)
    loss.backward()
    return model.get_output_embeddings().weight.grad.detach().flatten().clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--logit-scale", type=float, default=12.0)
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(TinyModelSpec(kind="qwen2", hidden=128, heads=4, layers=2), Path(tmp) / "tiny")
        model = load_model(folder, "float32")
        with torch.no_grad():  # the final norm's gain scales the logits (the LM head is tied to the embeddings)
            model.model.norm.weight.mul_(args.logit_scale)
        if args.backend == "vllm":  # the engine loads the checkpoint: save the scaled weights first
            model.save_pretrained(folder)
        processor = load_processor(folder)
        batch = sample(args, model, processor)
    with torch.no_grad():
        trainer, entropy = policy_logprobs(model, batch, temperature=1.0, with_entropy=True)  # fp32: pi_old
    report = parity_report(trainer, batch, temperature=1.0, mean_tolerance=0.05, p99_tolerance=0.5)
    out = {"backend": args.backend, "tokens": report.num_tokens, "sequences": report.num_sequences}
    out["entropy_mean"] = float(entropy[batch.response_mask].mean())
    out.update(report.metrics())
    print(
        f"{args.backend} bf16 sampler vs fp32 trainer, {report.num_sequences} responses, {report.num_tokens} tokens, "
        f"mean entropy {out['entropy_mean']:.2f} nats"
    )
    for key, value in report.metrics().items():
        print(f"  {key:34s} {value:.4g}")
    for level in LEVELS:
        for mode in ("truncate", "mask"):
            settings = RolloutIS(mode, level, args.threshold)
            metrics = rollout_is_metrics(rollout_is_stats(trainer, batch.sampler_logprobs, batch.response_mask, settings), settings)  # fmt: skip
            print(
                f"  level {level:9s} mode {mode:8s} "
                + "  ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in metrics.items())
            )
            out.update({f"{level}/{mode}/{k.split('/')[1]}": v for k, v in metrics.items()})
    ids = batch.response_ids.masked_fill(~batch.response_mask, 1)
    even = ((ids % 2 == 0) & batch.response_mask).sum(1) / batch.response_mask.sum(1).clamp(min=1)
    advantages = group_advantages(even.float(), args.n)
    for name in ("gmpo", "grpo"):
        plain = get_policy_loss(name)
        base = gradient(model, batch, plain, advantages, trainer)
        for level in LEVELS:
            for mode in ("truncate", "mask"):
                fixed = corrected(plain, RolloutIS(mode, level, args.threshold))
                grad = gradient(model, batch, fixed, advantages, trainer, sampler_logprobs=batch.sampler_logprobs)
                change = float((grad - base).norm() / base.norm().clamp(min=1e-30))
                out[f"{name}/{level}/{mode}/grad_change"] = change
                print(f"  {name} {level:9s} {mode:8s} the correction changes the gradient by {100 * change:.2f}%")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
