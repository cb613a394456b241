"""The official reward (understand-r1-zero's boxed_reward_fn, math_verify setting): hand-worked verdicts."""

from __future__ import annotations

import pytest

from mm_gmpo.reward.official import (
    grade_answer,
    last_boxed_answer,
    official_correct,
    official_grade,
    repetitive,
    sympy_equal,
)
from mm_gmpo.reward.official_normalize import mathd_normalize, prm_normalize


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{4} no wait \\boxed{5}", "5"),  # the last box wins
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are counted like any brace
        ("the answer is 5", None),  # no box
        ("\\fbox{5}", None),  # \fbox alone: the official code looks for \boxed only
        ("\\boxed{5", None),  # never closed
        ("\\boxed 5", None),  # not written \boxed{
        ("\\boxed {5}", None),
        ("\\boxed{}", ""),
    ],
)
def test_last_boxed_answer(text, content):
    assert last_boxed_answer(text) == content


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("\\text{5 inches}", "5"),  # \text{} unwrapped, a unit word dropped
        ("\\dfrac12", "\\frac{1}{2}"),
        ("0.5", "\\frac{1}{2}"),
        ("3/4", "\\frac{3}{4}"),
        ("x = 7", "7"),  # a short left-hand side dropped
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("50\\%", "50"),
        ("\\sqrt", "\\sqrt"),  # _fix_sqrt raises on a bare \sqrt: the answer comes back as it was
        ("x+a", "x+"),  # the official quirk: a lone "a" is a unit word
    ],
)
def test_mathd_normalize(raw, normalized):
    assert mathd_normalize(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("\\frac{1}{2}", "1/2"),  # pylatexenc renders the fraction as text
        ("10.0", "10"),
        ("1,000", "1000"),
        ("5 \\text{ cm}", "5"),
        ("3 million", "3*10^6"),
        ("\\sqrt{2}", "sqrt(2)"),
    ],
)
def test_prm_normalize(raw, normalized):
    assert prm_normalize(raw) == normalized


def test_sympy_step():
    assert sympy_equal("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}")
    assert sympy_equal("(1, 2)", "(1,2)")
    assert not sympy_equal("[1, 2)", "(1, 2)")  # brackets of another kind
    assert not sympy_equal("2/4", "1/2")  # fractions are compared as written
    assert not sympy_equal("4/2", "2")  # an integer gold wants an integer
    assert sympy_equal("2.00000001", "2")  # within 1e-7 of an integer is that integer


@pytest.mark.parametrize(
    ("response", "gold", "method"),
    [
        ("\\boxed{5}", "5", "mathd"),
        ("\\boxed{142}", 142.0, "sympy"),  # AMC golds are floats: str(142.0) = "142.0"
        ("\\boxed{\\sqrt{3}/2}", "\\frac{\\sqrt{3}}{2}", "sympy"),
        ("\\boxed{2/4}", "\\frac{1}{2}", "math_verify"),  # only the math_verify fallback accepts it
        ("\\boxed{7}", "The answer is $\\boxed{7}$.", "mathd"),  # a gold with a box is graded by its box
    ],
)
def test_correct_and_which_check(response, gold, method):
    result = official_grade(response, gold)
    assert result.correct and result.method == method and result.extraction == "boxed"


def test_wrong_and_unboxed_score_zero():
    assert not official_correct("\\boxed{5} then \\boxed{4}", "5")  # the last box is 4
    assert not official_correct("So the final answer is 5.", "5")
    assert not official_correct("$5$", "5")
    assert not official_correct("\\fbox{5}", "5")
    assert official_grade("answer 5", "5").method == "none"
    assert not official_correct("\\boxed{5}", "\\boxed{5")  # a gold whose box never closes answers nothing


def test_list_golds_any_item():
    assert official_correct("\\boxed{x}", ["y", "x"])
    assert official_correct("\\boxed{9.6}", ["9.6\n"])
    assert not official_correct("\\boxed{z}", ["y", "x"])
    assert not official_correct("\\boxed{z}", [])


def test_repetitive():
    assert repetitive("ab" * 100)  # a period-2 text: nearly every suffix shares a long prefix with its neighbour
    assert not repetitive("".join(chr(0x4E00 + i) for i in range(200)))  # all characters distinct: no repetition
    assert not repetitive("a")


