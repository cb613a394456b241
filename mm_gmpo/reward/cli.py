"""``mm-gmpo verify``: grade one response, or a JSONL file of them, with the time-bounded verifier pool.

mm-gmpo verify RESPONSE GOLD [--choices A B C D]
mm-gmpo verify --config RECIPE.yaml RESPONSE GOLD [--choices ...] [--truncated]   (that recipe's reward, in parts)
mm-gmpo verify --input FILE.jsonl [--output OUT.jsonl] [--response-key K --gold-key K] [--choices-key K]
               [--label-key K] [--timeout S] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

from mm_gmpo.errors import UserError

_BATCH = 64  # rows per pool call: the progress bar moves and memory stays flat on large files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("response", nargs="?", help="a bare answer or a whole model response")
    parser.add_argument("gold", nargs="?", help="the reference answer")
    parser.add_argument("--choices", nargs="+", default=None, help="option texts (a letter answer picks one)")
    parser.add_argument("--input", default="", help="JSONL file with one response and gold per line")
    parser.add_argument("--output", default="", help="JSONL of per-row verdicts (default: none written)")
    parser.add_argument("--response-key", default="response", help="key of the response in each input row")
    parser.add_argument("--gold-key", default="gold", help="key of the gold answer in each input row")
    parser.add_argument("--choices-key", default="choices", help="key of the option list (optional per row)")
    parser.add_argument("--label-key", default="label", help="key of a boolean label; accuracy is printed if present")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per row (hard bound, worker processes)")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per worker")
    parser.add_argument(
        "--config",
        default="",
        help="a training config (recipe YAML): score with its reward (reward.*: grader, format, weights, timeout)",
    )
    parser.add_argument("--truncated", action="store_true", help="with --config: the response hit the length limit")


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UserError(f"verify: --timeout {args.timeout} must be positive (seconds per row)")
    if args.workers < 1:
        raise UserError(f"verify: --workers {args.workers} must be at least 1")
    if args.output:  # before any row is graded: the verdicts of a long file would be lost at the end
        from mm_gmpo.paths import writable_file

        writable_file(args.output, "--output")
    if args.config:
        return _run_config(args)
    if args.truncated:
        raise UserError("verify: --truncated needs --config (the recipe says whether truncated responses score 0)")
    if args.input:
        if args.response is not None:
            raise UserError("verify: give either RESPONSE GOLD or --input FILE.jsonl, not both")
        return _run_file(args)
    if args.response is None or args.gold is None:
        raise UserError("verify: needs RESPONSE and GOLD (or --input FILE.jsonl)")
    from mm_gmpo.reward.pool import VerifierPool

    with VerifierPool(workers=1, timeout=args.timeout, memory_mb=args.memory_mb) as pool:
        (result,) = pool.grade_batch([args.response], [args.gold], [args.choices])
    verdict = "correct" if result.correct else "incorrect"
    print(f"{verdict}  extracted: {result.extracted!r}  ({result.extraction or '-'} -> {result.method})")
    if result.reason:
        print(f"  {result.reason}")
    return 0 if result.correct else 1


def reward_config(path: str):
    """The ``reward`` section of the config at ``path``; a bad file or key is a UserError naming both."""
    try:
        return _checked_reward(path)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if str(path) in message else f"{path}: {message}") from exc


def _checked_reward(path: str):
    from mm_gmpo.config import load_config

    reward = load_config(path).reward
    if not reward.timeout > 0:
        raise UserError(f"reward.timeout={reward.timeout} must be positive (seconds per verification)")
    if reward.function:
        from mm_gmpo.reward.custom import load_reward_function

        load_reward_function(reward.function)  # a bad path or name: UserError naming reward.function
    return reward


def score_line(scores, reward, index: int = 0) -> list[str]:
    """The total and its parts, one line each (the total first), for response ``index`` of ``scores``."""
    acc, fmt, total = scores.accuracy[index], scores.format[index], scores.total[index]
    if reward.function:
        lines = [f"total {total:g}  (reward.function {reward.function})"]
        lines += [f"  {name} {values[index]:g}" for name, values in scores.named.items() if name != "total"]
    else:
        lines = [
            f"total {total:g}  = {reward.accuracy_weight:g} x accuracy {acc:g} + {reward.format_weight:g} x format {fmt:g}"
        ]
    lines.append(f"accuracy {acc:g}  ({reward.extraction} grader)  extracted: {scores.extracted[index]!r}")
    lines.append(f"format {fmt:g}  ({reward.format})")
    return lines


def _run_config(args: argparse.Namespace) -> int:
    """Score one response with a recipe's reward; exit 0 when its accuracy part is 1, else 1."""
    from mm_gmpo.reward.pool import VerifierPool
    from mm_gmpo.reward.rewards import compute_rewards

    reward = reward_config(args.config)
    if args.input or args.response is None or args.gold is None:
        raise UserError("verify: --config scores one RESPONSE GOLD (not --input)")
    with VerifierPool.from_reward_config(reward, workers=1) as pool:
        scores = compute_rewards(
            [args.response],
            [args.gold],
            choices=[args.choices],
            truncated=[args.truncated],
            pool=pool,
            accuracy_weight=reward.accuracy_weight,
            format_weight=reward.format_weight,
            format_kind=reward.format,
            zero_truncated=reward.zero_truncated,
            examples=[{"id": "verify", "problem": "", "choices": args.choices, "source": "cli"}]
            if reward.function
            else None,
        )
    print("\n".join(score_line(scores, reward)))
    if args.truncated and reward.zero_truncated:
        print("  truncated: reward.zero_truncated scores it 0")
    if scores.timeouts:
        print(f"  grading overran reward.timeout={reward.timeout:g}s: scored 0")
    return 0 if scores.accuracy[0] == 1.0 else 1


