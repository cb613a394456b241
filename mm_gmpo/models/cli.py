"""`mm-gmpo make-tiny-model`: build a random tiny model in the Hugging Face layout."""

from __future__ import annotations

import argparse
import dataclasses

from mm_gmpo.models.tiny import TinyModelSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TinyModelSpec()
    parser.add_argument("--kind", choices=["qwen2_5_vl", "qwen2"], default=defaults.kind)
    parser.add_argument("--out", required=True, help="output folder (created)")
    for f in dataclasses.fields(TinyModelSpec):
        if f.name in ("kind",):
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))


def run(args: argparse.Namespace) -> int:
    from mm_gmpo.models.tiny import make_tiny_model

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TinyModelSpec)}
    out = make_tiny_model(TinyModelSpec(**fields), args.out)
    print(f"tiny {args.kind} model written to {out}")
    return 0
