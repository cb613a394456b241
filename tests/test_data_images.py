"""Image handling: Qwen's resize rule against transformers' own, RGB conversion of every mode, size guard, bad files."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mm_gmpo.data import images as images_module
from mm_gmpo.data.images import (
    HARD_LIMIT_PIXELS,
    MAX_DECODED_PIXELS,
    BadRow,
    blank_like,
    open_image,
    resolve_inside,
    smart_resize,
    to_rgb,
    vision_tokens,
)
from mm_gmpo.errors import UserError

try:  # the torch backend module imports torchvision; its PIL twin carries the same (copied) function
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize
except ImportError:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    min_pixels=st.sampled_from([56 * 56, 3136, 128 * 28 * 28, 256 * 28 * 28]),
    max_pixels=st.sampled_from([28 * 28 * 4, 401408, 1003520, 12845056]),
    factor=st.sampled_from([28, 32]),  # Qwen2.5-VL (patch 14 x merge 2), Qwen3-VL (16 x 2)
)
def test_smart_resize_matches_transformers(height, width, min_pixels, max_pixels, factor):
    if max(height, width) / min(height, width) > 200 or min_pixels > max_pixels:
        return
    assert smart_resize(height, width, factor, min_pixels, max_pixels) == hf_smart_resize(
        height, width, factor, min_pixels, max_pixels
    )


def test_smart_resize_properties_and_hand_values():
    # 224x224 is already a multiple of 28 and inside the budget: 8x8 merged patches = 64 tokens
    assert smart_resize(224, 224, 28, 3136, 1003520) == (224, 224)
    assert vision_tokens(224, 224, min_pixels=3136, max_pixels=1003520) == 64
    # 1000x2000 over a 401408 budget: beta = sqrt(2e6 / 401408) = 2.2321, 1000 / beta = 448.0 = 16 * 28,
    # 2000 / beta = 896 = 32 * 28; 448 * 896 is exactly the budget
    h, w = smart_resize(1000, 2000, 28, 3136, 401408)
    assert (h, w) == (448, 896) and h * w <= 401408
    # 1000x1000 over 200704: 1000 / sqrt(1e6 / 200704) = 448.0 -> 448 x 448 = 200704, 256 tokens
    assert vision_tokens(1000, 1000, min_pixels=3136, max_pixels=200704) == 256
    # Qwen3-VL's 16-pixel patches: 224x224 -> 7x7 merged 32-pixel patches; 1000x1000 over 200704: 448 = 14 x 32
    assert smart_resize(224, 224, 32, 3136, 1003520) == (224, 224)
    assert vision_tokens(224, 224, min_pixels=3136, max_pixels=1003520, patch_size=16) == 49
    assert vision_tokens(1000, 1000, min_pixels=3136, max_pixels=200704, patch_size=16) == 196
    # a tiny image is scaled up to the minimum
    h, w = smart_resize(10, 10, 28, 3136, 1003520)
    assert (h, w) == (56, 56)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000)


def _png(path, image):
    image.save(path)
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)), (255, 255, 255)),  # transparent -> white, not black
        (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: Image.new("LA", (8, 8), (0, 0)), (255, 255, 255)),
        (lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
        (lambda: Image.new("1", (8, 8), 0), (0, 0, 0)),
        (lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), (255, 255, 255)),
    ],
)
def test_modes_become_rgb(tmp_path, make, expected):
    image = open_image(_png(tmp_path / "x.png", make()) if make().mode != "CMYK" else make(), where="t")
    assert image.mode == "RGB" and image.getpixel((3, 3)) == expected


def test_palette_with_transparency_and_16_bit(tmp_path):
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.info["transparency"] = 1  # colour 1 is fully transparent
    assert open_image(_png(tmp_path / "p.png", palette), where="t").getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.full((6, 6), 65535 // 2, dtype=np.uint16))  # a 16-bit grayscale scan
    loaded = open_image(_png(tmp_path / "d.png", deep), where="t")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (127, 127, 127)
    assert to_rgb(Image.new("F", (2, 2), 0.5)).getpixel((0, 0)) == (127, 127, 127)


def test_large_image_is_downscaled_within_the_budget(tmp_path):
    big = Image.new("1", (10000, 10000), 1)
    big.paste(0, (0, 0, 5000, 10000))  # left half black
    image = open_image(_png(tmp_path / "big.png", big), where="t")
    assert image.width * image.height <= MAX_DECODED_PIXELS and image.width == image.height
    assert image.getpixel((10, 10)) == (0, 0, 0) and image.getpixel((image.width - 10, 10)) == (255, 255, 255)


def _png_header_only(path, width, height, bit_depth=8):
    """A grayscale PNG that declares ``width x height`` but carries one empty data chunk (never decoded here)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")))
    return path


