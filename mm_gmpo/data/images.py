"""Image loading for datasets: safe paths, any PIL mode to RGB, a decoded-size guard, and Qwen's resize rule.

Size policy (what happens to a very large image), decided from the header before any pixel is decoded:
- up to ``MAX_DECODED_PIXELS`` (16.8 MP, 4096 x 4096): kept as it is; the processor resizes it with the rule below.
  This is above the largest budget Qwen2.5-VL's processor uses (12.8 MP), so no usable resolution is lost;
- over that and up to ``HARD_LIMIT_PIXELS`` (144 MP, e.g. 12000 x 12000): downscaled at load time (aspect kept)
  to at most ``MAX_DECODED_PIXELS``. JPEG is decoded reduced (``draft``: DCT scaling); other formats are decoded
  once in their own mode (a 16-bit scan stays 2 bytes a pixel), resized in that mode, and only the small result
  is converted to RGB, so the extra memory is the decoded frame (at most ``MAX_DECODE_BYTES``) plus the result;
- over ``HARD_LIMIT_PIXELS``, or a frame whose decoded size (pixels x bytes per pixel of its mode, i.e. its bit
  depth and bands) is over ``MAX_DECODE_BYTES``: a :class:`UserError` (or the row is skipped with
  ``skip_invalid``) from the header alone: such a file is either a mistake or a decompression bomb.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode

from mm_gmpo.errors import UserError

MAX_DECODED_PIXELS = 4096 * 4096
HARD_LIMIT_PIXELS = 12000 * 12000
MAX_DECODE_BYTES = 4 * HARD_LIMIT_PIXELS  # 576 MB: a 144 MP frame of 4 bytes a pixel (RGBA, 32-bit integer/float)
IMAGE_FACTOR = 28  # Qwen2.5-VL's patch 14 x merge 2 (Qwen3-VL: 16 x 2 = 32); callers pass the processor's own
MAX_ASPECT_RATIO = 200


class BadRow(UserError):
    """A bad data row (or its image); ``reason`` is the key it is counted under when rows are skipped."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL resize rule: (height, width) -> (resized height, resized width).

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


def vision_tokens(
    height: int, width: int, *, min_pixels: int, max_pixels: int, patch_size: int = 14, merge_size: int = 2
) -> int:
    """Number of ``<|image_pad|>`` tokens one image expands to: one per merged patch (``patch_size x merge_size``
    pixels a side: 28 for Qwen2.5-VL, 32 for Qwen3-VL) after resizing to multiples of that side."""
    factor = patch_size * merge_size
    resized_h, resized_w = smart_resize(height, width, factor, min_pixels, max_pixels)
    return (resized_h // factor) * (resized_w // factor)


_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per sample


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes one decoded frame of ``mode`` takes (bands x bytes per sample from the mode's bit depth)."""
    try:
        descriptor = ImageMode.getmode(mode)
    except KeyError:  # a mode Pillow names but does not describe: assume the widest
        return width * height * 4
    return width * height * len(descriptor.bands) * np.dtype(descriptor.typestr).itemsize


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency is composited on white (diagrams are drawn on transparent canvases, and
    a plain ``convert`` would make them black), 16/32-bit integer and float images are scaled into 0-255."""
    if image.mode == "RGB":
        return image
    if image.mode in _DEEP_MODES:
        values = np.asarray(image, dtype=np.float32)  # float32: exact for 16-bit values, half float64's memory
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / 65535.0 if top > 255 and image.mode != "F" else 1.0
        if image.mode == "F" and top > 0:
            scale = 255.0 / top if top > 1.0 else 255.0
        values = values * np.float32(scale)  # a new array: the asarray view of an F image is read-only
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), mode="L").convert("RGB")
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
    if (size := decoded_bytes(width, height, image.mode)) > MAX_DECODE_BYTES:
        raise BadRow(
            f"{where}: image is {width}x{height} in mode {image.mode}, {size / 2**20:.0f} MB decoded, over the "
            f"{MAX_DECODE_BYTES / 2**20:.0f} MB limit; downscale it or reduce its bit depth first",
            "image_too_large",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if width * height > MAX_DECODED_PIXELS:
                image = _decode_reduced(image, width, height)
            else:
                image.load()
            image = to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRow(f"{where}: corrupt or truncated image ({exc})", "bad_image") from exc
    return image


def _decode_reduced(image: Image.Image, width: int, height: int) -> Image.Image:
    """A large image decoded once and resized to at most ``MAX_DECODED_PIXELS`` in its own mode (aspect kept).

    JPEG decodes at a reduced scale directly (``draft``). Other formats decode the whole frame, which the header
    check has bounded; the resize runs in the frame's mode (2 bytes a pixel for a 16-bit scan, not 4 for RGB or
    8 for float64), and only the result is converted."""
    ratio = math.sqrt(MAX_DECODED_PIXELS / (width * height))
    target = (max(1, int(width * ratio)), max(1, int(height * ratio)))
    image.draft(image.mode if image.mode in ("L", "RGB") else "RGB", target)
    if image.mode == "1":  # resize would use nearest on bits: thin lines vanish; 1 byte a pixel as L
        image = image.convert("L")
    elif image.mode == "P":  # palette indices cannot be averaged: halve with nearest first, then convert
        image = image.resize((min(width, 2 * target[0]), min(height, 2 * target[1])), Image.Resampling.NEAREST)
        image = to_rgb(image)
    return image.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)


def blank_like(image: Image.Image) -> Image.Image:
    """A white RGB image of the same size (the blank-image control keeps the token count identical)."""
    return Image.new("RGB", image.size, (255, 255, 255))
