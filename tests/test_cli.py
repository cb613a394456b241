"""The mm-gmpo command line: help, exit codes, one-line errors, make-tiny-model."""

import subprocess
import sys

import pytest

from mm_gmpo.cli import COMMANDS, main


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mm_gmpo", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_subcommands():
    result = _run("--help")
    assert result.returncode == 0
    for name in ("train", "eval", "verify", "plot", "make-tiny-model"):
        assert name in result.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mm-gmpo " + command in capsys.readouterr().out


def test_bad_override_is_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  max_steps: 1\n")
    result = _run("train", str(config), "trainer.lrr=1e-5")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "mm-gmpo train: error: unknown config key trainer.lrr; did you mean trainer.lr?"
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path):
    result = _run("train", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr and "Traceback" not in result.stderr


def test_unknown_subcommand():
    assert _run("fly").returncode != 0


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "qwen3_vl"])
def test_make_tiny_model(tmp_path, kind):
    out = tmp_path / "tiny"
    assert main(["make-tiny-model", "--kind", kind, "--out", str(out), "--hidden", "32", "--layers", "1"]) == 0
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(out)
    text = config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, config.model_type) == (32, 1, kind)
