"""Prompt templates by name, applied through the model's own chat template, with an exact token count.

Templates:
- ``qwen_math``: system "Please reason step by step, and put your final answer within \\boxed{}.", user: problem
  (the Qwen2.5-Math evaluation prompt);
- ``r1``: the DeepSeek-R1-Zero system prompt (reasoning in ``<think> </think>``, answer in ``<answer> </answer>``);
- ``geo3k``: the EasyR1 Geometry3K instruction after the problem (think inside ``<think> </think>``, final answer in
  ``\\boxed{}``), on a line of its own;
- ``geo3k_easyr1``: the same instruction joined to the problem by a space, as EasyR1's ``format_prompt/math.jinja``
  renders it (``{{ content | trim }} You FIRST think ...``);
- ``qwen3_thinking``: Qwen3's recommended math prompt, "Please reason step by step, and put your final answer within
  \\boxed{}." after the problem in the user turn, no system turn; Qwen3's chat template leaves thinking on, so the
  response is ``<think> ... </think>`` then the answer, which the reward reads after ``</think>``.
Any template can list the multiple-choice options (``show_choices``). Images are content parts placed before the
text, as Qwen2.5-VL is trained. A prompt's length counts every ``<|image_pad|>`` the processor will expand the
image into (Qwen's resize rule, :func:`~mm_gmpo.data.images.vision_tokens`); a prompt over the limit is dropped
and counted, never cut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mm_gmpo.data.images import vision_tokens
from mm_gmpo.errors import UserError
from mm_gmpo.types import Example, Prompt

log = logging.getLogger(__name__)

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
R1_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The "
    "Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. "
    "The reasoning process is enclosed within <think> </think> and the answer is enclosed within <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
GEO3K_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)


@dataclass(frozen=True)
class Template:
    """A prompt template: an optional system message and how the user turn wraps the problem."""

    name: str
    system: str | None  # system message; None keeps the chat template's own default
    instruction: str | None  # appended after the problem in the user turn
    separator: str = "\n"  # between the problem (and its choices) and the instruction


TEMPLATES = {
    "qwen_math": Template("qwen_math", QWEN_MATH_SYSTEM, None),
    "r1": Template("r1", R1_SYSTEM, None),
    "geo3k": Template("geo3k", None, GEO3K_INSTRUCTION),
    "geo3k_easyr1": Template("geo3k_easyr1", None, GEO3K_INSTRUCTION, separator=" "),
    "qwen3_thinking": Template("qwen3_thinking", None, QWEN_MATH_SYSTEM),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise UserError(f"data.template={name!r}: unknown template; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def format_choices(choices: list[str]) -> str:
    """``["5", "14"]`` -> ``"Choices:\\n(A) 5\\n(B) 14"``."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "Choices:\n" + "\n".join(f"({letters[k]}) {choice}" for k, choice in enumerate(choices))


def user_text(example: Example, template: Template, show_choices: bool) -> str:
    """Problem, then the choices on their own lines (if shown), then the instruction after the template's
    separator (a newline, or a blank line after choices; ``geo3k_easyr1``: a space). A problem alone is the user
    turn exactly as its row has it (the official suite's rows keep the spaces and newlines some of them end in,
    as the official evaluation's prompt does; every other row function strips its problems); before choices or
    an instruction it is trimmed (EasyR1's template trims it)."""
    choices = bool(show_choices and example.choices)
    if not choices and not template.instruction:
        return example.problem
    body = example.problem.strip()
    if choices:
        body = f"{body}\n{format_choices(example.choices)}"
    if not template.instruction:
        return body
    separator = "\n\n" if choices and template.separator == "\n" else template.separator
    return f"{body}{separator}{template.instruction}"


def build_messages(example: Example, template: str | Template, show_choices: bool = False) -> list[dict]:
    """Chat messages for one example: images as content parts before the text (a plain string when there is no
    image, which every chat template accepts)."""
    template = get_template(template) if isinstance(template, str) else template
    text = user_text(example, template, show_choices)
    messages = [{"role": "system", "content": template.system}] if template.system else []
    if example.images:
        content = [{"type": "image", "image": image} for image in example.images]
        messages.append({"role": "user", "content": [*content, {"type": "text", "text": text}]})
    else:
        messages.append({"role": "user", "content": text})
    return messages


