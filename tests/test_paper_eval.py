"""The official GMPO evaluation suite: its specs and rows, the shipped files, the preparation script, the
official protocol of `mm-gmpo eval --data paper-math` (prompt, context limit, grader) and its bad-data errors."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from mm_gmpo.cli import main
from mm_gmpo.data import load_examples
from mm_gmpo.data.images import BadRow
from mm_gmpo.data.loaders import expand_specs, parse_spec
from mm_gmpo.data.rows import official_example, official_golds
from mm_gmpo.errors import UserError
from mm_gmpo.evaluate import response_budgets
from mm_gmpo.paper_eval import gold_of
from mm_gmpo.types import Example, Prompt

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "sample" / "math" / "official_eval"
SHARED_SUITE = REPO.parent / "shared" / "data" / "math" / "official_eval"
SPECS = ["official:aime", "official:amc", "official:math", "official:minerva", "official:olympiad_bench"]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_golds_as_the_official_grader_receives_them():
    assert official_golds("\\frac{1}{2}", "h") == ["\\frac{1}{2}"]
    assert official_golds(142.0, "h") == ["142.0"]  # boxed_reward_fn grades str(gold)
    assert official_golds(7, "h") == ["7"]
    assert official_golds(["9.6\n", "9.60"], "h") == ["9.6\n", "9.60"]
    bad = [None, "", "  ", [], ["1", 2], [""], True, {"a": 1}, math.nan, math.inf]
    for value in bad:
        with pytest.raises(BadRow, match="^official:amc row amc/3 \\(f.jsonl\\)"):
            official_golds(value, "official:amc row amc/3 (f.jsonl)")


def test_official_example_keeps_problem_and_golds():
    row = {"id": "minerva/0", "problem": "Find it.  ", "answer": ["9.6\n", "9.7"]}
    example = official_example(row, dataset="official:minerva", index=0, where="m.jsonl")
    assert example.problem == "Find it.  "  # as the official prompt has it
    assert example.answer == "9.6, 9.7" and example.meta["golds"] == ["9.6\n", "9.7"]
    with pytest.raises(BadRow, match="row 4 \\(m.jsonl\\): not a JSON object"):
        official_example([1, 2], dataset="official:minerva", index=4, where="m.jsonl")
    with pytest.raises(BadRow, match="row x \\(m.jsonl\\): missing or empty problem"):
        official_example({"id": "x", "answer": "1"}, dataset="official:minerva", index=0, where="m.jsonl")


def test_specs_and_suite():
    assert expand_specs(["paper-math"]) == SPECS
    assert expand_specs(["official:amc", "paper-math", "amc23"]) == [*SPECS[1:2], SPECS[0], *SPECS[2:], "amc23"]
    assert parse_spec("official:amc") == ("official:amc", None)
    with pytest.raises(UserError, match="names several sets"):
        parse_spec("paper-math")


def test_shipped_suite_is_complete_and_graded_by_its_golds():
    counts = {}
    for spec in SPECS:
        examples, stats = load_examples(spec, source="local")
        counts[spec] = len(examples)
        assert stats.origin == str(SHIPPED / f"{spec.split(':')[1]}.jsonl")
    assert counts == dict(zip(SPECS, [30, 83, 500, 272, 675], strict=True))
    amc, _ = load_examples("official:amc", source="local", split_limit=1)
    assert amc[0].id == "amc/0" and amc[0].meta["golds"] == ["142.0"]
    minerva, _ = load_examples("official:minerva", source="local", split_limit=1)
    assert minerva[0].meta["golds"] == ["9.6\n"]


@pytest.mark.skipif(not SHARED_SUITE.is_dir(), reason="the staged copy of the official suite is not here")
def test_shipped_files_equal_the_staged_copy():
    for path in sorted(SHIPPED.glob("*.jsonl")):
        assert path.read_bytes() == (SHARED_SUITE / path.name).read_bytes(), path.name


def test_missing_suite_names_the_file_and_the_script(tmp_path):
    (tmp_path / "math").mkdir()
    with pytest.raises(UserError, match="not on the hub .*no math/official_eval/amc.jsonl under .*prepare_paper_eval"):
        load_examples("official:amc", local_dir=tmp_path)
    with pytest.raises(UserError, match="not on the hub"):
        load_examples("official:amc", source="hub")


@pytest.mark.parametrize(
    ("answer", "message"),
    [(None, "no answer"), ([], "an empty list"), ([3], "holds something other"), ({"x": 1}, "of type dict")],
)
def test_eval_bad_row_is_one_line_naming_file_and_row(tmp_path, capsys, answer, message):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')  # the data is read before the model loads
    (model / "model.safetensors").write_bytes(b"\x02" + bytes(7) + b"{}")  # an empty but whole safetensors file
    rows = [{"id": "minerva/0", "problem": "p", "answer": ["1"]}, {"id": "minerva/1", "problem": "q"}]
    if answer is not None:
        rows[1]["answer"] = answer
    path = _write_jsonl(tmp_path / "data/math/official_eval/minerva.jsonl", rows)
    argv = ["eval", "--model", str(model), "--data", "paper-math", "--local-dir", str(tmp_path / "data")]
    _write_jsonl(tmp_path / "data/math/official_eval/aime.jsonl", [{"id": "aime/0", "problem": "p", "answer": "1"}])
    for name in ("amc", "math", "olympiad_bench"):
        _write_jsonl(tmp_path / f"data/math/official_eval/{name}.jsonl", [{"problem": "p", "answer": 1.0}])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"official:minerva row minerva/1 ({path})" in err and message in err


def _suite_dict(tmp_path: Path, minerva_answers: list) -> Path:
    import datasets

    def table(problems, answers, **extra):
        return datasets.Dataset.from_dict({"problem": problems, "answer": answers, **extra})

    suite = datasets.DatasetDict(
        aime=table(["a0", "a1"], ["33", "23"], difficulty=[1.0, 2.0]),
        amc=table(["c0"], [142.0], difficulty=[2.0]),
        math=table(["m0"], ["\\frac{1}{2}"], difficulty=[3.0]),
        minerva=table(["v0", "v1"], minerva_answers),
        olympiad_bench=table(["o0"], [["(1,2)"]]),
    )
    suite.save_to_disk(str(tmp_path / "evaluation_suite"))
    return tmp_path / "evaluation_suite"


def test_prepare_script_rebuilds_the_jsonl(tmp_path, capsys):
    prepare = _load_script("prepare_paper_eval")
    src = _suite_dict(tmp_path, [["9.6\n"], ["1", "2"]])
    assert prepare.main(["--src", str(src), "--out", str(tmp_path / "out/math/official_eval")]) == 0
    minerva = [
        json.loads(line) for line in (tmp_path / "out/math/official_eval/minerva.jsonl").read_text().split("\n")[:-1]
    ]
    assert minerva == [{"id": "minerva/0", "problem": "v0", "answer": ["9.6\n"]},
                       {"id": "minerva/1", "problem": "v1", "answer": ["1", "2"]}]  # fmt: skip
    amc = json.loads((tmp_path / "out/math/official_eval/amc.jsonl").read_text())
    assert amc == {"id": "amc/0", "problem": "c0", "answer": 142.0, "difficulty": 2.0}
    assert "aime: 2 rows (the official suite has 30)" in capsys.readouterr().out
    # the written files are what the loader reads
    (example,), _ = load_examples("official:olympiad_bench", source="local", local_dir=tmp_path / "out")
    assert example.meta["golds"] == ["(1,2)"]


def test_prepare_script_refuses_bad_rows(tmp_path, capsys):
    prepare = _load_script("prepare_paper_eval")
    src = _suite_dict(tmp_path, [["9.6"], []])
    capsys.readouterr()  # the progress bars of save_to_disk
    assert prepare.main(["--src", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "official:minerva row minerva/1" in err and "empty list" in err
    assert not (tmp_path / "out").exists()  # nothing written
    assert prepare.main(["--src", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a saved DatasetDict" in capsys.readouterr().err


def test_eval_grades_list_golds_as_the_official_evaluation():
    """The golds the evaluation sends (gold_of) through the official grader's pool: a list gold is answered by any
    item, a float gold as str(float), only the last box counts, no box scores 0."""
    from mm_gmpo.evaluate import _Graders

    minerva = Example("minerva/1", "p", "1, 2", meta={"golds": ["1", "2"]})
    amc = Example("amc/0", "p", "142.0", meta={"golds": ["142.0"]})
    plain = Example("x", "p", "\\frac{1}{2}")
    assert [gold_of(e) for e in (minerva, amc, plain)] == [["1", "2"], ["142.0"], "\\frac{1}{2}"]
    cases = [
        ("so \\boxed{2}", minerva, True),  # the second gold
        ("\\boxed{3}", minerva, False),
        ("\\boxed{142}", amc, True),
        ("\\boxed{142} then \\boxed{7}", amc, False),  # the last box is the answer
        ("The answer is 142.", amc, False),  # no box: 0, unlike the lenient verifier
        ("\\boxed{0.5}", plain, True),
    ]
    with _Graders() as graders:
        pool = graders.get("official")
        grades = pool.grade_batch([c[0] for c in cases], [gold_of(c[1]) for c in cases])
        lenient = graders.get("lenient").grade_batch(["The answer is 142."], [gold_of(amc)])
    assert [g.correct for g in grades] == [c[2] for c in cases]
    assert lenient[0].correct  # what --grader lenient would have credited


def test_response_budgets_fit_the_context():
    prompts = [Prompt("t", [], Example(f"r{i}", "p", "1", source="official:amc")) for i in range(3)]
    assert response_budgets(prompts, [10, 50, 119], 100, 120) == [100, 70, 1]
    assert response_budgets(prompts, [10, 50, 5000], 100, None) == [100, 100, 100]
    with pytest.raises(UserError, match="official:amc row r2: its prompt has 120 tokens.*--max-model-len 120"):
        response_budgets(prompts, [10, 50, 120], 100, 120)


def test_official_prompt_is_the_official_template(tiny_text_dir):
    """The Qwen-Math prompt through the model's chat template equals evaluate_model.py's apply_qwen_math_template,
    byte for byte (here on a problem that ends in two spaces)."""
    from mm_gmpo.data import build_prompts
    from mm_gmpo.models import load_processor

    examples, _ = load_examples("official:amc", source="local", split_limit=5)
    example = examples[4]
    assert example.problem.endswith("  ")
    (prompt,), _ = build_prompts(
        [example], load_processor(tiny_text_dir), template="qwen_math", max_prompt_length=1 << 20, min_pixels=1,
        max_pixels=2,
    )  # fmt: skip
    official = (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\n" + example.problem + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.text == official


def test_vllm_engine_gets_the_context():
    from mm_gmpo.rollout.engine import vllm_settings

    assert vllm_settings(None, 0, 4096).max_model_len == 4096
    assert vllm_settings(None).max_model_len is None  # the model's, at most 8192


@pytest.mark.slow
def test_eval_caps_each_response_to_the_context(tiny_text_dir, tmp_path, monkeypatch):
    """With --max-model-len, a response stops where prompt + response reach it (the hf backend, as vLLM does), and
    the engine is built with it (vLLM's max_model_len)."""
    import mm_gmpo.rollout
    from mm_gmpo.data import build_prompts
    from mm_gmpo.models import load_processor

    built = []

    class Recording(mm_gmpo.rollout.RolloutEngine):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("max_model_len"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mm_gmpo.rollout, "RolloutEngine", Recording)

    examples, _ = load_examples("official:aime", source="local", split_limit=2)
    _, stats = build_prompts(
        examples, load_processor(tiny_text_dir), template="qwen_math", max_prompt_length=1 << 20, min_pixels=1,
        max_pixels=2,
    )  # fmt: skip
    lengths = stats.prompt_tokens
    context = max(lengths) + 3
    budgets = [min(24, context - n) for n in lengths]
    assert sorted(budgets) != [24, 24]  # one prompt at least is capped by the context
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_text_dir), "--data", "official:aime", "--limit", "2", "--max-new-tokens"]
    assert main([*argv, "24", "--max-model-len", str(context), "--output", str(out)]) == 0
    items = [json.loads(line) for line in (out / "items-official_aime.jsonl").read_text().splitlines()]
    for item, budget in zip(items, budgets, strict=True):
        (length,), (reason,) = item["response_lengths"], item["finish_reasons"]
        assert length == budget if reason == "length" else length < budget
    assert items[0]["golds"] == [json.loads((SHIPPED / "aime.jsonl").read_text().splitlines()[0])["answer"]]
    assert built == [context]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["official:aime"]["max_model_len"] == context and summary["official:aime"]["grader"] == "official"
    assert summary["sampling"]["max_model_len"] == context and summary["official:aime"]["problems"] == 2
    # the tiny model's end-of-sequence tokens (its tokenizer's <|im_end|>, its generation_config's two)
    assert summary["official:aime"]["stop_tokens"] == ["<|im_end|>", "<|endoftext|>"]


