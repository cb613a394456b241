"""Every command in the bash code blocks of the README and of the pages in docs/, as a user types it.

Each command is (1) parsed exactly as written: by our CLI's own parser (with the `--local_rank=0` that the DeepSpeed
launcher puts before the subcommand), by the launcher's parser (DeepSpeed's runner, torchrun), and for `train` its
config loaded with its overrides; and (2) listed in CPU_FORMS with the test that runs its CPU form (tiny model, few
steps). A documented command that no longer parses, or a new one without a CPU-form test, fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))

# (program, first argument) -> the tests that run the command's CPU form, or why none does
CPU_FORMS = {
    ("bash", "scripts/quickstart.sh"): [
        "tests/test_train_e2e.py::test_single_process_run",  # mm-gmpo train configs/geo3k_tiny.yaml (shorter)
        "tests/test_sft_cli.py::test_sft_saves_the_trainers_warm_start",  # mm-gmpo sft
        "tests/test_does_it_learn_text.py::test_gmpo_raises_held_out_accuracy_on_the_text_task",  # its text run
        "tests/test_eval_plot.py::test_plot_overlays_runs",  # mm-gmpo plot
    ],
    ("bash", "scripts/test.sh"): [".ci/run"],  # CI runs it as it is
    ("bash", "scripts/gpu_smoke.sh"): ["tests/test_gpu_smoke.py::test_gpu_smoke_runs_on_a_cpu_in_bf16_autocast"],
    ("bash", "scripts/check_gpu_install.sh"): ["by hand: resolves a CUDA install from PyPI (minutes)"],
    ("pip", "install"): ["CI's own install (requirements.txt, constraints.txt); check_gpu_install.sh for [gpu]"],
    ("deepspeed", "train"): ["tests/test_launchers.py::test_deepspeed_launcher_runs_the_readme_line"],
    ("torchrun", "train"): ["tests/test_launchers.py::test_torchrun_runs_the_readme_line"],
    ("mm-gmpo", "train"): ["tests/test_train_e2e.py::test_single_process_run"],
    ("mm-gmpo", "eval"): [
        "tests/test_eval_plot.py::test_eval_writes_items_and_summary",
        "tests/test_paper_eval.py::test_eval_caps_each_response_to_the_context",
    ],
    ("mm-gmpo", "plot"): ["tests/test_eval_plot.py::test_plot_overlays_runs"],
    ("mm-gmpo", "verify"): [
        "tests/test_verify_config.py::test_without_config_unchanged",
        "tests/test_reward_hardening.py::test_cli_null_gold_is_an_input_error_naming_the_line",
    ],
    ("python", "scripts/reproduce_paper.py"): [
        "tests/test_reproduce_paper.py::test_reproduce_end_to_end_on_a_tiny_model"
    ],
    ("python", "scripts/bench/train_vs_trl.py"): [
        "a benchmark, run by hand: prints its numbers (docs/performance.md)"
    ],
    ("python", "scripts/bench/profile_step.py"): [
        "a benchmark, run by hand: prints its profile (docs/performance.md)"
    ],
    ("python", "scripts/does_it_learn.py"): [
        "tests/test_does_it_learn.py::test_gmpo_raises_held_out_accuracy_above_the_warm_start",
        "tests/test_does_it_learn_text.py::test_gmpo_raises_held_out_accuracy_on_the_text_task",
    ],
}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command line in the docs' bash blocks: continuations joined, comments dropped."""
    found = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    found.append((f"{doc}: {line.strip()[:60]}", argv))
    return found


def key_of(argv: list[str]) -> tuple[str, str]:
    program = argv[0]
    if program in ("deepspeed", "torchrun") or argv[:3] == ["python", "-m", "mm_gmpo"]:
        return ("mm-gmpo" if program == "python" else program, mm_gmpo_args(argv)[0])
    if program == "mm-gmpo":
        return (program, argv[1])
    return (program, argv[1])


def mm_gmpo_args(argv: list[str]) -> list[str]:
    """The arguments our CLI receives from the command: after `--module mm_gmpo` / `-m mm_gmpo` / `mm-gmpo`."""
    if argv[0] == "mm-gmpo":
        return argv[1:]
    for flag in ("--module", "-m"):
        if flag in argv and argv[argv.index(flag) + 1] == "mm_gmpo":
            return argv[argv.index(flag) + 2 :]
    raise AssertionError(f"no mm_gmpo module in {argv}")


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    keys = {key_of(argv) for _, argv in COMMANDS}
    assert {("deepspeed", "train"), ("torchrun", "train"), ("mm-gmpo", "eval"), ("pip", "install")} <= keys
    readme = {key_of(argv) for where, argv in COMMANDS if where.startswith("README.md")}
    assert {("bash", "scripts/quickstart.sh"), ("bash", "scripts/test.sh")} <= readme  # the two fresh-machine commands


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_has_a_cpu_form_test(where, argv):
    tests = CPU_FORMS.get(key_of(argv))
    assert tests, f"{where}: no test runs this command's CPU form; add one and list it in CPU_FORMS"
    for test in tests:
        if "::" not in test:
            continue
        file, name = test.split("::")
        assert f"def {name}(" in (REPO / file).read_text(), f"{where}: {test} does not exist"


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_parses_as_typed(where, argv):
    program = argv[0]
    if program in ("bash", "python") and argv[1].startswith("scripts/"):
        assert (REPO / argv[1]).is_file(), f"{where}: {argv[1]} does not exist"
        return
    if program == "pip":
        for i, arg in enumerate(argv):
            if arg in ("-c", "-r"):
                assert (REPO / argv[i + 1]).is_file(), f"{where}: {argv[i + 1]} does not exist"
        return
    if program == "deepspeed":
        from deepspeed.launcher.runner import parse_args

        launcher = parse_args(argv[1:])
        assert launcher.module and launcher.user_script == "mm_gmpo", where
    if program == "torchrun":
        from torch.distributed.run import get_args_parser

        launcher = get_args_parser().parse_args(argv[1:])
        assert launcher.module and launcher.training_script == "mm_gmpo", where
    args = mm_gmpo_args(argv)
    if program == "deepspeed":
        args = ["--local_rank=0", *args]  # what the launcher passes to every process
    from mm_gmpo.cli import build_parser

    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"{where}: does not parse ({args})") from exc
    if parsed.command == "train":
        from mm_gmpo.config import load_config

        assert (REPO / parsed.config).is_file(), f"{where}: {parsed.config} does not exist"
        load_config(REPO / parsed.config, parsed.overrides)
