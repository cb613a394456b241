"""Does ``mm_gmpo.reward.official`` give the official reward? Agreement with a transcription of understand-r1-zero's
``boxed_reward_fn`` (``scripts/bench/official_reference.py``, fast=False = ``--verifier_version math_verify``), or
with the official ``math_grader.py`` itself (``--official PATH``), on:

- the shared verifier files (``--verifier-dir``: ``bench_public.jsonl``, ``public_cases.jsonl``), each pred scored
  as it is (mostly bare answers: the official reward gives them 0) and inside ``\\boxed{}``;
- generated responses (``--eval-dir``: the official evaluation suite's golds, strings, floats and lists): a correct
  box, the last of several boxes right or wrong, ``\\fbox``, no box, an unclosed box, ``\\boxed {..}``, ``\\text{}``,
  ``\\dfrac``, spaces, a wrong number, a list gold answered by its last item, a repetitive long answer.

python scripts/bench/official_reward.py --verifier-dir DIR --eval-dir DIR [--official PATH] [--out disagreements.jsonl]
Prints the agreement counts per source and each disagreement (response, gold, ours, official, our method).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mm_gmpo.reward.official import official_grade  # noqa: E402

EVAL_SETS = ("aime", "amc", "math", "minerva", "olympiad_bench")
PER_SET = 12  # golds drawn from each evaluation set (seeded)


def load_reference(path: str):
    """``boxed_reward_fn`` of the transcription, or of the official file at ``path``."""
    path = path or str(Path(__file__).with_name("official_reference.py"))
    spec = importlib.util.spec_from_file_location("official_reference_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.boxed_reward_fn


def verifier_cases(folder: Path) -> list[tuple[str, str, object]]:
    """(source, response, gold): each pred of the shared files as it is and boxed."""
    cases = []
    for name in ("bench_public.jsonl", "public_cases.jsonl"):
        path = folder / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            pred, gold = str(row["pred"]), str(row["gold"])
            cases.append((f"{name}:as-is", pred, gold))
            cases.append((f"{name}:boxed", f"The answer is $\\boxed{{{pred}}}$.", gold))
    return cases


def _wrong(gold: str) -> str:
    """A different answer: a number plus one, else the gold with ``+1`` appended."""
    try:
        return str(int(float(gold)) + 1)
    except ValueError:
        return gold + "+1"


def variants(gold) -> list[tuple[str, str]]:
    """(kind, response) for one gold (a list gold: answered by its last item)."""
    g = str(gold[-1] if isinstance(gold, list) else gold).strip()
    w = _wrong(g)
    out = [
        ("correct", f"Reasoning.\nSo the answer is $\\boxed{{{g}}}$."),
        ("last-box-right", f"First \\boxed{{{w}}}, no: \\boxed{{{g}}}"),
        ("last-box-wrong", f"First \\boxed{{{g}}}, no: \\boxed{{{w}}}"),
        ("fbox", f"So \\fbox{{{g}}}"),
        ("unboxed", f"So the final answer is {g}."),
        ("unclosed", f"So \\boxed{{{g}"),
        ("spaced-box", f"So \\boxed {{{g}}}"),
        ("text", f"\\boxed{{\\text{{{g}}}}}"),
        ("dfrac", f"\\boxed{{{g.replace(chr(92) + 'frac', chr(92) + 'dfrac')}}}"),
        ("no-spaces", f"\\boxed{{{g.replace(' ', '')}}}"),
        ("wrong", f"\\boxed{{{w}}}"),
        ("nested", f"\\boxed{{{{{g}}}}}"),
    ]
    if isinstance(gold, float):
        out.append(("float-gold-as-int", f"\\boxed{{{int(gold)}}}"))
    return out


def generated_cases(folder: Path, seed: int = 0) -> list[tuple[str, str, object]]:
    rng = random.Random(seed)
    cases = [("repetitive", "\\boxed{" + "1+" * 80 + "1}", "81"), ("repetitive", "\\boxed{" + "1+" * 40 + "1}", "41")]
    for name in EVAL_SETS:
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rng.sample(rows, min(PER_SET, len(rows))):
            for kind, response in variants(row["answer"]):
                cases.append((f"{name}:{kind}", response, row["answer"]))
    return cases


def _clear_caches() -> None:
    """Forget sympy's and math_verify's caches, so neither timed pass inherits the other's."""
    import sympy.core.cache
    from math_verify import parser

    sympy.core.cache.clear_cache()
    parser.parse_latex_cached.cache_clear()
    parser.parse_expr_cached.cache_clear()