@dataclass
class PromptStats:
    """Prompt lengths (tokens, image tokens included) and how many were dropped as too long."""

    prompts: int = 0  # prompts kept
    dropped_too_long: int = 0  # prompts over max_prompt_length (dropped, never cut)
    prompt_tokens: list[int] = field(default_factory=list)  # per kept prompt, image tokens included
    vision_tokens: list[int] = field(default_factory=list)  # per kept prompt, sum over its images

    def as_dict(self) -> dict[str, float]:
        def mean(values: list[int]) -> float:
            return sum(values) / len(values) if values else 0.0

        return {
            "prompts": self.prompts,
            "dropped_too_long": self.dropped_too_long,
            "prompt_tokens_mean": mean(self.prompt_tokens),
            "prompt_tokens_max": max(self.prompt_tokens, default=0),
            "vision_tokens_mean": mean(self.vision_tokens),
            "vision_tokens_max": max(self.vision_tokens, default=0),
        }


def _processor_budget(processor, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The pixel budget the processor will really resize with (its ``size``), which decides the token count.
    A mismatch with the configured budget is logged: counting with the configured one would misjudge lengths."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    actual = (getattr(size, "shortest_edge", None), getattr(size, "longest_edge", None)) if size else (None, None)
    if None in actual:
        return min_pixels, max_pixels
    if actual != (min_pixels, max_pixels):
        log.warning("the processor resizes images to %s..%s pixels, not the configured %s..%s: counting with the "
                    "processor's budget", actual[0], actual[1], min_pixels, max_pixels)  # fmt: skip
    return int(actual[0]), int(actual[1])


def _image_settings(processor) -> tuple[str, int, int] | None:
    """(image pad token, patch size, merge size) of a vision processor, read from its image processor (14 and 2
    for Qwen2.5-VL, 16 and 2 for Qwen3-VL); None for a text-only tokenizer."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return None
    token = getattr(processor, "image_token", None) or "<|image_pad|>"
    return token, int(image_processor.patch_size), int(image_processor.merge_size)


def build_prompts(
    examples: list[Example],
    processor,
    *,
    template: str,
    show_choices: bool = False,
    max_prompt_length: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[list[Prompt], PromptStats]:
    """Apply the template and the model's chat template; count tokens as the processor will expand them."""
    chosen = get_template(template)
    tokenizer = getattr(processor, "tokenizer", processor)
    vision = _image_settings(processor)
    if min_pixels > max_pixels:
        raise UserError(f"data.min_pixels={min_pixels} is larger than data.max_pixels={max_pixels}")
    if vision is not None:
        min_pixels, max_pixels = _processor_budget(processor, min_pixels, max_pixels)
    stats, prompts = PromptStats(), []
    for example in examples:
        if example.images and vision is None:
            raise UserError(
                f"{example.source} row {example.id}: the example has images but the model is text-only "
                "(use a vision-language model, or a text dataset)"
            )
        text = processor.apply_chat_template(
            build_messages(example, chosen, show_choices), tokenize=False, add_generation_prompt=True
        )
        image_tokens = [
            vision_tokens(
                img.height,
                img.width,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                patch_size=vision[1],
                merge_size=vision[2],
            )
            for img in example.images
        ]
        text_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if vision is not None and text.count(vision[0]) != len(example.images):
            raise UserError(
                f"{example.source} row {example.id}: the chat template wrote {text.count(vision[0])} image "
                f"placeholder(s) for {len(example.images)} image(s)"
            )
        # each image is one <|image_pad|> in the text and becomes one token per merged patch in the processor
        length = text_tokens - len(image_tokens) + sum(image_tokens)
        if length > max_prompt_length:
            stats.dropped_too_long += 1
            log.debug("dropping %s row %s: %d tokens > %d", example.source, example.id, length, max_prompt_length)
            continue
        prompts.append(Prompt(text=text, images=list(example.images), example=example))
        stats.prompt_tokens.append(length)
        stats.vision_tokens.append(sum(image_tokens))
    stats.prompts = len(prompts)
    if stats.dropped_too_long:
        log.warning(
            "dropped %d of %d prompts longer than %d tokens (image tokens included)",
            stats.dropped_too_long,
            len(examples),
            max_prompt_length,
        )
    return prompts, stats


def target_response(prompt: Prompt, template: str, reasoning: str) -> str:
    """The response a policy should write for ``prompt`` under ``template``, ending with the gold answer.
    An example with a worked solution (``meta["reasoning"]``, the synthetic text tasks) reasons with it instead."""
    answer = prompt.example.answer
    reasoning = prompt.example.meta.get("reasoning", reasoning)
    if template == "r1":
        return f"<think>\n{reasoning}\n</think>\n<answer>{answer}</answer>"
    if template == "qwen_math":
        return f"{reasoning} The final answer is $\\boxed{{{answer}}}$."
    return f"<think>\n{reasoning}\n</think>\n\\boxed{{{answer}}}"
