"""Issue 29 (round 3): values, files and rows that gave a traceback, were silently accepted, or named the wrong
key now end in one line naming the key, file or row, and exit 2, before any model loads. (Bad ``train`` values and
model folders are rows of the table in test_user_errors.py; the input folders are conftest's ``bad_inputs``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_VL_CONFIG, one_error_line

from mm_gmpo.config import load_config


def test_yaml_duplicate_key_names_key_and_lines(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("trainer:\n  lr: 1.0e-5\n  max_steps: 4\n  lr: 2.0e-5\n")
    line = one_error_line(["train", str(path)], capsys)
    assert f"{path} line 4: not valid YAML (key 'lr' given twice (lines 2 and 4))" in line


def test_same_key_in_two_sections_is_not_a_duplicate(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("trainer:\n  lr: 1.0e-5\nwarmstart:\n  lr: 2.0e-3\n")
    cfg = load_config(path)
    assert (cfg.trainer.lr, cfg.warmstart.lr) == (1e-5, 2e-3)


def test_yaml_not_utf8_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin.yaml"
    path.write_bytes("trainer:\n  lr: 1.0e-5\n  # caf\xe9\n".encode("latin-1"))
    line = one_error_line(["train", str(path)], capsys)
    assert f"{path} line 3 is not UTF-8 text (byte 0xe9)" in line


def test_section_with_all_keys_commented_out_is_empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("trainer:\n  # lr: 1.0e-5\nrollout:\n  n: 4\n")
    assert load_config(path).trainer.lr == 1e-6  # the default
    cfg = load_config(path, ["trainer.lr=3e-5"])  # and an override into it is not "not a section"
    assert (cfg.trainer.lr, cfg.rollout.n) == (3e-5, 4)


def _offline(monkeypatch) -> None:
    """As HF_HUB_OFFLINE=1 at start (the hub library reads it once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_id_offline_is_one_line(monkeypatch):
    from mm_gmpo.errors import UserError
    from mm_gmpo.models import is_vision_model

    _offline(monkeypatch)
    with pytest.raises(UserError, match=r"^model no-such-org/no-such-model-xyz: its config cannot be loaded \("):
        is_vision_model("no-such-org/no-such-model-xyz")


# --- data rows -------------------------------------------------------------------------------------------------

BAD_ROWS = [
    ("null row", "null", "row 1 ({path}): not a JSON object of columns (null)", "bad_row"),
    ("list row", '["a", "b"]', "row 1 ({path}): not a JSON object of columns (list)", "bad_row"),
    ("problem object", '{"problem": {"x": 1}, "answer": "3"}', "problem is a dict, not text", "bad_problem"),
    ("answer object", '{"problem": "1+2?", "answer": {"v": 3}}', "answer is an object", "bad_answer"),
]
GOOD = '{"problem": "1+1?", "answer": "2"}'
GEO = '{"problem": "Find x.", "answer": "3", "point_positions": {"A": [0, 0], "B": [10, 0], "C": [0, 10]}}'


def _write(tmp_path: Path, bad: str, first: str = GOOD) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text(f"{first}\n{bad}\n")
    return path


@pytest.mark.parametrize(("case", "bad", "message", "reason"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
@pytest.mark.parametrize("layout", ["math", "geometry3k", "columns"])
def test_bad_jsonl_rows_fail_or_are_skipped(case, bad, message, reason, layout, tmp_path):
    from mm_gmpo.data import load_examples
    from mm_gmpo.data.generic import ColumnKeys
    from mm_gmpo.errors import UserError

    if layout == "geometry3k" and bad.startswith("{"):  # a row with annotations takes the Geometry3K path
        bad = bad[:-1] + ', "point_positions": {"A": [0, 0]}}'
    path = _write(tmp_path, bad, first=GEO if layout == "geometry3k" else GOOD)
    keys = ColumnKeys(prompt="problem") if layout == "columns" else None
    spec = f"jsonl:{path}"
    with pytest.raises(UserError) as error:
        load_examples(spec, keys=keys)
    assert message.format(path=path) in str(error.value)
    assert str(error.value).startswith(spec)
    examples, stats = load_examples(spec, keys=keys, skip_invalid=True)
    assert (len(examples), stats.skipped) == (1, {reason: 1})


def test_bad_row_in_a_staged_math_file(tmp_path):
    from mm_gmpo.data import load_examples
    from mm_gmpo.errors import UserError

    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "math500.jsonl").write_text(f"{GOOD}\nnull\n")
    with pytest.raises(UserError, match=r"math500 row 1 \(.*math500.jsonl\): not a JSON object of columns \(null\)"):
        load_examples("math500", source="local", local_dir=tmp_path)


def test_train_with_a_null_row_is_one_line(tmp_path, capsys, tiny_vl_dir):
    path = _write(tmp_path, "null")
    argv = ["train", TINY_VL_CONFIG, f"model.path={tiny_vl_dir}", f"trainer.output_dir={tmp_path}/run"]
    line = one_error_line([*argv, f"data.train=jsonl:{path}", "data.val="], capsys)
    assert f"jsonl:{path} row 1 ({path}): not a JSON object of columns (null)" in line


# --- eval, verify, sft, plot ------------------------------------------------------------------------------------

EVAL = [
    ("batch size 0", ["--batch-size", "0"], "--batch-size 0 must be at least 1"),
    ("max new tokens 0", ["--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),
    ("temperature inf", ["--temperature", "inf"], "--temperature inf must be a finite number >= 0"),
    ("temperature nan", ["--temperature", "nan"], "--temperature nan must be a finite number >= 0"),
    ("output a file", ["--output", "{tmp}/afile"], "--output={tmp}/afile is a file, not a folder"),
    ("output unwritable", ["--output", "/sys/mm-gmpo-eval"], "--output=/sys/mm-gmpo-eval is not writable"),
    ("empty data set", ["--data", "jsonl:{tmp}/empty.jsonl"], "no problems to evaluate"),
    ("n too large", ["--n", "100000000", "--k", "1"], "--n 100000000: one batch of"),
]


@pytest.mark.parametrize(("case", "extra", "message"), EVAL, ids=[c[0] for c in EVAL])
def test_eval_refuses_before_sampling(case, extra, message, bad_inputs, capsys):
    (bad_inputs / "empty.jsonl").write_text("\n")
    (bad_inputs / "one.jsonl").write_text(GOOD + "\n")
    argv = ["eval", "--model", f"{bad_inputs}/fakemodel", "--data", f"jsonl:{bad_inputs}/one.jsonl"]
    line = one_error_line([*argv, *(e.format(tmp=bad_inputs) for e in extra)], capsys)
    assert line.startswith("mm-gmpo eval: error: ")
    assert message.format(tmp=bad_inputs) in line


def test_verify_output_unwritable_before_grading(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"response": "1", "gold": "1"}) + "\n")
    for output, message in ((tmp_path, "is a folder, not a file"), ("/sys/verdicts.jsonl", "is not writable")):
        line = one_error_line(["verify", "--input", str(rows), "--output", str(output)], capsys)
        assert line.startswith(f"mm-gmpo verify: error: --output={output} ")
        assert message in line


def test_verify_output_check_leaves_no_file(tmp_path):
    from mm_gmpo.paths import writable_file

    writable_file(tmp_path / "sub" / "out.jsonl", "--output")
    assert (tmp_path / "sub").is_dir() and not (tmp_path / "sub" / "out.jsonl").exists()


def test_sft_out_a_file_before_training(bad_inputs, capsys):
    argv = [
        "sft",
        TINY_VL_CONFIG,
        f"model.path={bad_inputs}/fakemodel",
        "warmstart.steps=2",
        "--out",
        f"{bad_inputs}/afile",
    ]
    line = one_error_line(argv, capsys)
    assert line == f"mm-gmpo sft: error: --out={bad_inputs}/afile is a file, not a folder"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"step": 1, "loss": 0.5}\n\xff\xfe\n', "metrics.jsonl:2: not UTF-8 text"),
        (b'{"step": 1, "loss": 0.5}\nnull\n', "metrics.jsonl:2: not a metrics row"),
        (b'{"step": 1}\n{"loss": 0.5}\n', "metrics.jsonl:2: not a metrics row"),
        (b'{"step": 1, "loss": 0.5}\n{"step": 2, "lo', "metrics.jsonl:2: not valid JSON"),
    ],
    ids=["not utf-8", "null row", "no step", "cut short"],
)
def test_plot_on_a_damaged_metrics_file(content, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(content)
    line = one_error_line(["plot", str(run)], capsys)
    assert line.startswith("mm-gmpo plot: error: ") and message in line


def test_round_memory_bound_is_hand_computed():
    from mm_gmpo.rollout.memory import BYTES_PER_TOKEN, memory_problem, sampling_memory_bytes

    assert sampling_memory_bytes(10, 100) == 10 * 100 * BYTES_PER_TOKEN == 32_000
    assert memory_problem(10, 100, available=32_000) is None
    assert "need at least" in memory_problem(10, 100, available=31_999)


def test_device_memory_bound_is_hand_computed():
    """KV cache bytes per token of a Qwen2.5-Math-7B-like config: 2 x 28 layers x 4 key-value heads x 128 x bf16."""
    from types import SimpleNamespace

    from mm_gmpo.rollout.memory import SCORE_BYTES, device_memory_problem, kv_bytes_per_token

    text = SimpleNamespace(num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, hidden_size=3584)
    assert kv_bytes_per_token(text, 2) == 2 * 28 * 4 * 128 * 2 == 57_344
    assert kv_bytes_per_token(SimpleNamespace(text_config=text), 2) == 57_344  # a VLM's text model
    assert kv_bytes_per_token(SimpleNamespace(hidden_size=8), 2) is None  # the config does not say
    need = 10 * (100 * 57_344 + 1000 * SCORE_BYTES)
    assert device_memory_problem(10, 100, kv_per_token=57_344, vocab_size=1000, available=need) is None
    assert "device memory" in device_memory_problem(10, 100, kv_per_token=57_344, vocab_size=1000, available=need - 1)


def test_eval_refuses_a_batch_whose_kv_cache_cannot_fit_the_gpu(tiny_text_dir, monkeypatch):
    """The GPU check reads the model's config (not its weights) and the device's free memory (faked here)."""
    import argparse

    from mm_gmpo.errors import UserError
    from mm_gmpo.evaluate import check_device_memory

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))
    args = argparse.Namespace(model=str(tiny_text_dir), dtype="bfloat16", n=100_000, max_new_tokens=3000)
    with pytest.raises(UserError, match=r"^--n 100000: one batch of .* GiB of device memory"):
        check_device_memory(args, rows=100_000, device=torch.device("cuda", 0))
    args.n = 2
    check_device_memory(args, rows=2, device=torch.device("cuda", 0))  # fits: no error


