"""scripts/reproduce_paper.py: the paper's numbers as docs/paper_results.md holds them, run folders resolved to
their newest checkpoint, and the whole command end to end on a tiny text model (scores near 0)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["AIME24", "AMC", "MATH500", "Minerva", "OlympiadBench"]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_paper", REPO / "scripts" / "reproduce_paper.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_paper"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_paper_rows_are_read_from_the_docs(reproduce):
    math, geo = reproduce.paper_rows()
    assert [row.label for row in math] == [
        f"{algo} {model}"
        for model in ("Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B", "DeepSeek-R1-Distill-Qwen-7B")
        for algo in ("GRPO", "GMPO")
    ]
    gmpo_7b = math[3]
    assert gmpo_7b.scores == {"AIME24": 43.3, "AMC": 61.4, "MATH500": 82.0, "Minerva": 33.5, "OlympiadBench": 43.6}
    assert gmpo_7b.avg == 52.7
    assert [(row.label, row.scores["Geometry3K"]) for row in geo] == [
        ("GRPO Qwen2.5-VL-7B-Instruct", 53.3),
        ("GMPO Qwen2.5-VL-7B-Instruct", 54.7),
    ]


def _fake_run(run: Path, model: Path, steps: list[int]) -> None:
    """A run folder whose checkpoints hold the model's files (what latest_checkpoint checks for is there)."""
    for step in steps:
        folder = run / "checkpoints" / f"checkpoint-{step}"
        shutil.copytree(model, folder)
        (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
        torch.save({}, folder / "optimizer.pt")
        torch.save({}, folder / "rng-rank0.pt")  # complete, as latest_checkpoint requires


def test_resolve_model(reproduce, tiny_text_dir, tmp_path):
    _fake_run(tmp_path / "gmpo-run", tiny_text_dir, [2, 10])
    newest = tmp_path / "gmpo-run" / "checkpoints" / "checkpoint-10"
    assert reproduce.resolve_model(str(tmp_path / "gmpo-run")) == (str(newest), "gmpo-run/checkpoint-10")
    assert reproduce.resolve_model(str(newest)) == (str(newest), "gmpo-run/checkpoint-10")
    assert reproduce.resolve_model("Qwen/Qwen2.5-Math-7B") == ("Qwen/Qwen2.5-Math-7B", "Qwen/Qwen2.5-Math-7B")


def test_errors_are_one_line(reproduce, tmp_path, capsys):
    assert reproduce.main([str(tmp_path / "missing")]) == 2
    assert "no such run, checkpoint or model folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert reproduce.main([str(tmp_path / "empty")]) == 2
    assert "neither a model folder" in capsys.readouterr().err
    assert reproduce.main([]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_end_to_end_on_a_tiny_model(reproduce, tiny_text_dir, tmp_path, capsys):
    _fake_run(tmp_path / "gmpo-run", tiny_text_dir, [2, 10])
    out = tmp_path / "out"
    argv = [str(tmp_path / "gmpo-run"), "--limit", "2", "--max-new-tokens", "4", "--output", str(out)]
    assert reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table.strip() in printed
    lines = table.splitlines()
    assert lines[0] == "| model | " + " | ".join(COLUMNS) + " | avg |"
    ours = next(line for line in lines if line.startswith("| gmpo-run/checkpoint-10 |"))
    scores = [float(cell) for cell in ours.strip("| ").split(" | ")[1:]]
    assert len(scores) == 6 and all(0.0 <= s <= 100.0 for s in scores)
    assert "| problems | 2 | 2 | 2 | 2 | 2 |  |" in lines
    paper, _ = reproduce.paper_rows()
    paper_lines = [line for line in lines if line.startswith("| paper: ")]
    assert len(paper_lines) == len(paper) == 6
    assert "| paper: GMPO Qwen2.5-Math-7B | 43.3 | 61.4 | 82.0 | 33.5 | 43.6 | 52.7 |" in lines
    assert "not the paper's protocol: fewer problems than the official suite" in table
    record = json.loads((out / "reproduce.json").read_text())
    assert record["models"][0]["model"].endswith("checkpoint-10")
    summary = json.loads((out / "math-0" / "summary.json").read_text())
    assert summary["sampling"]["temperature"] == 0.0 and summary["sampling"]["n"] == 1
    assert summary["sampling"]["max_model_len"] == 4096 and summary["sampling"]["max_new_tokens"] == 4
    assert {summary[spec]["grader"] for spec in summary["data"]} == {"official"}
    assert scores[-1] == pytest.approx(sum(scores[:5]) / 5, abs=0.06)


@pytest.mark.slow
def test_reproduce_geometry3k_row(reproduce, tiny_vl_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--geometry3k", str(tiny_vl_dir), "--limit", "1", "--max-new-tokens", "2", "--output", str(out)]
    assert reproduce.main(argv) == 0
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == "| model | Geometry3K |"
    assert lines[3] == "| problems | 1 |"
    assert lines[4:6] == [
        "| paper: GRPO Qwen2.5-VL-7B-Instruct | 53.3 |",
        "| paper: GMPO Qwen2.5-VL-7B-Instruct | 54.7 |",
    ]
    summary = json.loads((out / "geometry3k-0" / "summary.json").read_text())
    assert summary["sampling"]["n"] == 16 and summary["sampling"]["temperature"] == 0.5
    result = summary["geometry3k:test"]
    assert result["template"] == "geo3k_easyr1" and result["grader"] == "easyr1" and result["problems"] == 1
    assert f"| {lines[2].split(' | ')[0][2:]} | {100 * result['avg@16']:.1f} |" == lines[2]
