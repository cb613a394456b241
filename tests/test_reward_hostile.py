"""Hostile input: nothing runs code, hangs, crashes the caller or exhausts memory; the pool's time bound holds
in threads; results stay in order. One pool (2 spawned workers) is shared by the module to keep it fast.

No test here bounds the machine's speed (CI runs on busy shared machines): in-process guards are checked by what
they decide (``unsafe``: refused before evaluating; ``simplify`` never called), and time is only compared with the
verifier's own bounds, with wide margins: the pool's per-item timeout and its worker start-up bound."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mm_gmpo.reward import Grade, VerifierPool, grade
from mm_gmpo.reward.pool import _STARTUP_SECONDS
from mm_gmpo.reward.symbolic import MAX_MATRICES, matrix_value

TIMEOUT = 1.0
WORK_TIMEOUT = 60.0  # a pool bound for work that is linear or bounded (well under 1 s idle; a blow-up never ends)
BOMBS = [
    r"9^{9^{9^{9}}}",
    r"10^{10^{10}}",
    r"(10^{10})!",
    r"2^{2^{2^{2^{2^{2}}}}}",
    "(" * 5000 + "1" + ")" * 5000,
    "{" * 5000 + "1" + "}" * 5000,
    r"\boxed{" * 3000 + "1" + "}" * 3000,
    "1" * 1_000_000,
    "x+" * 300_000 + "1",
    "\x00\x00\x001\x00",
    r"\input{/etc/passwd}",
    r"\include{/etc/passwd} \boxed{\input{/etc/passwd}}",
    r"\def\x{\x}\x",
    r"\frac{" * 2000 + "1" + "}{2}" * 2000,
    r"\sqrt{" * 2000 + "2" + "}" * 2000,
    r"\boxed{\int_0^{10^{100}} e^{x^{x^x}} dx}",
]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, timeout=TIMEOUT, memory_mb=1024) as verifier_pool:
        verifier_pool.grade_batch(["1"], ["1"])  # workers started and warm
        yield verifier_pool


def test_code_in_answers_stays_inert(tmp_path: Path, pool):
    target = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {target}')",
        rf"\boxed{{__import__('os').system('touch {target}')}}",
        f"eval(\"open('{target}', 'w')\")",
        rf"\boxed{{exec(\"open('{target}','w')\")}}",
        f"lambda: open('{target}', 'w')",
    ]
    for payload in payloads:
        assert not grade(payload, "0").correct
    grades = pool.grade_batch(payloads, ["0"] * len(payloads))
    assert not any(g.correct for g in grades)
    assert not target.exists()


def test_bombs_in_process_are_refused_before_evaluating():
    # the in-process path refuses towers from the size bound of the unevaluated tree (no pool needed for these)
    for bomb in BOMBS[:4]:
        result = grade(bomb, "3")
        assert not result.correct and result.method == "unsafe", (bomb, result)


def test_bombs_through_the_pool_respect_the_time_bound(pool):
    replaced_before = pool.timeouts + pool.errors
    start = time.perf_counter()
    grades = pool.grade_batch(BOMBS + ["7"], ["3"] * len(BOMBS) + ["7"])
    elapsed = time.perf_counter() - start
    assert len(grades) == len(BOMBS) + 1
    assert not any(g.correct for g in grades[:-1])
    assert grades[-1].correct  # order kept and the pool still works after the bombs
    assert all(g.method != "error" or "memory" in g.reason or "died" in g.reason for g in grades)
    # the pool's own guarantee: each item at most TIMEOUT, each replaced worker ready within its start-up bound
    replaced = pool.timeouts + pool.errors - replaced_before
    assert elapsed <= len(grades) * TIMEOUT + replaced * _STARTUP_SECONDS


HANG_SECONDS = 3600


def sleepy_grade(response, gold, *, choices=None):
    """Grades like ``grade`` but hangs on the response "hang" (run inside pool workers by the test below)."""
    if response == "hang":
        time.sleep(HANG_SECONDS)
    return grade(response, gold, choices=choices)


def test_a_hanging_item_times_out_and_the_worker_is_replaced():
    with VerifierPool(workers=1, timeout=0.5, _grader="test_reward_hostile:sleepy_grade") as slow_pool:
        slow_pool.grade_batch(["1"], ["1"])
        start = time.perf_counter()
        grades = slow_pool.grade_batch(["hang", r"\boxed{2}", "3"], ["1", "2", "4"])
        elapsed = time.perf_counter() - start
    assert [g.correct for g in grades] == [False, True, False]
    assert grades[0].method == "timeout" and grades[0].extracted == "hang"
    assert "0.5s time bound" in grades[0].reason and slow_pool.timeouts == 1
    # the item ran until its bound (not less) and was cut there, not waited for: the bound plus one replacement
    # worker's start-up bound, far below the hour the item would hang
    assert 0.5 <= elapsed <= 0.5 + _STARTUP_SECONDS + 2 * WORK_TIMEOUT < HANG_SECONDS


def hungry_grade(response, gold, *, choices=None):
    """Allocates 2 GB on the response "eat" (run inside pool workers by the test below)."""
    if response == "eat":
        hog = bytearray(2 * 1024**3)
        return Grade(True, str(len(hog)), "string")
    return grade(response, gold, choices=choices)


def test_worker_memory_is_bounded():
    with VerifierPool(workers=1, timeout=5.0, memory_mb=512, _grader="test_reward_hostile:hungry_grade") as pool:
        grades = pool.grade_batch(["eat", "4"], ["1", "4"])
    assert grades[0].method == "error" and not grades[0].correct
    assert "memory" in grades[0].reason
    assert grades[1].correct


def test_large_symbolic_differences_are_not_simplified_in_process(monkeypatch):
    import importlib

    import sympy

    def refuse(*args, **kwargs):
        raise AssertionError("simplify called: it can run for minutes")

    simplify_module = importlib.import_module("sympy.simplify.simplify")
    for owner in (sympy, simplify_module, sympy.Basic):
        monkeypatch.setattr(owner, "simplify", refuse)
    result = grade(r"f(x)(a+b+c+d)^{30} + \sin(a+b)^{20}", r"f(x)(a+b+c+e)^{30}")
    assert not result.correct and result.method == "symbolic"  # decided at points, not by simplify (an error)


def test_pool_works_from_a_thread(pool):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(pool.grade_batch([r"\frac{1}{2}", "3"], ["0.5", "4"])))
    thread.start()
    thread.join(timeout=60)
    assert [g.correct for g in out[0]] == [True, False]


def test_memory_bound_kills_only_the_item(pool):
    # a 10^7-digit integer needs more than the guard allows: refused without evaluating
    grades = pool.grade_batch([r"2^{33219280}", "5"], ["1", "5"])
    assert [g.correct for g in grades] == [False, True]


def test_grade_batch_checks_lengths(pool):
    with pytest.raises(ValueError, match="2 responses, 1 golds"):
        pool.grade_batch(["1", "2"], ["1"])


def test_empty_and_none_inputs():
    assert not grade("", "").correct
    assert not grade(None, "1").correct  # type: ignore[arg-type]
    assert not grade("1", None).correct  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def work_pool():
    """A pool whose bound is far above linear or bounded work and far below any blow-up."""
    with VerifierPool(workers=1, timeout=WORK_TIMEOUT, memory_mb=2048) as verifier_pool:
        yield verifier_pool


def test_huge_responses_are_graded_in_linear_time(work_pool):
    responses = [
        r"\boxed{1}" * 100_000,  # 100k boxes in one group
        r"\boxed{" + "1," * 300_000 + "}",
        "$" * 500_000,
        "<answer>" * 100_000 + "</answer>",
        "the answer is " * 50_000,
        r"\text{" * 100_000,
        "x if " * 100_000,  # the code check reads a bounded tail
    ]
    grades = work_pool.grade_batch(responses, ["2"] * len(responses))
    assert not any(g.correct for g in grades)
    assert all(g.method not in ("timeout", "error") for g in grades), [g.method for g in grades]


def test_matrix_products_are_bounded(work_pool):
    # products of symbolic matrices grow exponentially: more than 2 of them (or MAX_MATRICES numeric ones) are not
    # evaluated; what is evaluated finishes within the work bound
    matrix = r"\begin{pmatrix}a & b & c \\ d & e & f \\ g & h & k\end{pmatrix}"
    assert matrix_value(matrix * 3) is None and matrix_value(matrix * 2) is not None
    numeric = r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}"
    assert matrix_value(numeric * MAX_MATRICES) == [["199", "290"], ["435", "634"]]
    assert matrix_value(numeric * (MAX_MATRICES + 1)) is None
    counts = (2, 4, 6)
    grades = work_pool.grade_batch([rf"\boxed{{{matrix * count}}}" for count in counts], [matrix] * len(counts))
    assert [g.correct for g in grades] == [False] * len(counts)
    assert all(g.method not in ("timeout", "error") for g in grades)
