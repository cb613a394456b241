"""Rollout engine (HF backend) and trainer log-probs on tiny models built at test time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_dir
from PIL import Image

from mm_gmpo.models import load_model, load_processor, tokenizer_of
from mm_gmpo.rollout import (
    LogprobParityError,
    RolloutEngine,
    SamplingParams,
    teacher_forced_batch,
)
from mm_gmpo.trainer.forward import policy_logprobs
from mm_gmpo.trainer.parity import check_logprob_parity, measure_logprob_parity
from mm_gmpo.types import Example, Prompt

VISION_TOKENS = ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|vision_pad|>")


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_prompt(processor, text: str, images: list[Image.Image]) -> Prompt:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    templated = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return Prompt(templated, images, Example(id=text, problem=text, answer="1"))


@pytest.fixture(scope="module")
def loaded() -> dict:
    return {}  # kind -> (model, processor), each loaded once per module


@pytest.fixture
def vl(request, loaded):
    """(model, processor) of the tiny Qwen2.5-VL, or of the kind a test names with ``indirect`` parametrisation."""
    kind = getattr(request, "param", "qwen2_5_vl")
    if kind not in loaded:
        torch.manual_seed(0)
        folder = tiny_dir(request, kind)
        loaded[kind] = load_model(folder, "float32"), load_processor(folder, min_pixels=3136)  # Qwen2.5-VL's minimum
    return loaded[kind]


BOTH_VL = pytest.mark.parametrize("vl", ["qwen2_5_vl", "qwen3_vl"], indirect=True)


@pytest.fixture
def mixed_prompts(vl):
    """Images of different sizes (4, 12 and 6+6 image tokens after the 2x2 merge) and a prompt without any image."""
    _, processor = vl
    return [
        make_prompt(processor, "Find x.", [noise_image(56, 56, 1)]),
        make_prompt(processor, "Find the area of the triangle.", [noise_image(112, 84, 2)]),
        make_prompt(processor, "No figure here: what is 2+3?", []),
        make_prompt(processor, "Compare the two figures.", [noise_image(56, 84, 3), noise_image(84, 56, 4)]),
    ]


class LogitBias:
    """Adds ``bias`` to the LM head's output for ``token_id`` (both in generate and in policy_logprobs)."""

    def __init__(self, model, token_id: int, bias: float):
        self.handle = model.get_output_embeddings().register_forward_hook(self._hook)
        self.token_id, self.bias = token_id, bias

    def _hook(self, module, args, output):
        output = output.clone()
        output[..., self.token_id] += self.bias
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@BOTH_VL
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_parity_with_mixed_image_sizes(vl, mixed_prompts, temperature):
    model, processor = vl
    engine = RolloutEngine("hf", model, processor)
    batch = engine.generate(mixed_prompts, 2, SamplingParams(temperature=temperature, max_new_tokens=8, seed=3))
    grid = batch.image_grid_thw.tolist()
    assert len({tuple(g) for g in grid}) >= 3  # different image sizes in one batch
    report = check_logprob_parity(model, batch, temperature=temperature, tolerance=1e-5)
    assert report.num_tokens == int(batch.response_mask.sum()) > 0
    assert report.max_abs_diff <= 1e-5
    # a micro-batch of rows from different prompts (the trainer slices rows) keeps only its prompts' images
    sub = batch.select([7, 0, 4, 5])
    assert sub.images_per_prompt.tolist() == [1, 0, 2]
    assert sub.pixel_values.shape[0] == int(sub.image_grid_thw.prod(-1).sum())
    assert measure_logprob_parity(model, sub, temperature=temperature, tolerance=1e-5).max_abs_diff <= 1e-5
    assert torch.equal(sub.sampler_logprobs, batch.sampler_logprobs[[7, 0, 4, 5]])
    text_rows = batch.select([4, 5])  # a micro-batch with no image at all, from a vision batch
    assert text_rows.pixel_values.shape[0] == 0
    assert measure_logprob_parity(model, text_rows, temperature=temperature, tolerance=1e-5).max_abs_diff <= 1e-5


def test_vision_model_with_text_only_prompts(vl, mixed_prompts):
    model, processor = vl
    batch = RolloutEngine("hf", model, processor).generate(
        [mixed_prompts[2], mixed_prompts[2]], 2, SamplingParams(temperature=1.0, max_new_tokens=5, seed=4)
    )
    assert batch.pixel_values is None and batch.num_vision_tokens.sum() == 0
    assert check_logprob_parity(model, batch, temperature=1.0, tolerance=1e-5).num_tokens == 20


