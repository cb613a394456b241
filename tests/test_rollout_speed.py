"""The rollout's speed-ups change nothing: the written-out draw is multinomial's, one encode per prompt is n encodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GenerationConfig, LogitsProcessorList

from mm_gmpo.models import load_model, load_processor, tokenizer_of
from mm_gmpo.rollout import RolloutEngine, SamplingParams
from mm_gmpo.rollout.batching import encode_prompts, model_vocab_size, stop_token_ids, suppressed_token_ids
from mm_gmpo.rollout.hf import SampleStep, draw_tokens, row_generators
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.types import Example, Prompt


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("vocab", [7, 151_936])
def test_draw_tokens_is_multinomial_token_for_token(vocab):
    torch.manual_seed(0)
    logits = torch.randn(6, vocab) * torch.tensor([[0.5], [1.0], [3.0], [8.0], [1.0], [1.0]])
    logits[4, : vocab // 2] = float("-inf")  # suppressed entries: probability exactly 0
    logits[5, 1:] = float("-inf")  # a single allowed token
    probs = torch.softmax(logits, dim=-1)
    seeds = [3, 1_000_003, 2**40 + 7, 0, 11, 12]
    ours, reference = _generators(seeds), _generators(seeds)
    for _ in range(5):  # consecutive draws: the generators stay in step with multinomial's
        expected = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(reference)])
        assert torch.equal(draw_tokens(probs, ours), expected)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(ours, reference, strict=True))
    drawn = draw_tokens(probs, _generators(seeds))
    assert int(drawn[5]) == 0 and int(drawn[4]) >= vocab // 2  # never a zero-probability token


def test_draw_tokens_rejects_what_multinomial_rejects():
    probs = torch.tensor([[0.5, float("nan")], [0.5, 0.5]])
    with pytest.raises(RuntimeError, match="inf, nan or element < 0"):
        draw_tokens(probs, _generators([0, 1]))
    with pytest.raises(RuntimeError):
        draw_tokens(torch.tensor([[1.2, -0.2]]), _generators([0]))


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def vl(tiny_vl_dir):
    torch.manual_seed(0)
    processor = load_processor(tiny_vl_dir)
    prompts = []
    for k, images in enumerate([[_noise(56, 84, 1)], [], [_noise(84, 56, 2), _noise(56, 56, 3)]]):
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": f"Question {k}?"}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(Prompt(text, images, Example(id=str(k), problem=f"Question {k}?", answer="1")))
    return load_model(tiny_vl_dir, "float32"), processor, prompts


def _generate_row_by_row(model, processor, prompts, n, sampling):
    """The earlier path: every prompt (and its pixels) copied to its n rows before generate."""
    tokenizer = tokenizer_of(processor)
    encoded = encode_prompts(processor, prompts)
    rows = torch.arange(len(prompts)).repeat_interleave(n)
    per_prompt_pixels = torch.split(encoded.pixel_values, [int(g.prod()) for g in encoded.image_grid_thw])
    starts = (torch.cumsum(encoded.images_per_prompt, 0) - encoded.images_per_prompt).tolist()
    counts = encoded.images_per_prompt.tolist()
    images = [i for g in rows.tolist() for i in range(starts[g], starts[g] + counts[g])]
    inputs = {
        "input_ids": encoded.input_ids[rows],
        "attention_mask": encoded.attention_mask[rows],
        "pixel_values": torch.cat([per_prompt_pixels[i] for i in images]),
        "image_grid_thw": encoded.image_grid_thw[images],
    }
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == processor.image_token_id).long()
    suppressed = suppressed_token_ids(tokenizer, model_vocab_size(model))
    sampler = SampleStep(sampling, suppressed, row_generators(sampling, len(prompts), n, "cpu"))
    stops = stop_token_ids(tokenizer)
    config = GenerationConfig(
        do_sample=False, max_new_tokens=sampling.max_new_tokens, eos_token_id=stops, pad_token_id=stops[-1]
    )
    model.eval()
    with torch.no_grad():
        sequences = model.generate(**inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler]))
    return sequences[:, encoded.input_ids.shape[1] :], torch.stack(sampler.logprobs, dim=1)


def test_one_encode_per_prompt_samples_what_n_encodes_sampled(vl):
    model, processor, prompts = vl
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, seed=5)
    patch_rows: list[int] = []
    hook = model.model.visual.register_forward_hook(lambda m, args, out: patch_rows.append(args[0].shape[0]))
    try:
        batch = RolloutEngine("hf", model, processor).generate(prompts, 3, sampling)
    finally:
        hook.remove()
    # the vision tower saw each prompt's patches once (3 images), not once per row
    assert patch_rows == [int(batch.image_grid_thw.prod(-1).sum())]
    expected_tokens, expected_logprobs = _generate_row_by_row(model, processor, prompts, 3, sampling)
    for i in range(batch.num_rows):
        length = int(batch.response_mask[i].sum())
        assert batch.response_ids[i, :length].tolist() == expected_tokens[i, :length].tolist()
        assert torch.allclose(batch.sampler_logprobs[i, :length], expected_logprobs[i, :length], atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_hand_written_backward_gives_autograds_numbers(vl, temperature, monkeypatch):
    """entropy_grad=True runs the checkpointed autograd chunks; False the hand-written backward: same numbers."""
    import mm_gmpo.trainer.forward as logprobs_module

    fused_calls = []
    apply = logprobs_module._SampledTokenStats.apply
    monkeypatch.setattr(
        logprobs_module._SampledTokenStats, "apply", lambda *args: fused_calls.append(1) or apply(*args)
    )
    model, processor, prompts = vl
    batch = RolloutEngine("hf", model, processor).generate(
        prompts[:2], 2, SamplingParams(temperature=temperature, max_new_tokens=4, seed=1)
    )
    weights = torch.linspace(-1.0, 2.0, batch.response_mask.numel()).view_as(batch.response_mask)
    results = []
    for entropy_grad in (True, False):
        model.zero_grad()
        logprobs, entropy = policy_logprobs(
            model, batch, temperature=temperature, chunk_size=5, with_entropy=True, entropy_grad=entropy_grad
        )
        (logprobs * weights).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((logprobs.detach(), entropy, grads))
    model.zero_grad()
    (lp_a, ent_a, grads_a), (lp_b, ent_b, grads_b) = results
    assert len(fused_calls) == -(-int(batch.response_mask.sum()) // 5)  # every chunk of the second pass, only
    assert ent_a.requires_grad and not ent_b.requires_grad
    assert torch.equal(lp_a, lp_b) and torch.equal(ent_a.detach(), ent_b)
    with torch.no_grad():  # the no-grad passes (old/reference log-probs, preflight): the same values again
        lp_c, ent_c = policy_logprobs(model, batch, temperature=temperature, chunk_size=5, with_entropy=True)
    assert torch.equal(lp_a, lp_c) and torch.equal(ent_b, ent_c)
    assert len(grads_a) == len(grads_b) > 0 and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def test_sample_step_one_hot_scores_and_invalid_logits():
    empty = torch.tensor([], dtype=torch.long)
    scores = torch.randn(2, 10)
    expected_logp = torch.log_softmax(scores / 0.5, dim=-1)
    step = SampleStep(SamplingParams(temperature=0.5), empty, _generators([0, 1]))
    out = step(None, scores.clone())
    token = out.argmax(dim=-1)
    assert torch.isinf(out).sum() == 2 * 9 and out.max() == 0.0  # one-hot: generate's greedy argmax is the draw
    assert torch.allclose(step.logprobs[0], expected_logp.gather(-1, token[:, None]).squeeze(-1), atol=1e-6)
    scores[1, 3] = float("nan")  # multinomial refused such rows; so does the written-out draw
    with pytest.raises(RuntimeError, match="inf, nan or element < 0"):
        SampleStep(SamplingParams(temperature=1.0), empty, _generators([0, 1]))(None, scores)