def _base_like(tiny_text_dir: Path, folder: Path) -> Path:
    """The tiny model with Qwen2.5-Math base's end-of-sequence settings: <|endoftext|> in the tokenizer and in
    generation_config.json (151643)."""
    import shutil

    shutil.copytree(tiny_text_dir, folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "eos_token": "<|endoftext|>"}))
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": 151643}))
    return folder


def test_official_stop_tokens_are_the_models_eos(tiny_text_dir, tmp_path):
    """The official evaluation sets no stop strings: vLLM stops at the tokenizer's EOS and generation_config's."""
    from mm_gmpo.evaluate import stop_tokens
    from mm_gmpo.models import load_processor
    from mm_gmpo.paper_eval import model_stop_tokens

    base = _base_like(tiny_text_dir, tmp_path / "base")
    base_tokenizer, chat_tokenizer = load_processor(base), load_processor(tiny_text_dir)
    assert model_stop_tokens(str(base), base_tokenizer) == ("<|endoftext|>",)
    # the tiny model itself: eos <|im_end|>, generation_config [151645, 151643]
    assert model_stop_tokens(str(tiny_text_dir), chat_tokenizer) == ("<|im_end|>", "<|endoftext|>")
    assert stop_tokens("official:amc", None, str(base), base_tokenizer) == ("<|endoftext|>",)
    assert stop_tokens("math500", None, str(base), base_tokenizer) is None  # the default list
    assert stop_tokens("math500", ["<|im_end|>"], str(base), base_tokenizer) == ("<|im_end|>",)
    with pytest.raises(UserError, match=r"^--stop-tokens \['nope'\]: \['nope'\] not single tokens"):
        stop_tokens("official:amc", ["nope"], str(base), chat_tokenizer)


@pytest.mark.slow
def test_every_shipped_gold_boxed_is_accepted():
    """Each of the 1,560 problems' first gold, boxed as a model writes it (an AMC float as an integer), is correct
    under the official grader with the golds the evaluation sends: the rows and the grading path fit together."""
    from mm_gmpo.data.rows import answer_text
    from mm_gmpo.reward.graders import load_grader

    grade = load_grader("official")
    rejected = []
    for spec in SPECS:
        examples, _ = load_examples(spec, source="local")
        for example in examples:
            first = gold_of(example)[0]
            written = answer_text(float(first)) if spec == "official:amc" else answer_text(first)
            if not grade(f"So the answer is $\\boxed{{{written}}}$.", gold_of(example)).correct:
                rejected.append(example.id)
    assert rejected == []
