"""Prompt templates through the model's own chat template, exact token counts with image tokens, and drops."""

from __future__ import annotations

import pytest
from conftest import tiny_dir
from PIL import Image

from mm_gmpo.data import TEMPLATES, build_messages, build_prompts
from mm_gmpo.data.prompts import GEO3K_INSTRUCTION, QWEN_MATH_SYSTEM, R1_SYSTEM
from mm_gmpo.errors import UserError
from mm_gmpo.models import load_processor
from mm_gmpo.types import Example

MIN_PIXELS, MAX_PIXELS = 3136, 200704


def _geo(ident="7", sizes=((224, 224),)) -> Example:
    images = [Image.new("RGB", size, "white") for size in sizes]
    return Example(ident, "Find $x$.", "15", ["5", "14", "15", "35"], images, "geometry3k:train", {})


@pytest.fixture(scope="module")
def vl_processor(tiny_vl_dir):
    return load_processor(tiny_vl_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def text_tokenizer(tiny_text_dir):
    return load_processor(tiny_text_dir)


def test_messages_per_template():
    example = _geo()
    geo = build_messages(example, "geo3k", show_choices=True)
    assert [m["role"] for m in geo] == ["user"]
    parts = geo[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"] and parts[0]["image"] is example.images[0]
    assert parts[1]["text"] == f"Find $x$.\nChoices:\n(A) 5\n(B) 14\n(C) 15\n(D) 35\n\n{GEO3K_INSTRUCTION}"
    assert "<think> </think>" in GEO3K_INSTRUCTION and "\\boxed{}" in GEO3K_INSTRUCTION
    assert build_messages(example, "geo3k")[0]["content"][1]["text"] == f"Find $x$.\n{GEO3K_INSTRUCTION}"
    text_only = Example("1", "What is 2+2?", "4")
    assert build_messages(text_only, "qwen_math") == [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    r1 = build_messages(text_only, "r1")
    assert r1[0]["content"] == R1_SYSTEM and "<answer> </answer>" in R1_SYSTEM and r1[1]["content"] == "What is 2+2?"
    assert build_messages(text_only, "qwen3_thinking") == [
        {"role": "user", "content": f"What is 2+2?\n{QWEN_MATH_SYSTEM}"}  # Qwen3's math prompt, in the user turn
    ]
    assert set(TEMPLATES) == {"qwen_math", "r1", "geo3k", "geo3k_easyr1", "qwen3_thinking"}
    with pytest.raises(UserError, match="data.template='cot'"):
        build_messages(text_only, "cot")


# 224x224 and 3000x2000 (capped at 200704 pixels) in merged patches: Qwen2.5-VL's 28 pixels a side (8x8; 532 x 364
# -> 19 x 13), Qwen3-VL's 32 (7x7; 544 x 352 -> 17 x 11)
EXPECTED_VISION_TOKENS = {"qwen2_5_vl": (64, 247), "qwen3_vl": (49, 187)}


@pytest.mark.parametrize("kind", list(EXPECTED_VISION_TOKENS))
def test_token_count_equals_the_processor_expansion(kind, request):
    vl_processor = load_processor(tiny_dir(request, kind), min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    examples = [_geo("a", [(224, 224)]), _geo("b", [(640, 480), (100, 300)]), _geo("c", [(3000, 2000)])]
    prompts, stats = build_prompts(examples, vl_processor, template="geo3k", show_choices=True,
                                   max_prompt_length=4096, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)  # fmt: skip
    assert len(prompts) == 3 and stats.dropped_too_long == 0
    for prompt, expected in zip(prompts, stats.prompt_tokens, strict=True):
        assert prompt.text.count("<|vision_start|><|image_pad|><|vision_end|>") == len(prompt.images)
        assert prompt.text.index("<|vision_start|>") < prompt.text.index("Find $x$.")  # image before the text
        assert prompt.text.endswith("<|im_start|>assistant\n")
        ids = vl_processor(text=[prompt.text], images=prompt.images or None, return_tensors="pt")["input_ids"]
        assert ids.shape[1] == expected
    assert (stats.vision_tokens[0], stats.vision_tokens[2]) == EXPECTED_VISION_TOKENS[kind]


def test_too_long_prompts_are_dropped_not_cut(vl_processor):
    small, large = _geo("s", [(224, 224)]), _geo("l", [(448, 448)])  # 64 vs 256 image tokens
    _, stats = build_prompts([small], vl_processor, template="geo3k", max_prompt_length=10_000,
                             min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)  # fmt: skip
    limit = stats.prompt_tokens[0] + 10  # room for the small image, not for 192 more image tokens
    prompts, stats = build_prompts([small, large, small], vl_processor, template="geo3k", max_prompt_length=limit,
                                   min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)  # fmt: skip
    assert [p.example.id for p in prompts] == ["s", "s"] and stats.dropped_too_long == 1
    assert stats.as_dict()["dropped_too_long"] == 1 and stats.as_dict()["vision_tokens_max"] == 64


def test_counts_follow_the_processor_budget(tiny_vl_dir, caplog):
    processor = load_processor(tiny_vl_dir, min_pixels=MIN_PIXELS, max_pixels=100352)  # 128 patches at most
    (prompt,), stats = build_prompts([_geo("c", [(3000, 2000)])], processor, template="geo3k",
                                     max_prompt_length=4096, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)  # fmt: skip
    ids = processor(text=[prompt.text], images=prompt.images, return_tensors="pt")["input_ids"]
    assert ids.shape[1] == stats.prompt_tokens[0] and stats.vision_tokens[0] <= 128
    assert "counting with the processor's budget" in caplog.text


def test_text_model_prompts_and_image_refusal(text_tokenizer):
    example = Example("1", "What is 2+2?", "4")
    (prompt,), stats = build_prompts([example], text_tokenizer, template="qwen_math", max_prompt_length=512,
                                     min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)  # fmt: skip
    assert f"<|im_start|>system\n{QWEN_MATH_SYSTEM}<|im_end|>" in prompt.text and prompt.images == []
    assert stats.prompt_tokens == [len(text_tokenizer(prompt.text, add_special_tokens=False)["input_ids"])]
    assert stats.vision_tokens == [0]
    with pytest.raises(UserError, match="geometry3k:train row 7: the example has images but the model is text-only"):
        build_prompts([_geo()], text_tokenizer, template="geo3k", max_prompt_length=512, min_pixels=MIN_PIXELS,
                      max_pixels=MAX_PIXELS)  # fmt: skip


def test_geo3k_easyr1_joins_problem_and_instruction_by_a_space():
    """EasyR1's format_prompt/math.jinja: ``{{ content | trim }} You FIRST think ...`` (one space, no newline);
    the geo3k template keeps its newline."""
    example = Example("1", "  Find $x$.\n", "5", choices=["5", "14"])
    text = build_messages(example, "geo3k_easyr1")[0]["content"]
    assert text == "Find $x$. You FIRST think about the reasoning process as an internal monologue and then " \
        "provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The " \
        "final answer MUST BE put in \\boxed{}."  # fmt: skip
    assert build_messages(example, "geo3k")[0]["content"] == f"Find $x$.\n{GEO3K_INSTRUCTION}"
    with_choices = build_messages(example, "geo3k_easyr1", show_choices=True)[0]["content"]
    assert with_choices == f"Find $x$.\nChoices:\n(A) 5\n(B) 14 {GEO3K_INSTRUCTION}"
