"""Hostile input: nothing runs code, hangs, crashes the caller or exhausts memory; the pool's time bound holds
in threads; results stay in order. One pool (2 spawned workers) is shared by the module to keep it fast."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mm_gmpo.reward import Grade, VerifierPool, grade

TIMEOUT = 1.0
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


def test_bombs_in_process_return_quickly_when_guarded():
    # the in-process path refuses towers before evaluating them (no pool needed for these)
    for bomb in BOMBS[:4]:
        start = time.perf_counter()
        result = grade(bomb, "3")
        assert not result.correct
        assert time.perf_counter() - start < 2.0, bomb


def test_bombs_through_the_pool_respect_the_time_bound(pool):
    start = time.perf_counter()
    grades = pool.grade_batch(BOMBS + ["7"], ["3"] * len(BOMBS) + ["7"])
    elapsed = time.perf_counter() - start
    assert len(grades) == len(BOMBS) + 1
    assert not any(g.correct for g in grades[:-1])
    assert grades[-1].correct  # order kept and the pool still works after the bombs
    assert all(g.method != "error" or "memory" in g.reason or "died" in g.reason for g in grades)
    # each item at most TIMEOUT; replaced workers warm up (about 2 s each) before their next item
    assert elapsed < len(BOMBS) * TIMEOUT + 30


def sleepy_grade(response, gold, *, choices=None):
    """Grades like ``grade`` but hangs on the response "hang" (run inside pool workers by the test below)."""
    if response == "hang":
        time.sleep(60)
    return grade(response, gold, choices=choices)


def test_a_hanging_item_times_out_and_the_worker_is_replaced():
    with VerifierPool(workers=1, timeout=0.5, _grader="test_reward_hostile:sleepy_grade") as slow_pool:
        slow_pool.grade_batch(["1"], ["1"])
        start = time.perf_counter()
        grades = slow_pool.grade_batch(["hang", r"\boxed{2}", "3"], ["1", "2", "4"])
        elapsed = time.perf_counter() - start
    assert [g.correct for g in grades] == [False, True, False]
    assert grades[0].method == "timeout" and grades[0].extracted == "hang"
    assert slow_pool.timeouts == 1
    assert elapsed < 0.5 + 20  # the bound, plus one replacement worker's start-up


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


def test_large_symbolic_differences_are_not_simplified_in_process():
    start = time.perf_counter()
    assert not grade(r"f(x)(a+b+c+d)^{30} + \sin(a+b)^{20}", r"f(x)(a+b+c+e)^{30}").correct
    assert time.perf_counter() - start < 5


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


def test_huge_responses_are_graded_in_linear_time():
    responses = [
        r"\boxed{1}" * 100_000,  # 100k boxes in one group
        r"\boxed{" + "1," * 300_000 + "}",
        "$" * 500_000,
        "<answer>" * 100_000 + "</answer>",
        "the answer is " * 50_000,
        r"\text{" * 100_000,
    ]
    start = time.perf_counter()
    grades = [grade(response, "2") for response in responses]
    assert time.perf_counter() - start < 10
    assert not any(g.correct for g in grades)


def test_matrix_products_are_bounded():
    # products of many symbolic matrices grow exponentially: more than MAX_MATRICES are not evaluated
    matrix = r"\begin{pmatrix}a & b & c \\ d & e & f \\ g & h & k\end{pmatrix}"
    for count in (4, 6):
        start = time.perf_counter()
        assert not grade(rf"\boxed{{{matrix * count}}}", matrix).correct
        assert time.perf_counter() - start < 2.0, count
