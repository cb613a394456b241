"""The image-only Qwen2.5-VL and Qwen3-VL processors save a complete processor: its video half's config as stock transformers
writes it, so checkpoints load with stock ``AutoProcessor`` where torchvision exists.

Stock ``AutoProcessor`` cannot load any Qwen2.5-VL processor on a machine without torchvision, so these tests
check the saved files, and check the twin of ``Qwen2VLVideoProcessor``'s configuration against the installed
transformers source (read with ``ast``: the module itself imports torchvision)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import transformers
from conftest import tiny_dir
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
)
from transformers.processing_utils import VideosKwargs

from mm_gmpo.models import load_processor
from mm_gmpo.models.video_config import VIDEO_CONFIGS

MODELS = Path(transformers.__file__).parent / "models"
# tiny model kind: (its processor class, its stock video processor's module, the twin's key in VIDEO_CONFIGS)
KINDS = {
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", MODELS / "qwen2_vl" / "video_processing_qwen2_vl.py", "qwen2_vl"),
    "qwen3_vl": ("Qwen3VLProcessor", MODELS / "qwen3_vl" / "video_processing_qwen3_vl.py", "qwen3_vl"),
}
_NAMES = {"OPENAI_CLIP_MEAN": OPENAI_CLIP_MEAN, "OPENAI_CLIP_STD": OPENAI_CLIP_STD}
_NAMES |= {"IMAGENET_STANDARD_MEAN": IMAGENET_STANDARD_MEAN, "IMAGENET_STANDARD_STD": IMAGENET_STANDARD_STD}
_NAMES["PILImageResampling"] = PILImageResampling


def _stock_class(source: Path, name: str) -> ast.ClassDef:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def _stock_defaults(kind: str) -> dict:
    """Class-level defaults of the installed stock video processor (literal values and the constants above)."""
    source, twin = KINDS[kind][1], VIDEO_CONFIGS[KINDS[kind][2]]
    defaults = {}
    for node in _stock_class(source, twin.stock_class).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name != "valid_kwargs":
                defaults[name] = eval(compile(ast.Expression(node.value), str(source), "eval"), dict(_NAMES))
    return defaults


def _json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("kind", list(KINDS))
def test_twin_matches_the_installed_stock_class(kind):
    twin = VIDEO_CONFIGS[KINDS[kind][2]]
    for name, value in _stock_defaults(kind).items():
        assert _json(getattr(twin, name)) == _json(value), name
    stock_kwargs = {
        node.target.id
        for node in _stock_class(KINDS[kind][1], twin.stock_class + "InitKwargs").body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert set(twin.valid_kwargs.__annotations__) == stock_kwargs | set(VideosKwargs.__annotations__)


def _saved(folder: Path) -> dict:
    return json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_saved_processor_has_the_stock_video_entry(kind, request):
    processor_class, _, twin_key = KINDS[kind]
    twin = VIDEO_CONFIGS[twin_key]
    config = _saved(tiny_dir(request, kind))
    assert config["processor_class"] == processor_class
    assert config["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    video = config["video_processor"]
    assert video["video_processor_type"] == twin.stock_class
    # every key is one the stock class accepts, and every stock class default is written as the stock class has it
    valid = set(twin.valid_kwargs.__annotations__) | {"video_processor_type"}
    assert set(video) <= valid, set(video) - valid
    stock = _stock_defaults(kind)
    for key in set(video) & set(stock):
        assert video[key] == _json(stock[key]), key
    for key, value in stock.items():
        if key in twin.valid_kwargs.__annotations__ and value is not None:
            assert key in video, key
    assert video["rescale_factor"] == pytest.approx(1 / 255) and video["return_metadata"] is False


def test_round_trip_keeps_the_checkpoint_video_config(tiny_vl_dir, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_vl_dir, folder)
    config = _saved(folder)
    config["video_processor"]["max_frames"] = 64  # a checkpoint's own setting must survive load and save
    (folder / "processor_config.json").write_text(json.dumps(config), encoding="utf-8")
    load_processor(folder).save_pretrained(tmp_path / "saved")
    assert _saved(tmp_path / "saved") == config


def test_hub_style_folder_gets_the_video_config_stock_loading_derives(tiny_vl_dir, tmp_path):
    # Qwen's hub folders carry only preprocessor_config.json (the image config); stock loading then builds the
    # video processor from that file, so the saved video entry has the image config's values over the defaults
    folder = tmp_path / "hub"
    shutil.copytree(tiny_vl_dir, folder)
    image = _saved(folder)["image_processor"]
    (folder / "processor_config.json").unlink()
    legacy = {**image, "min_pixels": 3136, "max_pixels": 401408, "processor_class": "Qwen2_5_VLProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(legacy), encoding="utf-8")
    load_processor(folder).save_pretrained(tmp_path / "saved")
    video = _saved(tmp_path / "saved")["video_processor"]
    assert video["size"] == {"shortest_edge": 3136, "longest_edge": 401408}
    assert video["video_processor_type"] == "Qwen2VLVideoProcessor" and "image_processor_type" not in video
    assert video["max_frames"] == 768 and video["temporal_patch_size"] == 2
