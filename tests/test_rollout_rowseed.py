"""A row's sampled response depends on its key (seed, global prompt index, sample index), not on its batch-mates.

That is what lets one global rollout batch split over 1 or N processes sample the same responses.
"""

import torch
from PIL import Image, ImageDraw

from mm_gmpo.models import load_model, load_processor
from mm_gmpo.rollout import RolloutEngine, SamplingParams
from mm_gmpo.types import Example, Prompt


def _prompt(processor, k: int) -> Prompt:
    img = Image.new("RGB", (84 + 28 * k, 112), "white")
    ImageDraw.Draw(img).ellipse([10, 10, 60 + 10 * k, 90], outline="black", width=5)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Question {k}?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return Prompt(text=text, images=[img], example=Example(id=str(k), problem=f"Question {k}?", answer="1"))


def test_split_batches_sample_the_same_rows(tiny_vl_dir):
    torch.manual_seed(0)
    processor = load_processor(tiny_vl_dir, max_pixels=112 * 112)
    model = load_model(tiny_vl_dir, "float32")
    engine = RolloutEngine("hf", model, processor)
    prompts = [_prompt(processor, k) for k in range(4)]
    params = dict(temperature=1.0, max_new_tokens=8, seed=123)
    whole = engine.generate(prompts, 2, SamplingParams(**params))
    first = engine.generate(prompts[:2], 2, SamplingParams(**params, first_prompt=0))
    second = engine.generate(prompts[2:], 2, SamplingParams(**params, first_prompt=2))
    assert whole.response_text == first.response_text + second.response_text
    # the 2 samples of a prompt differ in general, and another seed gives other responses
    other = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=8, seed=124))
    assert other.response_text != whole.response_text
