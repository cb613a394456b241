"""Build the toy Qwen2.5-VL of the "Does it learn?" experiments: a small BPE vocabulary trained on a synthetic
task's prompts and answers, and a random ~1.2 M-parameter model on it (seconds on a CPU).

    python scripts/make_toy_model.py --task polygon_sides --out runs/models/toy-polygon_sides

The configs ``configs/toy_gmpo.yaml`` and ``configs/toy_grpo.yaml`` read the model from that folder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mm_gmpo.data.synthetic import TASKS
from mm_gmpo.models.toy_tokenizer import make_toy_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="polygon_sides", nargs="+", choices=sorted(TASKS), help="synthetic task(s)")
    parser.add_argument("--out", default="runs/models/toy-polygon_sides", help="output folder")
    parser.add_argument("--hidden", type=int, default=128, help="text hidden size")
    parser.add_argument("--layers", type=int, default=2, help="text decoder layers")
    parser.add_argument("--heads", type=int, default=2, help="attention heads (head size hidden/heads)")
    parser.add_argument("--kv-heads", type=int, default=1, help="key/value heads")
    parser.add_argument("--intermediate", type=int, default=256, help="text MLP width")
    parser.add_argument("--vision-hidden", type=int, default=128, help="vision tower width")
    parser.add_argument("--vision-layers", type=int, default=2, help="vision tower depth")
    parser.add_argument("--vocab-size", type=int, default=512, help="largest tokenizer size (incl. special tokens)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = make_toy_model(
        args.out,
        task=args.task,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads,
        intermediate=args.intermediate,
        vision_hidden=args.vision_hidden,
        vision_layers=args.vision_layers,
        vocab_size=args.vocab_size,
        seed=args.seed,
    )
    print(f"toy model saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