def _png_16bit_gray(path, width, height, row_values):
    """A 16-bit grayscale PNG written row by row (never held in memory): every row is ``row_values`` (uint16)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + np.resize(np.asarray(row_values, dtype=np.uint16), width).astype(">u2").tobytes()  # big-endian
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_large_16_bit_image_is_resized_before_conversion(tmp_path):
    # left half dark, right half bright, in 16-bit values: the reduced image keeps the split, scaled to 8 bits
    path = _png_16bit_gray(tmp_path / "scan.png", 5000, 5000, [4096] * 2500 + [65535] * 2500)
    image = open_image(path, where="t")
    assert image.mode == "RGB" and image.width * image.height <= MAX_DECODED_PIXELS and image.width == image.height
    assert image.getpixel((10, 10)) == (15, 15, 15) and image.getpixel((image.width - 10, 10)) == (255, 255, 255)


_PEAK_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import psutil
    from mm_gmpo.data.images import open_image
    before = psutil.Process().memory_info().rss
    image = open_image(sys.argv[1], where="memory test")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(image.width, image.height, peak - before)
    """
)


def test_a_12000_square_16_bit_png_loads_in_under_1_gb(tmp_path):
    # the case: a 300 KB file inside the 144 MP limit that used to cost 3.6 GB to load
    path = _png_16bit_gray(tmp_path / "deep.png", 12000, 12000, [30000])
    assert path.stat().st_size < 400_000
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    width, height, growth = (int(v) for v in done.stdout.split())
    assert width * height <= MAX_DECODED_PIXELS
    assert growth < 1024**3, f"peak memory grew by {growth / 2**20:.0f} MB"


def test_decoded_size_is_checked_from_the_header(tmp_path, monkeypatch):
    # bytes per pixel come from the mode the header declares: 16-bit gray is 2 bytes, 8-bit gray 1
    assert images_module.decoded_bytes(100, 10, "I;16") == 2000
    assert images_module.decoded_bytes(100, 10, "L") == 1000 and images_module.decoded_bytes(100, 10, "RGBA") == 4000
    assert HARD_LIMIT_PIXELS * 4 <= images_module.MAX_DECODE_BYTES  # every mode inside the pixel limit is allowed
    monkeypatch.setattr(images_module, "MAX_DECODE_BYTES", 100 * 2**20)
    deep = _png_header_only(tmp_path / "deep.png", 8000, 8000, bit_depth=16)  # 122 MB decoded, never decoded here
    with pytest.raises(
        BadRow, match=r"geo row 3 \(deep.png\): image is 8000x8000 in mode I;16, 122 MB decoded"
    ) as info:
        open_image(deep, where="geo row 3 (deep.png)")
    assert info.value.reason == "image_too_large" and "\n" not in str(info.value)


def test_over_the_hard_limit_fails_before_decoding(tmp_path):
    side = int(HARD_LIMIT_PIXELS**0.5) + 1000
    with pytest.raises(BadRow, match="over the 144 MP limit") as info:
        open_image(_png_header_only(tmp_path / "huge.png", side, side), where="geo row 7 (f.png)")
    assert info.value.reason == "image_too_large" and "geo row 7" in str(info.value)


def test_corrupt_truncated_and_missing_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(BadRow, match="not a readable image") as info:
        open_image(tmp_path / "junk.png", where="ds row 3")
    assert info.value.reason == "bad_image" and isinstance(info.value, UserError)
    good = _png(tmp_path / "good.png", Image.effect_noise((64, 64), 50).convert("RGB"))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:300])
    with pytest.raises(BadRow, match="corrupt or truncated"):
        open_image(tmp_path / "cut.png", where="ds row 3")
    with pytest.raises(BadRow, match="aspect ratio over 200"):
        open_image(Image.new("RGB", (402, 2)), where="ds row 3")
    with pytest.raises(BadRow, match="not found") as info:
        open_image(tmp_path / "absent.png", where="ds row 3")
    assert info.value.reason == "missing_image"


def test_paths_cannot_leave_the_data_folder(tmp_path):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    assert resolve_inside(root, "img/a.png", where="w") == (root / "img" / "a.png").resolve()
    for bad in ("../secret.png", "img/../../secret.png", "/etc/hosts"):
        with pytest.raises(BadRow) as info:
            resolve_inside(root, bad, where="geometry3k:train row 5 (train.jsonl)")
        assert info.value.reason == "bad_path" and "row 5" in str(info.value)
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(BadRow, match="escapes"):
        resolve_inside(root, "link.png", where="w")


def test_blank_like_keeps_the_size():
    blank = blank_like(Image.new("RGB", (33, 17), (1, 2, 3)))
    assert blank.size == (33, 17) and blank.getextrema() == ((255, 255), (255, 255), (255, 255))
