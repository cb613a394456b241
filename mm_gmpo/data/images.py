"""Image loading for datasets: safe paths, any PIL mode to RGB, a decoded-size guard, and Qwen's resize rule.

Size policy (what happens to a very large image):
- up to ``MAX_DECODED_PIXELS`` (16.8 MP, 4096 x 4096): kept as it is; the processor resizes it with the rule below.
  This is above the largest budget Qwen2.5-VL's processor uses (12.8 MP), so no usable resolution is lost;
- over that and up to ``HARD_LIMIT_PIXELS`` (144 MP, e.g. 12000 x 12000): downscaled at load time (aspect kept)
  to at most ``MAX_DECODED_PIXELS``, so a 10000 x 10000 scan costs one decode and is then held small;
- over ``HARD_LIMIT_PIXELS``: a :class:`UserError` (or the row is skipped with ``skip_invalid``), before decoding,
  from the header alone: such a file is either a mistake or a decompression bomb.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mm_gmpo.errors import UserError

MAX_DECODED_PIXELS = 4096 * 4096
HARD_LIMIT_PIXELS = 12000 * 12000
IMAGE_FACTOR = 28  # patch 14 x merge 2: each side of the resized image is a multiple of this
MAX_ASPECT_RATIO = 200


class BadRow(UserError):
    """A bad data row (or its image); ``reason`` is the key it is counted under when rows are skipped."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL resize rule: (height, width) -> (resized height, resized width).

    Both sides become multiples of ``factor`` (rounded to the nearest), the aspect ratio is kept as well as that
    allows, and the area is scaled into [min_pixels, max_pixels] (down with floor, up with ceil, so the bounds
    hold after rounding). An aspect ratio over 200 is refused, as the processor does.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio must be at most {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width)}"
        )
    resized_h = round(height / factor) * factor  # may be 0 for a thin image; the min_pixels branch lifts it
    resized_w = round(width / factor) * factor
    if resized_h * resized_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        resized_h = max(factor, math.floor(height / beta / factor) * factor)
        resized_w = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_h * resized_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_h = math.ceil(height * beta / factor) * factor
        resized_w = math.ceil(width * beta / factor) * factor
    return resized_h, resized_w


def vision_tokens(height: int, width: int, *, min_pixels: int, max_pixels: int, merge_size: int = 2) -> int:
    """Number of ``<|image_pad|>`` tokens one image expands to: one per merged 28 x 28 patch after resizing."""
    resized_h, resized_w = smart_resize(height, width, IMAGE_FACTOR, min_pixels, max_pixels)
    patch = IMAGE_FACTOR // merge_size
    return (resized_h // patch) * (resized_w // patch) // (merge_size * merge_size)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency is composited on white (diagrams are drawn on transparent canvases, and
    a plain ``convert`` would make them black), 16/32-bit integer and float images are scaled into 0-255."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0.0
        scale = 255.0 / 65535.0 if top > 255 and image.mode != "F" else 1.0
        if image.mode == "F" and top > 0:
            scale = 255.0 / top if top > 1.0 else 255.0
        values = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def resolve_inside(root: Path, relative: str, *, where: str) -> Path:
    """``root / relative``, refusing absolute paths and paths that leave ``root`` (``..``, symlinks)."""
    if not relative or Path(relative).is_absolute() or "\\" in relative and relative.startswith("\\"):
        raise BadRow(f"{where}: image path {relative!r} must be relative to the data folder {root}", "bad_path")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise BadRow(f"{where}: image path {relative!r} escapes the data folder {root}", "bad_path")
    return path


def open_image(source, *, where: str) -> Image.Image:
    """Open, check and decode one image (a path, a file object or a PIL image) into RGB.

    ``where`` names the dataset, row and file for error messages. Raises :class:`BadRow`.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise BadRow(f"{where}: image file not found", "missing_image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise BadRow(f"{where}: not a readable image ({exc})", "bad_image") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRow(f"{where}: image has no pixels ({width}x{height})", "bad_image")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:  # the processor would refuse it mid-batch
        raise BadRow(f"{where}: image is {width}x{height}, aspect ratio over {MAX_ASPECT_RATIO}", "bad_image")
    if width * height > HARD_LIMIT_PIXELS:
        raise BadRow(
            f"{where}: image is {width}x{height} = {width * height / 1e6:.0f} MP, over the "
            f"{HARD_LIMIT_PIXELS / 1e6:.0f} MP limit; downscale it first",
            "image_too_large",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if width * height > MAX_DECODED_PIXELS:
                ratio = math.sqrt(MAX_DECODED_PIXELS / (width * height))
                target = (max(1, int(width * ratio)), max(1, int(height * ratio)))
                image.draft("RGB", target)  # JPEG decodes at a reduced scale directly; other formats ignore it
                if image.mode not in ("L", "RGB", "RGBA", "LA"):  # resize in few channels when the mode allows
                    image = image.convert("L") if image.mode == "1" else to_rgb(image)
                image = to_rgb(image.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0))
            else:
                image.load()
                image = to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRow(f"{where}: corrupt or truncated image ({exc})", "bad_image") from exc
    return image


def blank_like(image: Image.Image) -> Image.Image:
    """A white RGB image of the same size (the blank-image control keeps the token count identical)."""
    return Image.new("RGB", image.size, (255, 255, 255))
