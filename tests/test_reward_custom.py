"""reward.function: loading and checking a user's reward function, scoring in the verifier workers, the
trainer's metrics of it, and a bad spec stopping `mm-gmpo train` before any model loads."""

from __future__ import annotations

import textwrap

import pytest

from mm_gmpo.errors import UserError
from mm_gmpo.reward import VerifierPool, compute_rewards, load_reward_function
from mm_gmpo.reward.custom import CustomScore, as_score, call_reward, example_fields
from mm_gmpo.types import Example

USER_FILE = textwrap.dedent(
    """
    import time
    from mm_gmpo.reward import verify

    def my_reward(response, answer, example):
        if response == "raise":
            raise RuntimeError("boom")
        if response == "sleep":
            time.sleep(30)
        if response == "float":
            return 0.25
        correct = float(verify(response, answer))
        return {"total": correct + example["bonus"], "correct": correct, "bonus": example["bonus"]}

    def two_args(response, answer):
        return 1.0

    NOT_A_FUNCTION = 3
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_FILE)
    return path


def test_file_function_is_loaded_and_called(user_file):
    fn = load_reward_function(f"{user_file}:my_reward")
    score = call_reward(fn, "x = \\boxed{2}", "2", {"bonus": 0.5})
    assert score == CustomScore(1.5, {"total": 1.5, "correct": 1.0, "bonus": 0.5})
    assert call_reward(fn, "float", "2", {}) == CustomScore(0.25, {"total": 0.25})
    failed = call_reward(fn, "raise", "2", {})
    assert failed.total == 0.0 and "RuntimeError: boom" in failed.error


def test_module_function_uses_the_verifier():
    fn = load_reward_function("mm_gmpo.reward.examples:correct_and_short")
    score = call_reward(fn, "\\boxed{C}", "15", {"choices": ["5", "14", "15", "35"]})
    assert score.named["correct"] == 1.0 and score.total == pytest.approx(1.0 + 0.1 * (1 - 9 / 2000))
    assert call_reward(fn, "\\boxed{4}", "15", {}).named["correct"] == 0.0


def test_return_values_are_checked():
    assert as_score(True) == CustomScore(1.0, {"total": 1.0})
    assert as_score({"total": 1, "a": 0.5}).named == {"total": 1.0, "a": 0.5}
    for bad in ("1.0", None, float("nan"), {"a": 1.0}, {"total": "x"}, [1.0]):
        assert as_score(bad).error and as_score(bad).total == 0.0


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no_colon_here", "expected path/to/file.py:name"),
        ("{dir}/missing.py:f", "no such file"),
        ("{dir}/my_rewards.py:absent", "has no attribute 'absent'"),
        ("{dir}/my_rewards.py:NOT_A_FUNCTION", "is not callable"),
        ("{dir}/my_rewards.py:two_args", "cannot be called as two_args(response, answer, example)"),
        ("no_such_package.mod:f", "cannot import module no_such_package.mod"),
    ],
)
def test_bad_specs_name_the_key_and_the_problem(user_file, spec, problem):
    with pytest.raises(UserError) as info:
        load_reward_function(spec.format(dir=user_file.parent))
    assert str(info.value).startswith("reward.function=") and problem in str(info.value)


def test_bad_spec_stops_train_before_the_model_loads(tmp_path, capsys):
    from mm_gmpo.cli import main

    code = main(
        [
            "train",
            "configs/geo3k_tiny.yaml",
            f"trainer.output_dir={tmp_path / 'run'}",
            f"model.path={tmp_path / 'no-model'}",  # loading it would fail with another message
            "model.tiny_if_missing=false",
            f"reward.function={tmp_path / 'nope.py'}:score",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "reward.function=" in err and "no such file" in err
    assert not (tmp_path / "run").exists()


def test_pool_scores_in_workers_with_errors_and_timeouts_counted(user_file):
    spec = f"{user_file}:my_reward"
    responses = ["\\boxed{2}", "\\boxed{3}", "float", "raise", "sleep"]
    examples = [{"bonus": 0.5}] * len(responses)
    with VerifierPool(workers=2, timeout=2.0, reward_function=spec) as pool:
        scores = compute_rewards(
            responses,
            ["2"] * len(responses),
            truncated=[False, False, False, False, False],
            pool=pool,
            examples=examples,
        )
        assert pool.function_errors == 2 and pool.timeouts == 0  # verifier timeouts stay separate
    assert scores.total == [1.5, 0.5, 0.25, 0.0, 0.0]
    assert scores.named["correct"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert scores.named["bonus"] == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert scores.function_errors == 2
    assert scores.accuracy[0] == 1.0  # the verifier's accuracy is still measured, for the metrics


def test_truncated_responses_score_zero_and_metrics_are_named():
    from mm_gmpo.trainer.dist import DistContext
    from mm_gmpo.trainer.reward_metrics import named_reward_metrics

    fn = load_reward_function("mm_gmpo.reward.examples:correct_and_short")
    scores = compute_rewards(
        ["\\boxed{2}", "\\boxed{2}"], ["2", "2"], truncated=[False, True], examples=[{}, {}], reward_function=fn
    )
    assert scores.total[1] == 0.0 and scores.named["correct"] == [1.0, 0.0]
    metrics = named_reward_metrics(DistContext(), scores)
    assert metrics["reward/custom/correct"] == 0.5 and metrics["reward/function_errors"] == 0.0
    assert "reward/custom/total" not in metrics and 0.0 < metrics["reward/custom/brevity"] < 0.5


def test_example_fields_leave_images_out():
    example = Example(
        "7", "p", "2", ["1", "2"], images=["<image>"], source="jsonl:x", meta={"level": 3, "obj": object()}
    )
    assert example_fields(example) == {
        "level": 3,
        "id": "7",
        "problem": "p",
        "choices": ["1", "2"],
        "source": "jsonl:x",
    }


E2E_REWARD = textwrap.dedent(
    """
    def score(response, answer, example):
        if example["id"] == "r1":
            raise ValueError("this row always fails")
        # accuracy and mean are the trainer's names too (issue 29): logged as reward/custom/*, ours stay ours
        return {"total": float(len(response) > 0), "difficulty": example["difficulty"], "accuracy": 7.0, "mean": 9.0}
    """
)


@pytest.mark.slow
def test_train_with_own_reward_on_own_parquet_data(tiny_text_dir, tmp_path):
    """One round of `mm-gmpo train` on a Parquet file with mapped columns and a file-based reward function: the
    unmapped column reaches the function, named scores and failures are logged."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mm_gmpo.cli import main

    rows = [{"id": f"r{i}", "q": f"What is {i} + {i}?", "gold": str(2 * i), "difficulty": 3} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "own.parquet")
    (tmp_path / "own_reward.py").write_text(E2E_REWARD)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "configs/math_tiny.yaml",
            f"trainer.output_dir={out}",
            f"model.path={tiny_text_dir}",
            f"data.train=parquet:{tmp_path / 'own.parquet'}",
            "data.val=",
            "data.prompt_key=q",
            "data.answer_key=gold",
            f"reward.function={tmp_path / 'own_reward.py'}:score",
            "reward.zero_truncated=false",
            "rollout.n=2",
            "rollout.prompts_per_round=4",
            "rollout.max_new_tokens=4",
            "trainer.max_steps=1",
            "trainer.updates_per_round=1",
            "trainer.save_every=0",
            "trainer.num_threads=1",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            "warmstart.steps=0",
        ]
    )
    assert code == 0
    first, row = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["reward/function_errors"] == 2  # the two responses of row r1, scored 0
    assert row["reward/custom/difficulty"] == pytest.approx(3 * 6 / 8)
    assert row["reward/mean"] == pytest.approx(6 / 8) and first["data/train_kept"] == 4
    assert row["reward/custom/mean"] == pytest.approx(9.0 * 6 / 8) and row["reward/accuracy"] <= 1.0
