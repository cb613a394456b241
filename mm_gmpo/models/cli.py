"""`mm-gmpo make-tiny-model`: build a random tiny model in the Hugging Face layout."""

from __future__ import annotations

import argparse
import dataclasses

from mm_gmpo.models.tiny import TINY_KINDS, TinyModelSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TinyModelSpec()
    parser.add_argument("--kind", choices=TINY_KINDS, default=defaults.kind)
    parser.add_argument("--out", required=True, help="output folder (created; an existing one must be empty)")
    for f in dataclasses.fields(TinyModelSpec):
        if f.name in ("kind",):
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mm_gmpo.errors import UserError
    from mm_gmpo.models.tiny import make_tiny_model

    out_dir = Path(args.out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "a file" if not out_dir.is_dir() else "a folder that is not empty"
        raise UserError(f"--out {out_dir} is {what}: a tiny model is written into a new or empty folder only")

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TinyModelSpec)}
    out = make_tiny_model(TinyModelSpec(**fields), args.out)
    print(f"tiny {args.kind} model written to {out}")
    return 0
