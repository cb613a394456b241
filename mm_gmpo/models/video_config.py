"""The video half of a Qwen2.5-VL or Qwen3-VL processor's configuration, written without torchvision.

Stock transformers saves a Qwen2.5-VL processor as one ``processor_config.json`` holding an ``image_processor`` and
a ``video_processor`` entry, and ``AutoProcessor.from_pretrained`` refuses a folder without the video one. Its
``Qwen2VLVideoProcessor`` cannot be imported without torchvision (its module imports it at the top), so this
module keeps a twin of that class's configuration: the same class defaults and init keywords (copied from
transformers' ``models/qwen2_vl/video_processing_qwen2_vl.py``; ``tests/test_processor_save.py`` checks them
against the installed source), on transformers' own ``VideoProcessorMixin``, whose ``_set_attributes`` and
``to_dict`` produce the entry exactly as the stock class does. :class:`Qwen3VLVideoConfig` is the same twin of
``Qwen3VLVideoProcessor`` (``models/qwen3_vl/video_processing_qwen3_vl.py``: 16-pixel patches, frames sampled at
2 fps).
"""

from __future__ import annotations

from typing import Any

from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
)
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import VideoProcessorMixin

STOCK_CLASS = "Qwen2VLVideoProcessor"


class Qwen3VLVideoProcessorInitKwargs(VideosKwargs, total=False):
    """The init keywords of the stock ``Qwen3VLVideoProcessor`` beyond ``VideosKwargs``."""

    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_frames: int
    max_frames: int
    cap_pixels_per_frame: bool
    max_video_tokens: int


class Qwen2VLVideoProcessorInitKwargs(Qwen3VLVideoProcessorInitKwargs, total=False):
    """The stock ``Qwen2VLVideoProcessor``'s init keywords beyond ``VideosKwargs`` (same names and types): the
    Qwen3-VL ones and a pixel range."""

    min_pixels: int
    max_pixels: int


class Qwen2VLVideoConfig(VideoProcessorMixin):
    """Configuration only (it processes no video): class defaults of the stock ``Qwen2VLVideoProcessor``."""

    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    min_frames = 4
    max_frames = 768
    do_sample_frames = False
    cap_pixels_per_frame = None
    max_video_tokens = 128000
    valid_kwargs = Qwen2VLVideoProcessorInitKwargs
    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, **kwargs: Any):
        # as the stock __init__: min_pixels / max_pixels (older configs) override the size bounds
        size = kwargs.pop("size", None)
        size = dict(self.size) if size is None else dict(size)
        if (min_pixels := kwargs.pop("min_pixels", None)) is not None:
            size["shortest_edge"] = min_pixels
        if (max_pixels := kwargs.pop("max_pixels", None)) is not None:
            size["longest_edge"] = max_pixels
        super().__init__()
        self._set_attributes(size=size, **kwargs)  # what the stock backend's __init__ calls

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["video_processor_type"] = self.stock_class
        return output

    stock_class = STOCK_CLASS


class Qwen3VLVideoConfig(Qwen2VLVideoConfig):
    """Configuration only: class defaults of the stock ``Qwen3VLVideoProcessor``."""

    size = {"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768}
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    patch_size = 16
    do_sample_frames = True
    max_video_tokens = 768
    valid_kwargs = Qwen3VLVideoProcessorInitKwargs
    max_image_size = {"longest_edge": 28 * 28 * 2 * 30000}
    max_duration = None
    num_frames = None
    fps = 2
    stock_class = "Qwen3VLVideoProcessor"


VIDEO_CONFIGS = {"qwen2_vl": Qwen2VLVideoConfig, "qwen3_vl": Qwen3VLVideoConfig}


def video_processor_config(source: dict[str, Any] | None = None, kind: str = "qwen2_vl") -> dict[str, Any]:
    """The ``video_processor`` entry stock transformers writes for a Qwen2.5-VL processor whose video processor
    was built from ``source``: a checkpoint's video config (kept as it is), the image config that stock loading
    falls back to when a checkpoint has none (Qwen's hub folders), or None (a new processor: the defaults)."""
    twin = VIDEO_CONFIGS[kind]
    known = set(twin.valid_kwargs.__annotations__) | set(VideosKwargs.__annotations__)
    kwargs = {key: value for key, value in (source or {}).items() if key in known}
    return twin(**kwargs).to_dict()
