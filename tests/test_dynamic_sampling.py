"""Dynamic sampling (algorithm.dynamic_sampling): which groups are kept, how sampled rounds are joined, and that a
joined batch scores exactly as its parts. The trainer's use of it (and exact resume with it on) is in
tests/test_train_e2e.py (the straight and resumed runs sample dynamically)."""

from __future__ import annotations

import pytest
import torch

from mm_gmpo.models import load_model, load_processor
from mm_gmpo.reward import RewardScores
from mm_gmpo.rollout import teacher_forced_batch
from mm_gmpo.rollout.batching import pad_token_id
from mm_gmpo.rollout.types import concat_batches
from mm_gmpo.testing.batches import RESPONSES, sample_prompts
from mm_gmpo.trainer.dynamic import assemble_round, choose_groups, informative_groups
from mm_gmpo.trainer.forward import policy_logprobs


def test_informative_groups_are_those_whose_rewards_differ():
    assert informative_groups([1, 1, 1, 0, 0, 0, 0.9, 0.1, 0.9], 3) == [False, False, True]


def test_choose_groups_takes_informative_first_then_fills_in_sampling_order():
    assert choose_groups([[False, True], [True, True]], 2) == [(0, 1), (1, 0)]
    # too few informative ones: fill with the first uninformative ones, still in sampling order
    assert choose_groups([[False, False], [False, True]], 3) == [(0, 0), (0, 1), (1, 1)]


def _scores(total: list[float]) -> RewardScores:
    return RewardScores(
        accuracy=list(total), format=[1.0] * len(total), total=list(total), timeouts=0, errors=1,
        extracted=[str(t) for t in total],
    )  # fmt: skip


@pytest.fixture(scope="module")
def vl(tiny_vl_dir):
    processor = load_processor(tiny_vl_dir, min_pixels=3136, max_pixels=12544)
    return processor, load_model(tiny_vl_dir, "float32", "eager")


def test_a_round_of_all_equal_groups_is_refilled_from_the_next_sampling(vl):
    processor, _ = vl
    n = 2
    prompts = sample_prompts(processor, 4, with_images=True)
    twice = [p for p in prompts for _ in range(n)]  # one row per prompt entry: groups of n consecutive rows
    first = teacher_forced_batch(processor, twice[:4], [RESPONSES[0], RESPONSES[0], RESPONSES[1], RESPONSES[1]])
    second = teacher_forced_batch(processor, twice[4:], [RESPONSES[2], RESPONSES[0], RESPONSES[1], RESPONSES[2]])
    sampled = [(first, _scores([0.0, 0.0, 1.0, 1.0])), (second, _scores([1.0, 0.0, 0.0, 1.0]))]
    batch, scores, counts = assemble_round(sampled, n, 2, pad_token_id(processor))
    assert counts == {"groups_sampled": 4.0, "groups_informative": 2.0, "groups_filled": 0.0}
    assert [ex.id for ex in batch.examples] == [prompts[2].example.id] * 2 + [prompts[3].example.id] * 2
    assert scores.total == [1.0, 0.0, 0.0, 1.0] and scores.errors == 2  # counts add up over every sampling
    assert batch.group_index.tolist() == [0, 0, 1, 1] and batch.response_text == second.response_text
    assert torch.equal(batch.pixel_values, second.pixel_values)


def test_joined_batches_score_as_their_parts(vl):
    """Different prompt and response widths: padding moves, log-probs do not (positions come from the mask)."""
    processor, model = vl
    prompts = sample_prompts(processor, 3, with_images=True)
    a = teacher_forced_batch(processor, prompts[:1] * 2, [RESPONSES[1], RESPONSES[0]])
    b = teacher_forced_batch(
        processor, [prompts[1]] * 2 + [prompts[2]] * 2, [RESPONSES[2], RESPONSES[1], RESPONSES[1], RESPONSES[0]]
    )
    assert (a.prompt_length, a.response_length) != (b.prompt_length, b.response_length)
    joined = concat_batches([a, b], pad_token_id(processor))
    assert joined.num_rows == 6 and joined.row_prompt.tolist() == [0, 1, 2, 3, 4, 5]  # prompt tables appended
    assert joined.group_index.tolist() == [0, 1, 2, 3, 4, 5]  # b's groups numbered after a's
    assert torch.equal(joined.image_grid_thw, torch.cat([a.image_grid_thw, b.image_grid_thw]))
    with torch.no_grad():
        whole, _ = policy_logprobs(model, joined, temperature=1.0)
        parts = [policy_logprobs(model, x, temperature=1.0)[0] for x in (a, b)]
    for rows, part in zip((slice(0, 2), slice(2, 6)), parts, strict=True):
        width = part.shape[1]
        torch.testing.assert_close(whole[rows, :width], part, rtol=0, atol=2e-5)
        assert not whole[rows, width:].any()
