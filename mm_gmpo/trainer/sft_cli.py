"""`mm-gmpo sft CONFIG.yaml [key.sub=value ...] --out DIR`: the config's supervised warm start alone, saved as a model.

The same stage `mm-gmpo train` runs first when ``warmstart.steps > 0`` (same data, template, seed and settings),
but saved once so that several RL runs can start from it (``model.path=DIR warmstart.steps=0``). Single process.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML whose model, data and warmstart.* sections are used")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. warmstart.steps=500 trainer.seed=2")
    parser.add_argument("--out", required=True, help="folder for the warm-started model (Hugging Face layout)")


def run(args: argparse.Namespace) -> int:
    import torch

    from mm_gmpo.config import load_config, to_dict
    from mm_gmpo.errors import UserError
    from mm_gmpo.models import load_processor
    from mm_gmpo.trainer.data import load_prompt_sets
    from mm_gmpo.trainer.dist import DistContext, local_device
    from mm_gmpo.trainer.precision import resolve_precision
    from mm_gmpo.trainer.setup import build_policy, ensure_model, seed_everything
    from mm_gmpo.trainer.sft import warm_start_from_config

    cfg = load_config(args.config, args.overrides)
    w = cfg.warmstart
    if w.steps < 1:
        raise UserError("warmstart.steps must be positive for mm-gmpo sft")
    if cfg.model.lora.enabled:
        raise UserError("mm-gmpo sft saves full weights: set model.lora.enabled=false")
    from mm_gmpo.paths import writable_dir
    from mm_gmpo.trainer.setup import check_values

    check_values(cfg)  # the config's single-key ranges (warmstart.batch_size, trainer.seed, ...), as train checks
    out = writable_dir(args.out, "--out")  # a file, under a file, unwritable: before the model loads and trains
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    seed_everything(cfg.trainer.seed)
    device = local_device()
    path = ensure_model(cfg, DistContext(device=device))
    processor = load_processor(path, min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    train, _, _ = load_prompt_sets(cfg, processor)
    precision = resolve_precision(cfg.model.dtype, deepspeed=False, device=device)
    policy = build_policy(cfg, path, precision).to(device)
    with precision.autocast():
        losses = warm_start_from_config(policy, processor, train, cfg)
    policy.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"from": path, "seed": cfg.trainer.seed, "nll_first": losses[0], "nll_last": losses[-1]}
    (out / "warmstart.json").write_text(json.dumps({**record, "warmstart": to_dict(cfg)["warmstart"]}, indent=2))
    print(f"warm start: {w.steps} steps, nll {losses[0]:.3f} -> {losses[-1]:.3f}; model saved to {out}")
    return 0