@pytest.mark.parametrize(
    ("cell", "message", "reason"),
    [
        ('"choices": 5', "choices must be a list of texts, got int", "bad_choices"),
        ('"choices": {"A": 1}', "choices must be a list of texts, got dict", "bad_choices"),
        ('"images": 7', "images must be a path or a list of paths", "bad_image"),
    ],
)
def test_bad_choices_and_image_cells_are_bad_rows(cell, message, reason, tmp_path):
    from mm_gmpo.data import load_examples
    from mm_gmpo.errors import UserError

    path = _write(tmp_path, '{"problem": "Find x.", "answer": "3", "point_positions": {"A": [0, 0]}, ' + cell + "}")
    with pytest.raises(UserError, match=message):
        load_examples(f"jsonl:{path}")
    examples, stats = load_examples(f"jsonl:{path}", skip_invalid=True)
    assert (len(examples), stats.skipped) == (1, {reason: 1})


def test_intergps_data_json_not_an_object(tmp_path):
    from mm_gmpo.data.images import BadRow
    from mm_gmpo.data.rows import intergps_example

    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "data.json").write_text("[1, 2]")
    with pytest.raises(BadRow, match=r"row 7 .*data.json / logic_form.json is not a JSON object"):
        intergps_example(tmp_path / "7", dataset="geometry3k:train")


def test_eval_hub_id_offline_is_one_line(tmp_path, capsys, monkeypatch):
    _offline(monkeypatch)
    (tmp_path / "one.jsonl").write_text(GOOD + "\n")
    argv = ["eval", "--model", "no-such-org/no-such-model-xyz", "--data", f"jsonl:{tmp_path}/one.jsonl"]
    line = one_error_line(argv, capsys)
    assert line.startswith("mm-gmpo eval: error: model no-such-org/no-such-model-xyz: its config cannot be loaded (")
