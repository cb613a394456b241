"""`mm-gmpo eval` and `mm-gmpo plot` through the CLI entry point."""

import json

import pytest

from mm_gmpo.cli import main


def _write_run(folder, slope):
    folder.mkdir()
    with (folder / "metrics.jsonl").open("w") as f:
        f.write(json.dumps({"step": 0, "val/accuracy": 0.1}) + "\n")
        for step in range(1, 6):
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "reward/mean": slope * step,
                        "actor/entropy": 1.0 - 0.1 * step,
                        "response_length/mean": 10.0 + step,
                        "actor/log_ratio_min": -0.1 * step,
                        "actor/log_ratio_max": 0.1 * step,
                        "actor/clip_frac": 0.01,
                    }
                )
                + "\n"
            )


def test_plot_overlays_runs(tmp_path):
    _write_run(tmp_path / "gmpo", 0.1)
    _write_run(tmp_path / "grpo", 0.05)
    out = tmp_path / "figs"
    assert main(["plot", str(tmp_path / "gmpo"), str(tmp_path / "grpo"), "--out", str(out)]) == 0
    for name in ("summary", "reward", "entropy", "response_length", "log_ratio_range"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_smooth_is_a_trailing_mean():
    from mm_gmpo.plot import smooth

    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert smooth([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    assert smooth([2.0, 4.0], 10) == [2.0, 3.0]


def test_plot_smooth_flag(tmp_path, capsys):
    _write_run(tmp_path / "gmpo", 0.1)
    assert main(["plot", str(tmp_path / "gmpo"), "--smooth", "3", "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "entropy.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path / "gmpo"), "--smooth", "0"]) == 2
    assert "--smooth 0" in capsys.readouterr().err


def test_plot_errors_name_the_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n{oops\n')
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert "metrics.jsonl:2" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_writes_items_and_summary(tiny_vl_dir, tmp_path):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_vl_dir),
            "--data",
            "geometry3k:test",
            "--limit",
            "3",
            "--max-new-tokens",
            "4",
            "--max-pixels",
            "12544",
            "--n",
            "2",
            "--k",
            "1",
            "2",
            "--temperature",
            "1.0",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    result = summary["geometry3k:test"]
    assert result["problems"] == 3 and summary["sampling"]["k"] == [1, 2]
    assert result["pass@1"] == pytest.approx(result["avg@2"])
    assert 0.0 <= result["pass@1"] <= result["pass@2"] + 1e-12 <= 1.0 + 1e-12
    assert set(summary["average"]) == {"pass@1", "pass@2", "avg@2"}
    items = [json.loads(line) for line in (out / "items-geometry3k_test.jsonl").read_text().splitlines()]
    assert len(items) == 3 and all(len(item["responses"]) == len(item["verdicts"]) == 2 for item in items)
    assert all(item["num_correct"] == sum(item["verdicts"]) for item in items)