def _timed(fn, cases) -> tuple[list[float], float]:
    fn(cases[0][1], cases[0][2])  # warm-up: imports are not timed
    _clear_caches()
    start = time.perf_counter()
    scores = [fn(response, gold) for _, response, gold in cases]
    return scores, time.perf_counter() - start


def compare(cases, reference) -> tuple[collections.Counter, collections.Counter, list[dict], float, float]:
    """Agreement per source group, the disagreements, and each side's seconds (two separate passes)."""
    official, ref_s = _timed(lambda r, g: reference(r, g, fast=False)[1], cases)
    print(f"the official reward credits {int(sum(official))} of {len(cases)} cases")
    grades, ours_s = _timed(official_grade, cases)
    agree, total, disagreements = collections.Counter(), collections.Counter(), []
    for (source, response, gold), ours, theirs in zip(cases, grades, official, strict=True):
        group = source.split(":")[0]
        total[group] += 1
        if float(ours.correct) == theirs:
            agree[group] += 1
            continue
        disagreements.append(
            dict(source=source, response=response, gold=gold, ours=float(ours.correct), official=theirs)
            | dict(method=ours.method, extracted=ours.extracted)
        )
    return agree, total, disagreements, ours_s, ref_s


def compare_easyr1(cases) -> tuple[int, int, list[dict]]:
    """EasyR1's accuracy (mathruler's ``grade_answer`` of ``extract_boxed_content`` of the cleaned response) against
    ``mm_gmpo.reward.easyr1.easyr1_grade``, when mathruler is importable (the ``bench`` extra)."""
    import re

    from mathruler.grader import extract_boxed_content, grade_answer

    from mm_gmpo.reward.easyr1 import easyr1_grade

    agree, disagreements = 0, []
    for source, response, gold in cases:
        if isinstance(gold, list):
            continue  # EasyR1's golds are strings
        cleaned = re.sub(r"\s*(<|>|/)\s*", r"\1", response)
        theirs = 1.0 if grade_answer(extract_boxed_content(cleaned), str(gold)) else 0.0
        ours = float(easyr1_grade(response, str(gold)).correct)
        agree += ours == theirs
        if ours != theirs:
            disagreements.append(dict(source=source, response=response, gold=gold, ours=ours, mathruler=theirs))
    return agree, agree + len(disagreements), disagreements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier-dir", required=True, help="folder of bench_public.jsonl and public_cases.jsonl")
    parser.add_argument("--eval-dir", required=True, help="folder of the official evaluation suite as JSONL")
    parser.add_argument("--official", default="", help="the official math_grader.py (default: the transcription)")
    parser.add_argument("--out", default="", help="write the disagreements here (JSONL)")
    args = parser.parse_args()
    reference = load_reference(args.official)
    cases = verifier_cases(Path(args.verifier_dir)) + generated_cases(Path(args.eval_dir))
    agree, total, disagreements, ours_s, ref_s = compare(cases, reference)
    print(f"reference: {args.official or 'scripts/bench/official_reference.py (transcription)'}")
    for group in sorted(total):
        print(f"{group:28s} {agree[group]:5d} / {total[group]:5d} agree")
    n, a = sum(total.values()), sum(agree.values())
    credited = sum(1 for d in disagreements if d["official"] == 1.0)
    print(f"{'all':28s} {a:5d} / {n:5d} agree ({n - a} disagreements, {credited} of them credited officially)")
    print(f"seconds: ours {ours_s:.1f}, reference {ref_s:.1f} ({n} cases, in-process)")
    for d in disagreements:
        print(json.dumps(d, ensure_ascii=False))
    if importlib.util.find_spec("mathruler") is not None:
        agree_e, n_e, dis_e = compare_easyr1(cases)
        print(f"easyr1 accuracy vs mathruler: {agree_e} / {n_e} agree ({n_e - agree_e} disagreements)")
        for d in dis_e:
            print(json.dumps(d, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in disagreements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