def test_groups_in_order_and_seeded(vl, mixed_prompts):
    model, processor = vl
    engine = RolloutEngine("hf", model, processor)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, seed=11)
    prompts = mixed_prompts[:3]
    batch = engine.generate(prompts, 3, sampling)
    assert batch.num_rows == 9
    assert batch.group_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [ex.id for ex in batch.examples] == [p.example.id for p in prompts for _ in range(3)]
    prompt_part = batch.input_ids[:, : batch.prompt_length]
    for g in range(3):
        assert all(torch.equal(prompt_part[3 * g], prompt_part[3 * g + k]) for k in (1, 2))
    # responses of one group are sampled independently; the same seed reproduces them, another seed does not
    assert len({tuple(r.tolist()) for r in batch.response_ids[:3]}) > 1
    again = engine.generate(prompts, 3, sampling)
    assert torch.equal(again.input_ids, batch.input_ids)
    other = engine.generate(prompts, 3, SamplingParams(temperature=1.0, max_new_tokens=6, seed=12))
    assert not torch.equal(other.input_ids, batch.input_ids)
    # vision tokens per row: 56x56 -> 4x4 patches -> 4 tokens; 112x84 -> 8x6 patches -> 12 tokens; no image -> 0
    assert batch.num_vision_tokens.tolist() == [4] * 3 + [12] * 3 + [0] * 3
    metrics = engine.metrics(batch)
    assert metrics["rollout/vision_tokens_per_sample"] == pytest.approx(16 / 3)
    assert metrics["response_length/max"] == 6 and metrics["response_length/clip_frac"] == 1.0
    assert metrics["rollout/tokens_per_s"] > 0


