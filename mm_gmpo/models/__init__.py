"""Model and processor loading (one ``from_pretrained`` path for hub ids, local folders and tiny test models)."""

from mm_gmpo.models.loading import check_model_path, load_model, resolve_dtype
from mm_gmpo.models.processor import is_vision_model, load_processor, tokenizer_of
from mm_gmpo.models.tiny import TinyModelSpec, make_tiny_model

__all__ = [
    "TinyModelSpec",
    "check_model_path",
    "is_vision_model",
    "load_model",
    "load_processor",
    "make_tiny_model",
    "resolve_dtype",
    "tokenizer_of",
]
