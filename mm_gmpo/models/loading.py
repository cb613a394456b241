"""Load a policy model from a hub id or a local folder with the stock transformers Auto classes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from mm_gmpo.errors import UserError
from mm_gmpo.models.processor import first_line, is_vision_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` is bf16 on a CUDA device and fp32 on a CPU (where bf16 matmuls are slow and log-probs drift)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in _DTYPES:
        raise UserError(f"model.dtype={name!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def resolve_attn_implementation(name: str | None) -> str | None:
    """``auto``: flash-attention 2 on a GPU where ``flash_attn`` is importable (variable lengths, the recipes'
    sequence lengths), else PyTorch's sdpa. Any other name goes to transformers as it is; empty: its default."""
    if name != "auto":
        return name or None
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def check_model_path(path: str | Path, key: str) -> None:
    """Fail in one line, before anything loads, when ``path`` names a local model that is not a model folder: missing,
    a file, empty, or without config.json. A hub id (``name`` or ``org/name`` that is not a local path) passes."""
    text = str(path)
    local = Path(text).expanduser()
    looks_local = local.exists() or local.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if not looks_local:
        return
    if not local.exists():
        raise UserError(f"{key}={text}: no such folder")
    if not local.is_dir():
        raise UserError(f"{key}={text} is a file; give the model's folder (with config.json)")
    if not any(local.iterdir()):
        raise UserError(f"{key}={text} is an empty folder")
    if not (local / "config.json").is_file():
        raise UserError(f"{key}={text} has no config.json: not a Hugging Face model folder")
    _check_config_json(local / "config.json", key)
    _check_weights(local, key)


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


def _check_config_json(path: Path, key: str) -> None:
    """config.json must be a JSON object naming its ``model_type`` (what the Auto classes dispatch on)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{key}: {path} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{key}: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise UserError(f"{key}: {path} has no model_type: not a Hugging Face model config")


def _check_weights(folder: Path, key: str) -> None:
    """The folder holds weights, and every safetensors file is whole: its header parses and its size is the
    header's 8 + length + the end of its last tensor (a copy cut short fails here, not deep inside the loader)."""
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not files:
        raise UserError(f"{key}={folder} has no weights (*.safetensors or pytorch_model*.bin)")
    for file in files:
        if file.suffix == ".safetensors":
            problem = safetensors_problem(file)
            if problem:
                raise UserError(f"{key}: {file} is damaged ({problem}); copy or save the model again")


def safetensors_problem(path: Path) -> str | None:
    """None for a whole safetensors file, else what is wrong with it (read from its header only)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return f"its header says {length} bytes but the file has {size}"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"truncated: {size} bytes of {expected}"
    return None


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    *,
    use_kernels: bool = False,
):
    """The causal LM (text) or image-text-to-text model (Qwen2.5-VL) at ``path``, in ``dtype`` (a name or a
    torch dtype), with ``attn_implementation`` (see :func:`resolve_attn_implementation`).

    ``use_kernels``: let transformers swap layers for kernels fetched from the Hugging Face hub (``kernels``
    package). Off unless asked: transformers >= 5.25 turns it on by default when ``kernels`` is installed, which
    downloads code at run time (an offline cluster fails), changes numerics against vLLM's and, on a CPU, breaks
    ``model.train()``. Passing ``False`` explicitly overrides that default in every version we support."""
    path = str(path)
    if not Path(path).exists() and Path(path).is_absolute():
        raise UserError(f"model.path={path} does not exist")
    cls = AutoModelForImageTextToText if is_vision_model(path) else AutoModelForCausalLM
    kwargs = {"dtype": dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype), "use_kernels": use_kernels}
    attn_implementation = resolve_attn_implementation(attn_implementation)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as exc:  # a hub id offline or unknown, a file missing from a download: transformers' own text
        raise UserError(f"model {path} cannot be loaded: {first_line(exc)}") from exc
