"""Issue 29: a reward function of one's own cannot overwrite the trainer's metrics, cannot end or hang the run at
import, leaves no process behind when it times out, has its first error shown once, and a finite but huge score
is named for what it is."""

from __future__ import annotations

import logging
import os
import textwrap
import time
from pathlib import Path

import pytest

from mm_gmpo.errors import UserError
from mm_gmpo.reward.custom import as_score, call_reward, check_reward_function
from mm_gmpo.reward.pool import VerifierPool
from mm_gmpo.reward.rewards import RewardScores
from mm_gmpo.trainer.dist import DistContext
from mm_gmpo.trainer.reward_metrics import named_reward_metrics

REPO = Path(__file__).resolve().parents[1]


def _file(tmp_path: Path, body: str, name: str = "mine.py") -> str:
    (tmp_path / name).write_text(textwrap.dedent(body))
    return f"{tmp_path / name}:score"


def test_own_keys_are_logged_under_reward_custom_and_never_overwrite_ours():
    scores = RewardScores(
        total=[7.0, 9.0],
        accuracy=[1.0, 0.0],
        format=[1.0, 1.0],
        timeouts=0,
        errors=0,
        extracted=["1", "2"],
        named={"total": [7.0, 9.0], "accuracy": [7.0, 7.0], "mean": [9.0, 9.0]},
    )
    metrics = named_reward_metrics(DistContext(), scores)
    assert metrics == {"reward/custom/accuracy": 7.0, "reward/custom/mean": 9.0, "reward/function_errors": 0.0}


def test_a_finite_huge_score_is_not_called_non_finite():
    huge = as_score(1e308)
    assert huge.total == 0.0 and "beyond the +-3.403e+38" in huge.error and "finite" not in huge.error
    assert "beyond" in as_score({"total": 1.0, "big": -1e39}).error
    assert as_score(3e38).total == 3e38 and not as_score(3e38).error  # float32 still holds it
    assert as_score(float("inf")).error.endswith("not a finite number (or a dict with 'total')")
    assert "not a number" in as_score("1.0").error
    assert call_reward(lambda r, a, e: 10**400, "", "", {}).error.startswith("returned 1000")  # int beyond float


def test_sys_exit_in_a_call_is_an_error_not_an_exit():
    def leave(response, answer, example):
        raise SystemExit(3)

    assert call_reward(leave, "", "", {}).error == "SystemExit: 3"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\nsys.exit(3)\ndef score(r, a, e): return 1.0\n", "importing it called sys.exit (exit code 3)"),
        ("import time\ntime.sleep(120)\ndef score(r, a, e): return 1.0\n", "importing it took over reward.timeout=1s"),
        ("import os\nos._exit(0)\n", "importing it ended the process (exit code 0)"),
        ("raise KeyError('x')\n", "failed (KeyError: 'x')"),
        ("def score(r): return 1.0\n", "cannot be called as score(response, answer, example)"),
    ],
)
def test_an_import_that_exits_hangs_or_fails_is_one_user_error(tmp_path, body, expected):
    spec = _file(tmp_path, body)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        check_reward_function(spec, timeout=1.0)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - start < 60  # a hang is bounded by the call's time bound after the start


def test_a_good_file_passes_the_check(tmp_path):
    check_reward_function(_file(tmp_path, "def score(r, a, e):\n    return 1.0\n"), timeout=1.0)


def test_train_with_a_reward_file_that_exits_at_import_is_one_line(tmp_path, capsys):
    from mm_gmpo.cli import main

    spec = _file(tmp_path, "import sys\nsys.exit(0)\n")
    code = main(["train", str(REPO / "configs/math_tiny.yaml"), f"trainer.output_dir={tmp_path / 'run'}",
                 f"model.path={tmp_path / 'never-built'}", f"reward.function={spec}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("importing it called sys.exit (exit code 0)")
    assert not (tmp_path / "never-built").exists()  # refused before any model is built or loaded


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead (its parent has not reaped it)
    except FileNotFoundError:
        return False


def test_a_timed_out_call_leaves_no_process_behind(tmp_path):
    pids = tmp_path / "pids"
    spec = _file(
        tmp_path,
        f"""
        import subprocess, time

        def score(response, answer, example):
            child = subprocess.Popen(["sleep", "300"])
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{child.pid}}\\n")
            time.sleep(300)
        """,
    )
    with VerifierPool(workers=1, timeout=1.0, reward_function=spec) as pool:
        results = pool.score_batch(["a"], ["1"], [{}])
        assert "timeout" in results[0].error
        started = [int(p) for p in pids.read_text().split()]
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started and not any(_alive(p) for p in started)


def test_the_first_error_text_is_shown_once(tmp_path, caplog):
    spec = _file(tmp_path, "def score(r, a, e):\n    raise ValueError(f'no luck with {r}')\n")
    with caplog.at_level(logging.WARNING), VerifierPool(workers=1, timeout=30.0, reward_function=spec) as pool:
        for _ in range(2):
            results = pool.score_batch(["x", "y"], ["1", "1"], [{}, {}])
            assert all(r.error for r in results)
    shown = [r.getMessage() for r in caplog.records if "reward.function failed" in r.getMessage()]
    assert shown == ["reward.function failed (scored 0; first error, shown once): ValueError: no luck with x"]
    assert pool.function_errors == 4


def test_workers_lead_their_own_process_group(tmp_path):
    spec = _file(tmp_path, "import os\ndef score(r, a, e):\n    return float(os.getpgid(0) == os.getpid())\n")
    with VerifierPool(workers=1, timeout=30.0, reward_function=spec) as pool:
        assert pool.score_batch(["x"], ["1"], [{}])[0].total == 1.0
        assert os.getpgid(0) != pool._pool[0].process.pid
