"""The paper's evaluation protocol (callsys/GMPO's, from understand-r1-zero's ``evaluate_model.py``), the default
of ``mm-gmpo eval`` on the ``official:<set>`` specs (``--data paper-math``).

Protocol: the Qwen-Math prompt (system "Please reason step by step, and put your final answer within
\\boxed{}.", the problem as the user turn, byte for byte, the assistant turn opened), greedy, one sample, at most
3000 new tokens and 4096 tokens of prompt plus response (vLLM's ``max_model_len``). Grading: the official
``boxed_reward_fn`` (``reward.extraction: official``, :mod:`mm_gmpo.reward.official`): the last ``\\boxed{}`` of the
response against the gold, or against each gold of a list (correct if any matches).
"""

from __future__ import annotations

from mm_gmpo.types import Example

OFFICIAL_TEMPLATE = "qwen_math"
OFFICIAL_TEMPERATURE = 0.0
OFFICIAL_N = 1
OFFICIAL_MAX_NEW_TOKENS = 3000
OFFICIAL_MAX_MODEL_LEN = 4096  # prompt + response
OFFICIAL_GRADER = "official"  # = reward.graders.GRADERS key
# seconds per graded response in the verifier pool: the official evaluation has no bound per response (only
# math_verify's own 1 s per call), so the pool's bound is a backstop against a hung worker, not a rule that decides
OFFICIAL_GRADE_TIMEOUT = 10.0


def gold_of(example: Example) -> str | list[str]:
    """What the grader compares with: an official-suite row's golds (``meta["golds"]``: a list, numbers written as
    ``str(float)``, as ``boxed_reward_fn`` receives them), else the example's answer."""
    return list(example.meta["golds"]) if example.meta.get("golds") else example.answer


def model_stop_tokens(model: str, processor) -> tuple[str, ...]:
    """The tokens that end a response in the official evaluation, which sets no stop strings: what vLLM stops at
    by default, the tokenizer's end-of-sequence token and the ``eos_token_id`` of the checkpoint's
    ``generation_config.json`` (Qwen2.5-Math base: ``<|endoftext|>`` alone, so a response runs on past
    ``<|im_end|>`` as the official sampler lets it)."""
    from transformers import GenerationConfig

    from mm_gmpo.models.processor import tokenizer_of

    tokenizer = tokenizer_of(processor)
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    try:
        configured = GenerationConfig.from_pretrained(model).eos_token_id
    except (OSError, ValueError):  # no generation_config.json: the tokenizer's alone
        configured = None
    ids += configured if isinstance(configured, list) else [configured] if configured is not None else []
    tokens = tokenizer.convert_ids_to_tokens(list(dict.fromkeys(ids)))
    return tuple(t for t in tokens if t is not None)
