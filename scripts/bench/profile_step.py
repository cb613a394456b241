"""Where one training step of our trainer spends its time, on the tiny setting of ``train_vs_trl.py``.

    python scripts/bench/profile_step.py [--steps 3 --prompts 2 --group 8 --max-new-tokens 32 --threads 2]

Runs ``Trainer(cfg).fit()`` with the bench's settings (a tiny random Qwen2.5-VL, Geometry3K prompts, GMPO, one
update per round), skips the first (warm-up) step, then times ``--steps`` steps by stage with wall-clock wrappers
around the stages' public entry points and forward hooks on the model and its vision tower and decoder (this
script only; the library is not changed; no hook on the LM head, which would switch off its hand-written backward): sampling (vision tower, decoder, LM head, token sampling), reward, the update's forward (vision
tower, backbone, LM head + log-softmax), loss, backward (with the LM-head recomputation of its checkpointed
chunks), optimizer, and the rest. Prints a markdown table of seconds per step (mean over the measured steps),
then cProfile's top functions by own time over one more step (profiled apart: its overhead would inflate the
table), then one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import train_vs_trl as bench


class StageClock:
    """Accumulates wall time per stage; ``phase`` tells the model hooks which stage they run under."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.phase = "other"
        self.enabled = False
        self._starts: list[float] = []

    def wrap(self, name: str, fn, phase: str | None = None):
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            previous = self.phase
            self.phase = phase or previous
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.totals[name] += elapsed
                if phase is None:  # also by the stage it ran under (the LM-head chunks: forward or backward)
                    self.totals[f"{previous}: {name}"] += elapsed
                self.phase = previous

        return timed

    def hook(self, module, label: str) -> None:
        """Time ``module``'s forward calls as ``<phase>: <label>``."""

        def before(*_):
            self._starts.append(time.perf_counter())

        def after(*_):
            start = self._starts.pop()
            if self.enabled:
                self.totals[f"{self.phase}: {label}"] += time.perf_counter() - start

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def instrument(trainer, clock: StageClock) -> None:
    import mm_gmpo.rollout.hf as hf
    import mm_gmpo.trainer.forward as logprobs
    import mm_gmpo.trainer.trainer as trainer_module

    model = trainer.actor.hf_model
    clock.hook(model.model.visual, "vision tower")
    clock.hook(model.model.language_model, "decoder layers")
    # not on the LM head itself: a hooked head makes policy_logprobs take its slower autograd path
    clock.hook(model, "model forward")
    sample_call = hf.SampleStep.__call__
    hf.SampleStep.__call__ = lambda self, ids, scores: clock.wrap("token draw (SampleStep)", sample_call)(
        self, ids, scores
    )
    trainer.rollout.generate = clock.wrap("sampling", trainer.rollout.generate, "sampling")
    trainer_module.compute_rewards = clock.wrap("reward", trainer_module.compute_rewards, "reward")
    trainer.actor.updater.forward = clock.wrap("update forward", trainer.actor.updater.forward, "update forward")
    # the LM-head chunks: _chunk_stats (forward; also the no-grad passes) and the hand-written backward, or in
    # older versions the checkpointed _token_stats (its recomputation runs under the backward phase)
    for name in ("_chunk_stats", "_token_stats"):
        if hasattr(logprobs, name):
            setattr(logprobs, name, clock.wrap("LM head + log-softmax chunks", getattr(logprobs, name)))
            break
    if hasattr(logprobs, "_SampledTokenStats"):
        function = logprobs._SampledTokenStats
        function.backward = staticmethod(clock.wrap("LM head + log-softmax chunks", function.backward))
    trainer.actor.loss_fn = clock.wrap("loss", trainer.actor.loss_fn, "loss")
    trainer.actor.updater.backward = clock.wrap("backward", trainer.actor.updater.backward, "backward")
    trainer.actor.updater.step = clock.wrap("optimizer (clip + AdamW)", trainer.actor.updater.step, "optimizer")
    trainer.logger.log = clock.wrap("metrics log", trainer.logger.log, "metrics")


