"""The tiny models load back with stock transformers Auto classes and generate from image+text / text prompts."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_dir
from PIL import Image, ImageDraw
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from mm_gmpo.models import load_processor

REPO = Path(__file__).resolve().parents[1]


def _image(size=(200, 150)):
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).polygon([(20, 20), (180, 30), (100, 140)], outline="black", width=4)
    return img


# kind: (model class, patch size, the chat template's default system turn)
VL_KINDS = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", 14, "<|im_start|>system\nYou are a helpful assistant."),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", 16, None),  # Qwen3-VL writes no system turn of its own
    "qwen3_vl_moe": ("Qwen3VLMoeForConditionalGeneration", 16, None),
}


@pytest.mark.parametrize("kind", list(VL_KINDS))
def test_vl_round_trip(kind, request):
    folder = tiny_dir(request, kind)
    model_class, patch, system = VL_KINDS[kind]
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == kind
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == model_class
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id == 151655
    processor = load_processor(folder, min_pixels=3136, max_pixels=224 * 224)
    assert processor.image_processor.patch_size == config.vision_config.patch_size == patch
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find x."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>Find x." in text
    assert text.endswith("<|im_start|>assistant\n")
    assert (system in text) if system else text.startswith("<|im_start|>user\n")
    enc = processor(text=[text], images=[_image()], return_tensors="pt")
    grid = enc["image_grid_thw"][0]
    n_image_tokens = int((enc["input_ids"] == config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod()) // 4  # 2x2 patch merge
    assert int(grid[1]) * patch % (2 * patch) == 0 and int(grid[2]) * patch % (2 * patch) == 0  # sides: k x 28 / 32
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


# kind: (model class, what the chat template writes for one user turn and the generation prompt)
TEXT_KINDS = {
    "qwen2": ("Qwen2ForCausalLM", "Please reason step by step"),  # Qwen-Math system prompt by default
    "qwen3": ("Qwen3ForCausalLM", "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"),  # thinking is on
}


@pytest.mark.parametrize("kind", list(TEXT_KINDS))
def test_text_round_trip(kind, request):
    folder = tiny_dir(request, kind)
    model_class, expected = TEXT_KINDS[kind]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == model_class
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) >= 151643
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    text = tokenizer.decode(ids["input_ids"][0])
    assert expected in text
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5 or out[0, -1].item() in model.generation_config.eos_token_id


def test_qwen3_thinking_template_switch(tiny_qwen3_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    messages = [{"role": "user", "content": "1+1?"}]
    off = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    history = [*messages, {"role": "assistant", "content": "<think>\nsum\n</think>\n\n2"}]
    assert tokenizer.apply_chat_template(history, tokenize=False).endswith("<|im_start|>assistant\n2<|im_end|>\n")
    assert tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_processor_budget(kind, request):
    folder, patch = tiny_dir(request, kind), VL_KINDS[kind][1]
    small = load_processor(folder, min_pixels=3136, max_pixels=112 * 112)
    big = load_processor(folder, min_pixels=3136, max_pixels=448 * 448)
    img = _image((640, 480))
    g_small = small.image_processor(images=[img], return_tensors="pt")["image_grid_thw"][0]
    g_big = big.image_processor(images=[img], return_tensors="pt")["image_grid_thw"][0]
    assert int(g_small.prod()) * patch * patch <= 112 * 112
    assert int(g_big.prod()) > int(g_small.prod())


def test_hub_kernels_off_unless_asked(tiny_vl_dir, monkeypatch, caplog):
    """transformers >= 5.25 turns hub kernels on when the `kernels` package is installed and USE_HUB_KERNELS is
    unset (then `model.train()` kernelizes for the device and fetches code from the hub); the policy, the reference
    and eval's model must load with them off unless `model.use_kernels` says otherwise, and the choice is logged."""
    import logging

    from mm_gmpo.config import load_config
    from mm_gmpo.models import load_model
    from mm_gmpo.trainer.precision import resolve_precision
    from mm_gmpo.trainer.setup import build_policy

    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    model = load_model(tiny_vl_dir, "float32")
    assert model.use_kernels is False
    model.train()  # kernelizes (and fails on a CPU) when kernels are on
    assert model.training
    cfg = load_config(REPO / "configs/geo3k_tiny.yaml", [f"model.path={tiny_vl_dir}"])
    assert cfg.model.use_kernels is False
    precision = resolve_precision("float32", deepspeed=False, device=torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="mm_gmpo.trainer.setup"):
        policy = build_policy(cfg, str(tiny_vl_dir), precision)
    assert policy.use_kernels is False
    assert "hub kernels off" in caplog.text
