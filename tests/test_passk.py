"""pass@k (unbiased estimator) against hand-computed values, and `mm-gmpo eval`'s sampling flags."""

from __future__ import annotations

import argparse
import math

import pytest

from mm_gmpo.errors import UserError
from mm_gmpo.evaluate import add_arguments, check_arguments, format_table
from mm_gmpo.trainer.passk import mean_pass_at_k, pass_at_k, summarize_samples


def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(16, 2, 4) == pytest.approx(1 - 1001 / 1820)  # 1 - C(14,4)/C(16,4) = 0.45
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)  # pass@1 is the fraction correct
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 13, 4) == 1.0  # n - c < k: always a hit
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)  # binomials of ~300 digits, no overflow


def test_pass_at_k_matches_the_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_summaries_over_problems():
    assert mean_pass_at_k([1, 0], 4, [1, 2]) == pytest.approx({1: 0.125, 2: 0.25})
    verdicts = [[True, False, False, False], [False] * 4, [True] * 4]
    summary = summarize_samples(verdicts, [1, 2, 4])
    assert summary == pytest.approx({"pass@1": 5 / 12, "pass@2": (0.5 + 0 + 1) / 3, "pass@4": 2 / 3, "avg@4": 5 / 12})
    table = format_table({"math500": {**summary, "problems": 3}}, ["pass@1", "pass@4", "avg@4"])
    assert table.splitlines()[1].split() == ["math500", "41.7", "66.7", "41.7", "3"]


def _eval_args(*extra: str):
    parser = argparse.ArgumentParser()  # eval's own flags (the full CLI parser imports every command)
    add_arguments(parser)
    return parser.parse_args(["--model", "m", "--data", "math500", *extra])


def test_eval_sampling_flags():
    args = _eval_args("--n", "16", "--k", "16", "1", "4", "--temperature", "0.5", "--top-p", "0.95")
    assert (args.n, args.k, args.temperature, args.top_p) == (16, [16, 1, 4], 0.5, 0.95)
    assert check_arguments(args) == [1, 4, 16]
    old = _eval_args()  # the old flags and defaults: greedy pass@1
    assert (old.n, old.k, old.temperature, old.top_p) == (1, [1], 0.0, 1.0) and check_arguments(old) == [1]
    for bad in (["--n", "4", "--k", "8"], ["--k", "0"], ["--n", "0"], ["--top-p", "0"], ["--temperature", "-1"]):
        with pytest.raises(UserError):
            check_arguments(_eval_args(*bad))


def test_eval_rejects_k_over_n_before_loading_the_model(tmp_path, capsys):
    from mm_gmpo.cli import main

    code = main(["eval", "--model", str(tmp_path / "no-model"), "--data", "math500", "--n", "4", "--k", "1", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "--k 1 8" in err and "--n 4" in err