@BOTH_VL
def test_placeholders_never_sampled_even_when_favoured(vl, mixed_prompts):
    model, processor = vl
    tokenizer = tokenizer_of(processor)
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    engine = RolloutEngine("hf", model, processor)
    with LogitBias(model, image_pad, 1e4):
        # without suppression <|image_pad|> would be every token's argmax by a margin of ~1e4
        logits = model(**processor(text=[mixed_prompts[2].text], return_tensors="pt")).logits[0, -1]
        assert int(logits.argmax()) == image_pad
        batch = engine.generate(mixed_prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=6, seed=0))
        parity = measure_logprob_parity(model, batch, temperature=1.0, tolerance=1e-5)
    vision_ids = {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    sampled = set(batch.response_ids[batch.response_mask].tolist())
    assert not sampled & vision_ids
    assert all(tok < len(tokenizer) for tok in sampled)  # padded vocabulary rows are no tokens either
    assert vision_ids <= set(batch.suppressed_token_ids.tolist())
    assert parity.max_abs_diff <= 1e-5  # the trainer masks the same tokens


def test_response_mask_stops_after_end_of_turn(vl, mixed_prompts):
    model, processor = vl
    tokenizer = tokenizer_of(processor)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine = RolloutEngine("hf", model, processor)
    with LogitBias(model, im_end, 9.0):  # end-of-turn becomes likely but not certain: responses of mixed lengths
        batch = engine.generate(mixed_prompts, 4, SamplingParams(temperature=1.0, max_new_tokens=10, seed=5))
        assert measure_logprob_parity(model, batch, temperature=1.0, tolerance=1e-5).max_abs_diff <= 1e-5
    lengths = batch.response_mask.sum(dim=1)
    assert "stop" in batch.finish_reason and len(set(lengths.tolist())) > 1
    for i, reason in enumerate(batch.finish_reason):
        length = int(lengths[i])
        mask = batch.response_mask[i]
        assert mask[:length].all() and not mask[length:].any()  # contiguous from the first response token
        tokens = batch.response_ids[i, :length].tolist()
        if reason == "stop":
            assert tokens[-1] == im_end and im_end not in tokens[:-1]
            assert length < 10 or tokens[-1] == im_end
        else:
            assert length == 10 and im_end not in tokens
        assert batch.attention_mask[i, batch.prompt_length + length :].sum() == 0
        assert "<|im_end|>" not in batch.response_text[i]
        assert batch.sampler_logprobs[i, length:].abs().sum() == 0


def test_finish_reason_length_when_cut(vl, mixed_prompts):
    model, processor = vl
    batch = RolloutEngine("hf", model, processor).generate(
        mixed_prompts[:2], 2, SamplingParams(temperature=1.0, max_new_tokens=3, seed=0)
    )
    # the random model puts ~1/150k on each stop token, so every response runs to the limit
    assert batch.finish_reason == ["length"] * 4
    assert batch.response_mask.sum(dim=1).tolist() == [3] * 4


@BOTH_VL
def test_image_reaches_the_model(vl):
    model, processor = vl
    text = "What is shown?"
    a = make_prompt(processor, text, [noise_image(56, 56, 10)])
    b = make_prompt(processor, text, [noise_image(56, 56, 11)])
    batch = teacher_forced_batch(processor, [a, b, a], ["The answer is 4."] * 3)
    logprobs, _ = policy_logprobs(model, batch, temperature=1.0)
    mask = batch.response_mask
    assert torch.equal(mask[0], mask[1])
    assert (logprobs[0] - logprobs[1]).abs()[mask[0]].max() > 1e-4  # different images, different distributions
    assert (logprobs[0] - logprobs[2]).abs()[mask[0]].max() <= 1e-6  # same image, same distribution
    # the sampler sees the image too: greedy first tokens' log-probs differ between the two images
    batch = RolloutEngine("hf", model, processor).generate(
        [a, b], 1, SamplingParams(temperature=0.0, max_new_tokens=1)
    )
    assert abs(float(batch.sampler_logprobs[0, 0] - batch.sampler_logprobs[1, 0])) > 1e-5


def test_chunked_logprobs_and_gradients_match_one_chunk(vl, mixed_prompts):
    model, processor = vl
    batch = RolloutEngine("hf", model, processor).generate(
        mixed_prompts[:2], 2, SamplingParams(temperature=1.0, max_new_tokens=5, seed=2)
    )
    head_rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0]))
    try:
        grads, calls = [], []
        for chunk in (3, 10_000):
            model.zero_grad()
            head_rows.clear()
            logprobs, entropy = policy_logprobs(model, batch, temperature=0.7, chunk_size=chunk, with_entropy=True)
            (logprobs.sum() + entropy.sum()).backward()
            grads.append((logprobs.detach(), entropy.detach(), model.get_input_embeddings().weight.grad.clone()))
            calls.append(list(head_rows))
    finally:
        hook.remove()
        model.zero_grad()
    tokens = int(batch.response_mask.sum())
    # the LM head only sees response tokens (never the prompt), chunk_size at a time; each chunk runs twice
    # (forward, then its checkpoint recompute in backward) so its logits are never all alive at once
    assert max(calls[0]) <= 3 and sum(calls[0]) == 2 * tokens
    assert calls[1] == [tokens, tokens]
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6) and torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    scale = float(grads[0][2].abs().max())  # tied embedding/LM-head gradient: fp32 sums in another order
    assert scale > 0 and float((grads[0][2] - grads[1][2]).abs().max()) <= 1e-5 * scale


def test_entropy_is_the_tempered_suppressed_entropy(vl, mixed_prompts):
    model, processor = vl
    batch = RolloutEngine("hf", model, processor).generate(
        mixed_prompts[2:3], 1, SamplingParams(temperature=0.7, max_new_tokens=2, seed=0)
    )
    with torch.no_grad():
        _, entropy = policy_logprobs(model, batch, temperature=0.7, with_entropy=True)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[
            0, batch.prompt_length - 1
        ]
    logits[batch.suppressed_token_ids] = float("-inf")
    p = torch.softmax(logits / 0.7, dim=-1)
    expected = -(p[p > 0] * p[p > 0].log()).sum()
    assert float(entropy[0, 0]) == pytest.approx(float(expected), abs=1e-4)


