"""``mm-gmpo verify --config RECIPE.yaml RESPONSE GOLD``: that recipe's reward in parts, exit 0 iff accuracy is 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_gmpo.cli import main

REPO = Path(__file__).resolve().parents[1]
MATH_RECIPE = str(REPO / "configs" / "math_qwen2_5_math_7b_gmpo.yaml")


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_official_recipe_correct_last_box(capsys):
    assert main(["verify", "--config", MATH_RECIPE, "\\boxed{4} no, \\boxed{5}", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "total 1  = 1 x accuracy 1 + 0 x format 0"
    assert out[1] == "accuracy 1  (official grader)  extracted: '5'"
    assert out[2] == "format 0  (none)"


def test_official_recipe_unboxed_answer_scores_zero(capsys):
    assert main(["verify", "--config", MATH_RECIPE, "So the final answer is 5.", "5"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("total 0 ") and out[1] == "accuracy 0  (official grader)  extracted: None"


def test_truncated_scores_zero(capsys):
    assert main(["verify", "--config", MATH_RECIPE, "\\boxed{5}", "5", "--truncated"]) == 1
    assert "truncated: reward.zero_truncated scores it 0" in capsys.readouterr().out


def test_easyr1_recipe_parts(tmp_path, capsys):
    recipe = _write(tmp_path, "reward:\n  extraction: easyr1\n  format: easyr1\n  workers: 1\n")
    assert main(["verify", "--config", recipe, "\\boxed{5}", "5"]) == 0  # accuracy 1, format 0: exit 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "total 0.9  = 0.9 x accuracy 1 + 0.1 x format 0"
    assert main(["verify", "--config", recipe, "<think>r</think> \\boxed{4}", "5"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "total 0.1  = 0.9 x accuracy 0 + 0.1 x format 1"


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("reward:\n  extraction: oficial\n", "reward.extraction"),
        ("reward:\n  extracton: official\n", "reward.extracton"),
        ("reward:\n  timeout: 0\n", "reward.timeout"),
        ("reward: [1\n", "not valid YAML"),
        ("reward:\n  function: nowhere/none.py:score\n", "reward.function"),
    ],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, capsys, yaml_text, named):
    recipe = _write(tmp_path, yaml_text)
    assert main(["verify", "--config", recipe, "\\boxed{5}", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and recipe in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["verify", "--config", str(tmp_path / "none.yaml"), "5", "5"]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_without_config_unchanged(capsys):
    assert main(["verify", "So the final answer is 5.", "5"]) == 0  # the lenient verifier, as before
    assert capsys.readouterr().out.startswith("correct  extracted: '5'")
    assert main(["verify", "5", "5", "--truncated"]) == 2


def test_reward_function_recipe_prints_its_named_parts(tmp_path, capsys):
    (tmp_path / "myreward.py").write_text(
        "def score(response, answer, example):\n    return {'total': 0.25, 'length': len(response) / 100}\n"
    )
    recipe = _write(tmp_path, f"reward:\n  function: {tmp_path / 'myreward.py'}:score\n  workers: 1\n")
    assert main(["verify", "--config", recipe, "\\boxed{5}", "5"]) == 0  # the verifier's accuracy decides the exit
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("total 0.25  (reward.function ") and out[1] == "  length 0.09"
