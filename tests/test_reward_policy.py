"""The grading policy of docs/verifier.md, rule by rule (in-process ``grade``; hand-picked cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_gmpo.reward import grade, verify
from mm_gmpo.reward.extract import extract_answer
from mm_gmpo.reward.normalize import parse_number

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GEO_CHOICES = ["5", "14", "15", "35"]


# ------------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize(
    ("response", "answer", "method"),
    [
        (r"so x = 3, then \boxed{4}. Let me check \boxed{5}", "5", "boxed"),  # last box after a long gap
        (r"\fbox{7}", "7", "boxed"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", "boxed"),
        ("reasoning <answer>12</answer>", "12", "answer_tag"),
        ("<answer>1</answer> then <answer>2</answer>", "2", "answer_tag"),
        ("We compute things.\nThe final answer is 42.", "42", "final_answer"),
        ("Final Answer: The final answer is $10$. I hope it is correct.", "10", "final_answer"),
        (r"4\sqrt{3}", r"4\sqrt{3}", "bare"),
        ("28 percent", "28 percent", "bare"),
    ],
)
def test_extraction_order(response, answer, method):
    got = extract_answer(response)
    assert (got.answer, got.method) == (answer, method)


def test_box_beats_answer_tag_and_final_sentence():
    got = extract_answer(r"The final answer is 3. <answer>4</answer> \boxed{5}")
    assert got.answer == "5" and got.method == "boxed"


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        (r"either \boxed{3} or \boxed{4}", "4"),
        (r"\boxed{A}\boxed{B}\boxed{C}\boxed{D}", "15"),
        (r"\boxed{3, 4}", "4"),
        (r"\boxed{3 \text{ or } 4}", "4"),
    ],
)
def test_hedging_earns_nothing(response, gold):
    assert not grade(response, gold, choices=GEO_CHOICES).correct


def test_repeated_identical_box_is_one_answer():
    assert verify(r"\boxed{4} so again \boxed{4}", "4")


def test_several_boxes_answer_a_list_gold():
    assert verify(r"\boxed{1}, \boxed{2} and \boxed{3}", r"\{1,2,3\}")


def test_no_answer():
    result = grade("I do not know how to solve this problem, sorry about that and goodbye now.", "3")
    assert not result.correct and result.extracted is None and result.method == "none"


# ------------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("123456789012345678", "123456789012345678", True),
        ("123456789012345679", "123456789012345678", False),  # big integers exactly
        ("1e-30", "2e-30", False),  # no absolute tolerance
        (r"\frac{1}{2^{98}}", r"\frac{1}{2^{99}}", False),
        (r"\frac{1}{2006!}", r"\frac{1}{2004!}", False),
        (r"2^{10}", "1024", True),
        ("0.5", r"\frac{1}{2}", True),  # a decimal equal to the exact gold
        ("0.33", r"\frac{1}{3}", False),  # too few significant digits
        ("0.333", r"\frac{1}{3}", False),
        ("0.333333", r"\frac{1}{3}", True),
        ("13.3333", r"\frac{40}{3}", True),
        ("13.33", r"\frac{40}{3}", False),
        (r"\sqrt{116}", "10.8", True),  # rounded gold (Geometry3K)
        ("10.77", "10.8", True),
        ("10.9", "10.8", False),
        ("6.4", "6.45", False),  # fewer decimals than the rounded gold
        ("0.47", "0.5", False),  # a one-digit decimal gold is exact
        ("1,234,567", "1234567", True),
        (r"11,\!111,\!100", "11111100", True),
        ("32, 349", "32349", False),  # a comma and a space: a list
        ("3\\frac{1}{2}", r"\frac{7}{2}", True),  # mixed number
        ("2.3 \\times 10^{-3}", "0.0023", True),
        ("2.3e-3", "0.0023", True),
        ("50\\%", "50", True),
        ("50\\%", "0.5", True),
        ("033", "33", True),
        ("5.001", "5", False),
    ],
)
def test_numbers(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_parse_number_is_exact_for_huge_integers():
    number = parse_number("9" * 300)
    assert number is not None and number.value == int("9" * 300) and number.decimals is None


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("60°", "60"),
        (r"60^\circ", "60"),
        (r"60^{\circ}", "60"),
        (r"60 \degree", "60"),
        ("60 degrees", "60"),
        ("10 cm", "10"),
        (r"10\text{ inches}", "10"),
        ("10 units^2", "10"),
        (r"2\sqrt{3}", r"\sqrt{12}"),
        ("√2", r"\sqrt{2}"),
        (r"\dfrac{40}{3}", r"\frac{40}{3}"),
        (r"\tfrac{40}{3}", r"\frac{40}{3}"),
        ("π", r"\pi"),
        (r"4\pi", r"\pi \cdot 4"),
    ],
)
def test_geometry_equal(pred, gold):
    assert verify(pred, gold)


def test_units_must_agree_when_both_have_them():
    assert not verify("10 cm", "10 m")


@pytest.mark.parametrize(
    ("pred", "expected"), [("C", True), ("(C)", True), (r"\text{C}", True), ("B", False), ("15", True), ("14", False)]
)
def test_choice_letters(pred, expected):
    result = grade(rf"\boxed{{{pred}}}", "15", choices=GEO_CHOICES)
    assert result.correct is expected


def test_letter_gold_accepts_letter_or_text():
    assert grade("C", "C", choices=GEO_CHOICES).correct
    assert grade("15", "C", choices=GEO_CHOICES).correct
    assert not grade("B", "C", choices=GEO_CHOICES).correct


def test_geometry3k_golds_verify_against_themselves_and_their_value(geometry_rows):
    for row in geometry_rows:
        assert verify(row["answer"], row["answer"]), row["answer"]
        letter_grade = grade(row["answer_letter"], row["answer"], choices=row["choices"])
        assert letter_grade.correct, (row["answer_letter"], row["answer"], row["choices"])


# ------------------------------------------------------------------------------------------------ text math
@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (r"x \le 2", r"(-\infty,2]", True),
        (r"(-\infty, 2]", r"x \leq 2", True),
        (r"x < 2", r"(-\infty,2]", False),
        (r"x \in [2, 5)", "[2,5)", True),
        (r"2 < x \le 5", "(2,5]", True),
        (r"5 \geq x", r"x \leq 5", True),
        ("[1,2]", "[1,2)", False),
        (r"[-1,0) \cup (0, 1]", r"[-1,0)\cup(0,1]", True),
        (r"\{1,2\}", r"\{2,1\}", True),
        ("(1,2)", "(2,1)", False),
        ("1, 2, 3", "3, 2, 1", True),
        (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{bmatrix}1\\2\end{bmatrix}", True),
        (r"\begin{pmatrix}1\\3\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
        ("x = 3", "3", True),
        ("y = 1 + 2x", "y=2x+1", True),
        (r"y=-\frac{1}{2}x+\frac{3}{4}", "2x+4y-3=0", True),
        ("y = 2x + 2", "y=2x+1", False),
        ("x^2-1", "(x-1)(x+1)", True),
        ("x^2+1", "(x-1)(x+1)", False),
        (r"\frac{1}{2x}", r"\frac{x}{2}", False),
        (r"4\sqrt(2)", "4", False),
        (r"3 \pm \sqrt{2}", r"3+\sqrt{2}, 3-\sqrt{2}", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})", True),
        (r"\text{Evelyn}", "Evelyn", True),
        (r"\text{odd}", "even", False),
        ("2×3", "6", True),
        ("−5", "-5", True),
        (r"\$10", "10", True),
        (r"i(2-i)", "1+2i", True),
    ],
)
def test_text_math(pred, gold, expected):
    assert verify(pred, gold) is expected


def test_whole_response_with_reasoning():
    response = "<think>The area is 6 * 2 = 12, halved.</think> So the area is $\\boxed{6}$ square units."
    result = grade(response, "6")
    assert result.correct and result.extracted == "6" and result.extraction == "boxed"


def test_math_golds_verify_against_their_boxed_solution(math_rows):
    for row in math_rows:
        assert verify(rf"The answer is \boxed{{{row['answer']}}}.", row["answer"]), row["answer"]


@pytest.fixture(scope="module")
def geometry_rows() -> list[dict]:
    """60 Geometry3K rows (gold, letter, choices) from the shared data, or skip when it is absent."""
    return _rows(SHARED_DATA / "geometry3k" / "train.jsonl", 60)


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    """60 MATH-500 rows from the shared data, or skip when it is absent."""
    return _rows(SHARED_DATA / "math" / "math500.jsonl", 60)


def _rows(path: Path, count: int) -> list[dict]:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle, strict=False)]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"\boxed{C. 15}", True),
        (r"\boxed{(C) 15}", True),
        (r"\boxed{C: 15}", True),
        ("**Answer:** C", True),
        (r"\boxed{C. 14}", False),  # the letter's option is 15: the text contradicts it
        (r"\boxed{B. 15}", False),  # B is 14
    ],
)
def test_letter_with_option_text(response, expected):
    assert grade(response, "15", choices=GEO_CHOICES).correct is expected


# ------------------------------------------------------------------------------------------------ later rules
@pytest.mark.parametrize(
    ("response", "answer", "method"),
    [
        # a closing "final answer" sentence after the last box overrides that (intermediate) box
        (r"so $\boxed{255}$ of interest. Final Answer: The final answer is $10,455$.", "10,455", "final_answer"),
        (r"\boxed{5} and so the answer is B.", "B", "final_answer"),
        (r"so \boxed{5}. I believe the answer is correct.", "5", "boxed"),  # a judgement, not an answer
        # the last math segment or the last number, whichever comes later
        ("We get $d = 90/n$ for each divisor. Therefore there are 12 sequences in all, I think.", "12", "last_number"),
        ("Thus the error grows. We find $$\\frac{a}{b} \\geq 2.$$ So it increases by 100%.", "100", "last_number"),
        ("There are 12 divisors, so the common difference is $d = 90/12$ and we stop.", "d = 90/12", "last_math"),
        ("W(x)=1orW(x)=-1", "W(x)=1orW(x)=-1", "bare"),  # no space at all: not a sentence
    ],
)
def test_extraction_later_rules(response, answer, method):
    got = extract_answer(response)
    assert (got.answer, got.method) == (answer, method)


def test_unboxed_solution_gold_is_extracted_like_a_response():
    gold = (
        "On Monday the stock keeps 90% of its value, on Tuesday 80% of that, so it keeps 72% of its value overall. "
        "Final Answer: The final answer is $28\\%$. I hope it is correct."
    )
    assert verify(r"\boxed{28\%}", gold)
    assert not verify(r"\boxed{72\%}", gold)
    assert verify("not enough information", "not enough information")  # a short prose gold stays whole
    # a long gold without such a sentence is an answer, even with prose and several math segments
    long_gold = r"$f(x)=a x+b$, where $b$ is an arbitrary integer, and $a$ is an arbitrary positive integer with $a>0$"
    assert extract_answer(long_gold, gold=True).answer == long_gold
    assert verify(rf"\boxed{{{long_gold}}}", long_gold)


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("14{, }916", "14916", True),  # thousands brace group with a space
        ("10weeks", "10", True),  # a unit word of 3+ letters glued to the number
        ("3min", "3", True),
        ("2m", "2", False),  # two letters or fewer stay a product of symbols
        (r"\cos(x)", r"\sin(90^{\circ}-x)", True),  # a degree inside a trig function is an angle unit
        (r"\frac{1}{2}", r"\sin 30^\circ", True),
        (r"\frac{\sqrt{3}}{2}", r"\sin 30^\circ", False),
        ("30", r"30^\circ", True),  # outside trig functions the sign is still dropped
        ("(0,1)", "0<f(x)<1", True),  # a range of a function value is an interval
        ("(0,1]", "0<f(x)<1", False),
        (r"\frac{1}{2} \$ = \frac{10}{9}", "10/9", True),  # a letter-free computation keeps its result
        (r"0.05 \cdot 200 = 10", "10", True),
        ("11a+c", "7 = 11a+c", False),  # a bare number on the left is an equation, not a computation
        ("2x = 4", "4", False),
        ("-1 = x", "x", False),
        ("(5,2),(7,2)", "p=5,q=2;p=7,q=2", True),  # groups of assignments are tuples in written order
        ("(5,2),(7,3)", "p=5,q=2;p=7,q=2", False),
        ("(1,2)", "x=1, y=2", True),
        ("(2,1)", "x=1, y=2", False),
        ("W(x)=1orW(x)=-1", r"W(n) = 1 \text{ and } W(n) = -1", True),  # "or" glued between answers
        ("W(x)=1orW(x)=-2", r"W(n) = 1 \text{ and } W(n) = -1", False),
        ("20:34:00", "20:34", True),  # times of day
        (r"08:34 \text{P.M.}", "20:34", True),
        ("12:05 AM", "0:05", True),
        ("8:34 am", "20:34", False),
        ("7:32", "7:33", False),
    ],
)
def test_later_scalar_rules(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 8\end{pmatrix}",
            r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}",
            True,
        ),
        (
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 8\end{pmatrix}",
            r"\begin{pmatrix}6 & 8 \\ 10 & 13\end{pmatrix}",
            False,
        ),
        (
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}\begin{pmatrix}0 & 1 \\ 1 & 0\end{pmatrix}",
            r"\begin{pmatrix}2 & 1 \\ 4 & 3\end{pmatrix}",
            True,
        ),
        (r"\frac{1}{2}\begin{pmatrix}1 & 2\end{pmatrix}", r"\begin{pmatrix}0.5 & 1\end{pmatrix}", True),
        # powers are not evaluated (A^{10^{9}} would not finish)
        (r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}^{2}", r"\begin{pmatrix}7 & 10 \\ 15 & 22\end{pmatrix}", False),
    ],
)
def test_matrix_arithmetic(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # sums are compared as written, up to the order of commutative factors
        (r"F_n = \sum_{k=0}^{n-1} F_{n-k-1} F_k", r"F_n = \sum_{k=0}^{n-1} F_k F_{n-k-1}", True),
        (r"\sum_{k=0}^{n} k^2", r"\sum_{k=0}^{n-1} k^2", False),
        # same function on its real domain; principal branches differ where the radicand is negative
        (
            r"\frac{v_0 (\frac{r_0}{r + r_0})^{0.5}}{r + r_0}",
            r"\frac{v_{0}}{r_{0}} \frac{1}{(1+r / r_{0})^{3 / 2}}",
            True,
        ),
        (r"\sqrt{x^2}", "x", False),  # |x| is not x: negative real points disagree
        (r"x + i", "x - i", False),
    ],
)
def test_symbolic_later_rules(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # an inequality chain on |x| with numeric ends is the mirrored pair of intervals (no solver)
        (r"1\leq|z|\leq \frac{3}{2}", r"z \in [-\frac{3}{2}, -1] \cup [1, \frac{3}{2}]", True),
        (r"|x| < 2", "(-2,2)", True),
        (r"|x| < 2", "(-2,2]", False),
        (r"|x| > 1", r"(-\infty,-1) \cup (1, \infty)", True),
        (r"|x| \geq 0", r"(-\infty,\infty)", True),
        (r"0 < |x| < 2", r"(-2,0) \cup (0,2)", True),  # a union of open intervals written as pairs
        (r"0 < |x| < 2", "(-2,2)", False),
        (r"(-2,0) \cup (0,3)", r"(-2,0) \cup (0,2)", False),
    ],
)
def test_absolute_value_inequalities(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # a bracketed list is a vector when the gold is a one-column or one-row matrix (entries in order)
        ("[0.5, 1]", r"\begin{matrix} \frac12 \\ 1 \end{matrix}", True),
        ("[0.5, 2]", r"\begin{matrix} \frac12 \\ 1 \end{matrix}", False),
        ("(1, 2)", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", True),
        ("(2, 1)", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", False),
        ("(1, 2, 3)", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", False),
        # a box never closed (a gold with a data error, a cut response) is the short text after its opening
        ("5", r"the value is \boxed{5", True),
        ("6", r"\boxed{5", False),
        (r"so \boxed{5", "5", True),
        ("W(x)=1orW(x)=-1", r"\\boxed{W(n) = 1 \\text{ and } W(n) = -1", True),
    ],
)
def test_vectors_and_cut_golds(pred, gold, expected):
    assert verify(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # numbers written in a base compare by value in that base; the base must be written on both sides
        ("40_0", "40_9", False),
        ("40_{9}", "40_9", True),
        ("040_9", "40_9", True),
        ("36", "40_9", False),
        ("1112122_3", "1112112_3", False),
        ("45_3", "47_3", False),  # not valid numerals in base 3: equal only as written
        ("a_{1}", "a_1", True),  # a subscripted symbol is not a base
        (r"\text{A5}_{71}", r"\text{A5}_{11}", False),
        (r"\text{A5}_{11}", "A5_{11}", True),
        ("-37_1", "-37_8", False),
        ("-37_{8}", "-37_8", True),
        # step functions are compared at wide points too (small points cannot tell these apart)
        (r"\lfloor\frac{2 n-1}{7}\rfloor", r"\lfloor\frac{2 n-1}{5}\rfloor", False),
        (r"\lfloor\frac{2n-1}{5}\rfloor", r"\left\lfloor \frac{2 n - 1}{5} \right\rfloor", True),
        (r"\lceil x \rceil", r"\lfloor x \rfloor + 1", False),  # they differ only at integers
    ],
)
def test_bases_and_step_functions(pred, gold, expected):
    assert verify(pred, gold) is expected
