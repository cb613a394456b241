"""`mm-gmpo train CONFIG.yaml [key.sub=value ...]` (also under torchrun / deepspeed launchers)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML, e.g. configs/geo3k_tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6 rollout.n=8")
    # a launcher that puts the flag after the subcommand (DeepSpeed's puts it before: see mm_gmpo.cli)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from mm_gmpo.config import load_config

    cfg = load_config(args.config, args.overrides)
    from mm_gmpo.trainer.trainer import Trainer  # heavy imports only once the config is known to be valid

    trainer = Trainer(cfg)
    try:
        state = trainer.fit()
    finally:
        trainer.close()
    if trainer.stopped_by:  # a signal ended the run at a round boundary, with a checkpoint
        if trainer.ctx.is_main:
            print(f"stopped: {state.step} steps, resume with trainer.resume_from={cfg.trainer.output_dir}")
        return 128 + trainer.stopped_by  # 130 (SIGINT), 143 (SIGTERM): not a finished run
    if trainer.ctx.is_main:
        print(f"done: {state.step} steps, run directory {cfg.trainer.output_dir}")
    return 0
