"""The two records that cross module borders before rollouts: a data row and a rendered prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Example:
    """One problem from any dataset (Geometry3K, MATH, a synthetic task), images already loaded as RGB PIL."""

    id: str  # unique within its dataset, e.g. "2401" or "test/algebra/1.json"
    problem: str  # problem text, without any image placeholder
    answer: str  # gold final answer (LaTeX allowed), graded by mm_gmpo.reward
    choices: list[str] | None = None  # multiple-choice options, when the dataset has them
    images: list[Image.Image] = field(default_factory=list)  # in the order they appear in the prompt
    source: str = ""  # dataset spec it came from, e.g. "geometry3k:train"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"rendered": True, "answer_letter": "B", "level": 4}


@dataclass
class Prompt:
    """A prompt ready for the rollout engine: the model's chat template already applied."""

    text: str  # templated text with one <|vision_start|><|image_pad|><|vision_end|> per image
    images: list[Image.Image]  # the images, in placeholder order (the processor resizes them)
    example: Example  # the row it came from (answer and choices for the reward)
