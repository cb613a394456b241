"""Datasets (Geometry3K with rendered diagrams, the text math sets), image handling and prompt templates."""

from mm_gmpo.data.images import BadRow, smart_resize, vision_tokens
from mm_gmpo.data.loaders import DataStats, build_math_pool, examples_from_hub_dataset, load_examples, parse_spec
from mm_gmpo.data.prompts import TEMPLATES, PromptStats, build_messages, build_prompts

__all__ = [
    "TEMPLATES",
    "BadRow",
    "DataStats",
    "PromptStats",
    "build_math_pool",
    "build_messages",
    "build_prompts",
    "examples_from_hub_dataset",
    "load_examples",
    "parse_spec",
    "smart_resize",
    "vision_tokens",
]