def table_rows(totals: dict[str, float], step_s: float) -> list[tuple[str, float]]:
    """(stage, seconds) in the order of the loop, with each stage's unattributed rest made explicit."""
    t = totals.get
    rows = [("step (wall)", step_s), ("sampling (hf generate)", t("sampling", 0.0))]
    parts = [
        ("  vision tower", t("sampling: vision tower", 0.0)),
        ("  decoder layers (prefill + decode)", t("sampling: decoder layers", 0.0)),
        (
            "  LM head (+ output glue)",
            t("sampling: model forward", 0.0) - t("sampling: vision tower", 0.0) - t("sampling: decoder layers", 0.0),
        ),
        ("  token draw (SampleStep)", t("sampling: token draw (SampleStep)", 0.0)),
    ]
    rows += parts + [("  rest of generate", t("sampling", 0.0) - sum(v for _, v in parts))]
    rows.append(("reward (verifier worker)", t("reward", 0.0)))
    update = t("update forward", 0.0) + t("loss", 0.0) + t("backward", 0.0) + t("optimizer (clip + AdamW)", 0.0)
    forward = t("update forward", 0.0)
    vision = t("update forward: vision tower", 0.0)
    backbone = t("update forward: decoder layers", 0.0)
    head = t("LM head + log-softmax chunks", 0.0) - t("backward: LM head + log-softmax chunks", 0.0)
    rows += [
        ("update", update),
        ("  forward: vision tower", vision),
        ("  forward: decoder layers", backbone),
        ("  forward: LM head + log-softmax", max(head, 0.0)),
        ("  forward: rest (embeddings, rope index)", forward - vision - backbone - max(head, 0.0)),
        ("  loss", t("loss", 0.0)),
        ("  backward", t("backward", 0.0)),
        ("    of which in the LM-head chunk function", t("backward: LM head + log-softmax chunks", 0.0)),
        ("  optimizer (clip + AdamW)", t("optimizer (clip + AdamW)", 0.0)),
        ("metrics log", t("metrics log", 0.0)),
    ]
    accounted = t("sampling", 0.0) + t("reward", 0.0) + update + t("metrics log", 0.0)
    rows.append(("rest of the loop (advantages, metrics)", step_s - accounted))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="geometry3k:train")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after one warm-up step)")
    parser.add_argument("--top", type=int, default=12, help="cProfile rows to print")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="profile_step_"))
    # args.steps + 1 steps: the last one under cProfile
    s = bench.settings_from_args(args, work, lr=1e-5, warmup=1, steps=args.steps + 1, trl_trainer="gmpo")
    from mm_gmpo.config import load_config
    from mm_gmpo.models import TinyModelSpec, make_tiny_model
    from mm_gmpo.trainer.trainer import Trainer

    make_tiny_model(TinyModelSpec(kind="qwen2_5_vl"), s.model_dir)
    trainer = Trainer(load_config(None, bench.ours_overrides(s)))
    clock, profiler = StageClock(), cProfile.Profile()
    instrument(trainer, clock)
    generate, boundaries = trainer.rollout.generate, []

    def at_boundary(prompts, n, sampling):
        boundaries.append(time.perf_counter())
        if len(boundaries) == 2:  # warm-up done: time the stages from here
            clock.enabled = True
        if len(boundaries) == args.steps + 2:
            clock.enabled = False
            profiler.enable()
        if len(boundaries) == args.steps + 3:
            profiler.disable()
            raise bench.StopBench
        return generate(prompts, n, sampling)

    trainer.rollout.generate = at_boundary
    try:
        trainer.fit()
    except bench.StopBench:
        pass
    finally:
        trainer.close()
        shutil.rmtree(work, ignore_errors=True)
    step_s = (boundaries[args.steps + 1] - boundaries[1]) / args.steps
    rows = table_rows({k: v / args.steps for k, v in clock.totals.items()}, step_s)
    print(f"| stage ({s.rows} samples x {s.max_new_tokens} new tokens, {s.threads} threads) | s/step | share |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name.replace('  ', '&nbsp;&nbsp;')} | {seconds:.3f} | {100 * seconds / step_s:.0f}% |")
    print()
    stats = pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime")
    stats.print_stats(args.top)
    print(
        json.dumps(
            {
                "bench": "profile_step",
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "step_s": round(step_s, 3),
                "stages_s": {name.strip(): round(seconds, 3) for name, seconds in rows},
                "settings": {
                    "samples": s.rows,
                    "max_new_tokens": s.max_new_tokens,
                    "threads": s.threads,
                    "measured_steps": args.steps,
                },
            }  # fmt: skip
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
