"""The `mm-gmpo` command line: one subcommand per job. Heavy modules are imported only by the job that runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mm_gmpo.errors import MissingDependency, TrainingHalted, UserError

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "train": ("mm_gmpo.trainer.cli", "train a policy with GMPO/GRPO: mm-gmpo train CONFIG.yaml [key.sub=value ...]"),
    "sft": (
        "mm_gmpo.trainer.sft_cli",
        "the supervised warm start alone, saved as a model: mm-gmpo sft CONFIG --out DIR",
    ),
    "eval": ("mm_gmpo.evaluate", "Pass@1 of a model on paper-math, geometry3k:test, math500, aime24, ..."),
    "verify": ("mm_gmpo.reward.cli", "grade a response against a gold answer, or a JSONL file of them"),
    "plot": ("mm_gmpo.plot", "PNG figures of reward, entropy, length and log-ratio range from run directories"),
    "make-tiny-model": ("mm_gmpo.models.cli", "build a random tiny Qwen2.5-VL or Qwen2 model in the HF layout"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-gmpo",
        description="Geometric-Mean Policy Optimization (GMPO) and GRPO for vision-language and math reasoning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The DeepSpeed launcher runs `python -u -m mm_gmpo --local_rank=R train ...`: the flag comes before the
    # subcommand. The process reads its rank from the environment (LOCAL_RANK), as under torchrun.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        _command_module(module).add_arguments(command)
    return parser


def _command_module(module: str):
    return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(_command_module(args._module).run(args) or 0)
    except (UserError, MissingDependency, TrainingHalted, FileNotFoundError) as exc:
        print(f"mm-gmpo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mm-gmpo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