def test_preflight_names_the_tokens_that_differ(vl, mixed_prompts):
    model, processor = vl
    batch = RolloutEngine("hf", model, processor).generate(
        mixed_prompts[:2], 2, SamplingParams(temperature=1.0, max_new_tokens=4, seed=0)
    )
    batch.sampler_logprobs[1, 2] += 0.5
    with pytest.raises(LogprobParityError, match=r"row 1 position 2 token \d+ '.*'.*diff 5\.00e-01"):
        check_logprob_parity(model, batch, temperature=1.0, tolerance=1e-5)
    # a temperature mismatch (a classic trainer bug) is caught as well
    batch.sampler_logprobs[1, 2] -= 0.5
    report = check_logprob_parity(model, batch, temperature=0.5, tolerance=1e-5, raise_on_failure=False)
    assert not report.ok and "temperature" in report.note


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_text_only_models(kind, request):
    folder = tiny_dir(request, kind)
    model, tokenizer = load_model(folder, "float32"), load_processor(folder)
    prompts = []
    for text in ("Compute 1+1.", "A much longer question about the sum of the first ten positive integers?"):
        templated = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(Prompt(templated, [], Example(id=text, problem=text, answer="2")))
    engine = RolloutEngine("hf", model, tokenizer)
    for temperature in (1.0, 0.7):
        batch = engine.generate(prompts, 2, SamplingParams(temperature=temperature, max_new_tokens=6, seed=1))
        assert batch.pixel_values is None and batch.num_vision_tokens.tolist() == [0] * 4
        assert batch.attention_mask[:, 0].tolist() == [1, 1, 0, 0] or batch.attention_mask[:, 0].tolist() == [
            0,
            0,
            1,
            1,
        ]  # left padding
        report = check_logprob_parity(model, batch, temperature=temperature, tolerance=1e-5)
        assert report.num_tokens == 24


def test_unknown_backend_is_a_user_error(vl):
    from mm_gmpo.errors import UserError

    with pytest.raises(UserError, match="rollout.backend"):
        RolloutEngine("sglang", *vl)


def test_vllm_refuses_qwen3_vl_moe_in_one_line(tiny_qwen3_vl_moe_dir):
    from mm_gmpo.errors import UserError

    model = load_model(tiny_qwen3_vl_moe_dir, "float32")
    with pytest.raises(UserError, match="rollout.backend=vllm: Qwen3-VL MoE .* use rollout.backend=hf"):
        RolloutEngine("vllm", model, load_processor(tiny_qwen3_vl_moe_dir))


def test_stop_tokens_end_responses_only_where_listed(vl, mixed_prompts):
    """rollout.stop_tokens=["<|endoftext|>"] (the official GMPO sampler: the base model's EOS only): a favoured
    <|im_end|> no longer ends a response, <|endoftext|> does; the default still stops at <|im_end|>."""
    model, processor = vl
    tokenizer = tokenizer_of(processor)
    im_end, eos = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    engine = RolloutEngine("hf", model, processor)
    eos_only = SamplingParams(temperature=1.0, max_new_tokens=6, seed=3, stop_tokens=("<|endoftext|>",))
    with LogitBias(model, im_end, 1e4):  # <|im_end|> is every step's token
        batch = engine.generate(mixed_prompts[:2], 2, eos_only)
        default = engine.generate(mixed_prompts[:2], 2, SamplingParams(temperature=1.0, max_new_tokens=6, seed=3))
    assert batch.finish_reason == ["length"] * 4 and batch.response_mask.sum(dim=1).tolist() == [6] * 4
    assert all(tok == im_end for tok in batch.response_ids[batch.response_mask].tolist())  # trained on, as officially
    assert default.finish_reason == ["stop"] * 4 and default.response_mask.sum(dim=1).tolist() == [1] * 4
    with LogitBias(model, eos, 1e4):
        batch = engine.generate(mixed_prompts[:2], 2, eos_only)
    assert batch.finish_reason == ["stop"] * 4 and batch.response_ids[:, 0].tolist() == [eos] * 4


def test_stop_tokens_must_be_tokens_of_the_tokenizer(vl):
    from mm_gmpo.errors import UserError
    from mm_gmpo.rollout.batching import STOP_TOKENS, configured_stop_tokens, stop_token_ids

    _, processor = vl
    tokenizer = tokenizer_of(processor)
    assert stop_token_ids(processor, ("<|endoftext|>",)) == [tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    assert stop_token_ids(processor) == [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    with pytest.raises(UserError, match=r"rollout.stop_tokens=\['<\|endoftxt\|>'\]: \['<\|endoftxt\|>'\] not single"):
        stop_token_ids(processor, ["<|endoftxt|>"])
    with pytest.raises(UserError, match="name at least one token"):
        stop_token_ids(processor, [])
    assert configured_stop_tokens(["<|im_end|>", "<|endoftext|>"]) is None  # the default: behaviour unchanged
    assert configured_stop_tokens(["<|endoftext|>"]) == ("<|endoftext|>",)