def read_rows(path: Path, args: argparse.Namespace) -> list[dict]:
    """Rows of a JSONL file with the response and gold keys present; UserError names file, line and key."""
    if not path.is_file():
        raise UserError(f"verify: input file {path} does not exist")
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"verify: {path} line {number} is not UTF-8 text ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"verify: {path} line {number} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise UserError(f"verify: {path} line {number} is not a JSON object")
            for key in (args.response_key, args.gold_key):
                if key not in row:
                    raise UserError(f"verify: {path} line {number} has no key {key!r} (keys: {', '.join(row)})")
                row[key] = _answer_text(
                    row[key], key, allow_null=key == args.response_key, where=f"{path} line {number}"
                )
            choices = row.get(args.choices_key)
            if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
                raise UserError(f"verify: {path} line {number}: {args.choices_key!r} must be a list of strings")
            row["_line"] = number
            rows.append(row)
    return rows


def _answer_text(value, key: str, *, allow_null: bool, where: str) -> str:
    """A response or gold as text. A null response is an empty one (graded incorrect: the model gave nothing); a
    null gold cannot be graded against, so it is an input error, as is a list or an object (never ``str(None)``,
    which would make two nulls equal)."""
    if value is None and allow_null:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise UserError(f"verify: {where}: {key!r} is {kind}, not a string or number")


def _run_file(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mm_gmpo.reward.pool import VerifierPool

    path = Path(args.input)
    rows = read_rows(path, args)
    correct = labelled = agree = 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(Path(args.output).open("w", encoding="utf-8")) if args.output else None
        pool = stack.enter_context(VerifierPool(workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb))
        bar = stack.enter_context(tqdm(total=len(rows), desc="verify", unit="row", dynamic_ncols=True))
        for begin in range(0, len(rows), _BATCH):
            chunk = rows[begin : begin + _BATCH]
            grades = pool.grade_batch(
                [r[args.response_key] for r in chunk],
                [r[args.gold_key] for r in chunk],
                [r.get(args.choices_key) for r in chunk],
            )
            for row, result in zip(chunk, grades, strict=True):
                correct += result.correct
                label = row.get(args.label_key)
                if isinstance(label, bool):
                    labelled += 1
                    agree += label == result.correct
                if output:
                    record = {"line": row["_line"], "correct": result.correct, "extracted": result.extracted}
                    record.update(method=result.method, extraction=result.extraction, reason=result.reason)
                    output.write(json.dumps(record) + "\n")
            bar.update(len(chunk))
        timeouts, errors = pool.timeouts, pool.errors
    seconds = time.perf_counter() - start
    n = len(rows)
    print(f"rows {n}  correct {correct} ({correct / max(n, 1):.1%})  {n / max(seconds, 1e-9):.1f} rows/s")
    print(f"timeouts {timeouts}  errors {errors}")
    if labelled:
        print(f"accuracy against {args.label_key!r}: {agree}/{labelled} ({agree / labelled:.1%})")
    if args.output:
        print(f"verdicts written to {args.output}")
    return 0