def test_repetitive_answer_skips_math_verify():
    short, long = "1+" * 40 + "1", "1+" * 80 + "1"  # 81 and 161 characters; sympy's step wants an integer here
    assert grade_answer(short, "41") == "math_verify"
    assert grade_answer(long, "81") is None  # over 128 characters and repetitive: math_verify is not asked


def sleepy_official(response, gold, *, choices=None):
    """A grader that overruns any time bound (a pool worker imports it as test_reward_official:sleepy_official)."""
    import time

    time.sleep(30)
    return official_grade(response, gold)


def test_compute_rewards_official_in_process():
    from mm_gmpo.reward.rewards import compute_rewards

    responses = ["\\boxed{5}", "So the final answer is 5.", "\\boxed{5}", "\\boxed{3} or \\boxed{5}"]
    scores = compute_rewards(
        responses,
        ["5"] * 4,
        truncated=[False, False, True, False],
        accuracy_weight=1.0,
        format_weight=0.0,
        format_kind="none",
        extraction="official",
    )
    assert scores.accuracy == [1.0, 0.0, 0.0, 1.0]  # the lenient grader would credit the 2nd; the 3rd is cut
    assert scores.total == [1.0, 0.0, 0.0, 1.0]
    lenient = compute_rewards(responses[:2], ["5"] * 2, format_kind="none", accuracy_weight=1.0, format_weight=0.0)
    assert lenient.accuracy == [1.0, 1.0]


def test_pool_grades_officially_with_list_golds():
    from mm_gmpo.reward.pool import VerifierPool

    with VerifierPool(workers=1, timeout=30.0, extraction="official") as pool:
        grades = pool.grade_batch(
            ["\\boxed{8.7 \\times 10^{8}}", "8.7e8", "\\boxed{2}"], [["8.7 \\times 10^{8}"], "a", ["1", "2"]]
        )
    assert [g.correct for g in grades] == [True, False, True]
    assert grades[1].method == "none"


def test_official_timeout_scores_zero():
    from mm_gmpo.reward.pool import VerifierPool
    from mm_gmpo.reward.rewards import compute_rewards

    pool = VerifierPool(workers=1, timeout=0.5, extraction="official", _grader="test_reward_official:sleepy_official")
    with pool:
        scores = compute_rewards(["\\boxed{5}"], ["5"], pool=pool, format_kind="none", extraction="official")
    assert scores.accuracy == [0.0] and scores.timeouts == 1
    assert scores.extracted == ["5"]  # what the official grader would have graded
    with pytest.raises(ValueError, match="extraction 'lenient' but the pool grades 'official'"):
        compute_rewards(["\\boxed{5}"], ["5"], pool=pool, extraction="lenient")


def _bench_module(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agrees_with_the_transcription_of_the_official_code():
    """Every 6th generated case of the bench (all kinds of response, all five official sets) and a hand-picked set
    of hard pairs: our verdict equals the transcribed boxed_reward_fn's."""
    from pathlib import Path

    from conftest import SHARED_DATA

    reference = _bench_module("official_reference").boxed_reward_fn
    bench = _bench_module("official_reward")
    hard = [
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\boxed{x+a}", "x+c"),  # unit words: both sides lose their lone letter
        ("\\boxed{10\\%}", "10"),
        ("\\boxed{\\$5.00}", "5"),
        ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\\boxed{x \\in [1, 2]}", "[1,2]"),
        ("\\boxed{\\text{(A)}}", "A"),
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{3 million}", "3000000"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}"),
    ]
    cases = [(r, g) for r, g in hard]
    folder = Path(SHARED_DATA) / "math" / "official_eval"
    if folder.is_dir():
        cases += [(r, g) for _, r, g in bench.generated_cases(folder)[::6]]
    assert len(cases) > 10
    disagreements = [(r, g) for r, g in cases if float(official_correct(r, g)) != reference(r, g, fast=False)[1]]
    assert disagreements == []


def test_missing_math_verify_stops_at_pool_start(monkeypatch):
    import sys

    from mm_gmpo.errors import MissingDependency
    from mm_gmpo.reward.pool import VerifierPool

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now raises ImportError
    with pytest.raises(MissingDependency, match="reward.extraction=official needs `math_verify`"):
        VerifierPool(extraction="official")
    VerifierPool(extraction="lenient").close()  # the lenient grader does not need it
