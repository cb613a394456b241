"""scripts/compare_runs.py on hand-made runs: timings are left out, any other logged difference and any byte of the
newest checkpoint's weights count."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts/compare_runs.py"


@pytest.fixture(scope="module")
def compare_runs():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_runs"] = module
    spec.loader.exec_module(module)
    return module


def _run(path: Path, rows: list[dict], weight: float, step: int = 4) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = path / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.full((2,), weight)}, str(folder / "model.safetensors"))
    torch.save({}, folder / "optimizer.pt")  # a complete checkpoint, as the trainer writes it
    torch.save({}, folder / "rng-rank0.pt")
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_same_runs_but_for_timings_are_the_same(compare_runs, tmp_path, capsys):
    rows = [{"step": 1, "actor/pg_loss": 0.25, "perf/step_seconds": 1.0, "rollout/tokens_per_s": 10.0}]
    a = _run(tmp_path / "a", rows, 1.0)
    b = _run(tmp_path / "b", [{**rows[0], "perf/step_seconds": 2.0, "rollout/tokens_per_s": 7.0}], 1.0)
    assert compare_runs.main([str(a), str(b)]) == 0
    assert "1 rows, 2 logged values compared (timings left out), 0 differ" in capsys.readouterr().out


def test_a_logged_difference_a_missing_row_or_other_weights_fail(compare_runs, tmp_path, capsys):
    rows = [{"step": 1, "actor/pg_loss": 0.25}, {"step": 2, "actor/pg_loss": 0.5}]
    a = _run(tmp_path / "a", rows, 1.0)
    b = _run(tmp_path / "b", [rows[0], {"step": 2, "actor/pg_loss": 0.5000001}], 1.0)
    assert compare_runs.main([str(a), str(b)]) == 1
    assert "step 2: actor/pg_loss 0.5 against 0.5000001" in capsys.readouterr().out
    c = _run(tmp_path / "c", rows[:1], 1.0)
    assert compare_runs.compare_metrics(a, c)[2] == ["2 rows against 1"]
    d = _run(tmp_path / "d", rows, 2.0)
    assert compare_runs.main([str(a), str(d)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    later = _run(tmp_path / "e", rows, 1.0, step=6)
    assert not compare_runs.compare_weights(a, later)[2]  # the same bytes at another step are not the same run
