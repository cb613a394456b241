"""Loading processors and tokenizers the way a user's hub checkpoint is loaded, with one CPU-machine fallback.

Qwen2.5-VL's stock processor also builds a video processor, which in transformers 5 needs torchvision. Our CPU
machines cannot install a torchvision that imports beside the CPU torch, so where torchvision is missing we build
the same processor without its video half (:class:`ImageOnlyQwen2_5_VLProcessor`, :class:`ImageOnlyQwen3VLProcessor`).
Everything it does for images
(resize rule, placeholder expansion, ``image_grid_thw``) is the stock code path, and it still saves the video
half's configuration (``video_config.py``), so its checkpoints load with the stock ``AutoProcessor`` wherever
torchvision is installed. On a GPU machine with torchvision the stock ``AutoProcessor`` is used unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLProcessor,
    Qwen3VLProcessor,
)
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from mm_gmpo.errors import UserError
from mm_gmpo.models.video_config import video_processor_config

log = logging.getLogger(__name__)

VISION_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe")
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def torchvision_available() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA torchvision beside a CPU torch fails at import with a RuntimeError
        return False
    return True


_SPECIAL_TOKENS = {
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
}


class _ImageOnly:
    """A Qwen-VL processor for images and text only (no video processor, so no torchvision needed).

    It saves itself as the stock processor class with the ``video_processor`` entry stock transformers would write
    (``video_config``: the checkpoint's own video config, or the one stock loading derives), so the checkpoint
    loads with the stock ``AutoProcessor`` wherever torchvision is installed.
    """

    stock_class: str  # the processor class written to processor_config.json
    video_kind: str  # the stock video processor whose configuration is saved (see video_config.py)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, video_config=None, **kwargs):
        for name, default in _SPECIAL_TOKENS.items():  # what the stock __init__ sets
            token = getattr(tokenizer, f"{name}_token", None) or default
            setattr(self, f"{name}_token", token)
            setattr(self, f"{name}_token_id", tokenizer.convert_tokens_to_ids(token))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self._video_config = video_processor_config(video_config, self.video_kind)  # saved by to_dict

    def to_dict(self):
        output = super().to_dict()
        output.pop("video_config", None)
        output["processor_class"] = self.stock_class
        output["video_processor"] = dict(self._video_config)
        return output


class ImageOnlyQwen2_5_VLProcessor(_ImageOnly, Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without its video half (see :class:`_ImageOnly`)."""

    stock_class = "Qwen2_5_VLProcessor"
    video_kind = "qwen2_vl"


class ImageOnlyQwen3VLProcessor(_ImageOnly, Qwen3VLProcessor):
    """Qwen3-VL's processor without its video half (see :class:`_ImageOnly`); it returns ``mm_token_type_ids``."""

    stock_class = "Qwen3VLProcessor"
    video_kind = "qwen3_vl"


IMAGE_ONLY_PROCESSORS = {
    "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor,
    "qwen2_vl": ImageOnlyQwen2_5_VLProcessor,
    "qwen3_vl": ImageOnlyQwen3VLProcessor,
    "qwen3_vl_moe": ImageOnlyQwen3VLProcessor,
}


def is_vision_model(path: str | Path) -> bool:
    """True when the checkpoint at ``path`` (hub id or folder) is a vision-language model; a config that cannot be
    read (a hub id while offline, a bad config.json) is a :class:`UserError` in one line."""
    try:
        return AutoConfig.from_pretrained(str(path)).model_type in VISION_MODEL_TYPES
    except (OSError, ValueError) as exc:
        raise UserError(f"model {path}: its config cannot be loaded ({first_line(exc)})") from exc


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's text (transformers' messages span several)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def load_processor(path: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """:func:`_load_processor`; a tokenizer or processor file that cannot be read (offline, missing) is a
    :class:`UserError` in one line."""
    try:
        return _load_processor(path, min_pixels=min_pixels, max_pixels=max_pixels)
    except OSError as exc:
        raise UserError(f"model {path}: its processor cannot be loaded ({first_line(exc)})") from exc


def _load_processor(path: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """The processor of a vision-language checkpoint, or the tokenizer of a text-only one.

    ``min_pixels`` / ``max_pixels`` override the image processor's budget (Qwen's resize rule keeps the aspect
    ratio and makes both sides multiples of patch x merge: 28 for Qwen2.5-VL, 32 for Qwen3-VL).
    """
    path = str(path)
    if not is_vision_model(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        return tokenizer
    size_kwargs = {}
    if min_pixels is not None or max_pixels is not None:
        image_processor = AutoImageProcessor.from_pretrained(path)
        size = dict(image_processor.size)
        size["shortest_edge"] = min_pixels or size["shortest_edge"]
        size["longest_edge"] = max_pixels or size["longest_edge"]
        size_kwargs = {"size": size}
    if torchvision_available():
        processor = AutoProcessor.from_pretrained(path, **size_kwargs)
    else:
        model_type = AutoConfig.from_pretrained(path).model_type
        log.info("torchvision is not importable: using the image-only %s processor", model_type)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = IMAGE_ONLY_PROCESSORS[model_type](
            image_processor=AutoImageProcessor.from_pretrained(path, **size_kwargs),
            tokenizer=tokenizer,
            chat_template=_chat_template_of(path, tokenizer),
            video_config=_video_config_of(path),
        )
    processor.tokenizer.padding_side = "left"
    return processor


def _video_config_of(path: str) -> dict | None:
    """The checkpoint's video processor config, found as stock loading finds it (the nested entry of
    ``processor_config.json``, then ``video_preprocessor_config.json``, then the image config); None if none."""
    try:
        return VideoProcessorMixin.get_video_processor_dict(path)[0]
    except OSError:
        return None


def _chat_template_of(path: str, tokenizer) -> str | None:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    local = Path(path) / "chat_template.jinja"
    return local.read_text() if local.exists() else None


def tokenizer_of(processor):
    """The tokenizer inside a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)
