"""Training and validation prompts from the data config (loaded once, before the loop)."""

from __future__ import annotations

import logging

from mm_gmpo.config import Config
from mm_gmpo.errors import UserError

log = logging.getLogger(__name__)


def load_prompt_sets(cfg: Config, processor) -> tuple[list, list, dict[str, float]]:
    """(train prompts, validation prompts, data metrics such as rows dropped or rendered)."""
    train, train_metrics = _prompts(cfg, processor, cfg.data.train, cfg.data.train_limit, "train")
    if not train:
        raise UserError(f"data.train={cfg.data.train}: no usable prompts")
    val, val_metrics = (
        ([], {}) if not cfg.data.val else _prompts(cfg, processor, cfg.data.val, cfg.data.val_limit, "val")
    )
    return train, val, {**train_metrics, **val_metrics}


def _prompts(cfg: Config, processor, spec: str, limit: int, split: str):
    from mm_gmpo.data import build_prompts, load_examples
    from mm_gmpo.data.generic import ColumnKeys

    d = cfg.data
    examples, stats = load_examples(
        spec,
        source=d.source,
        local_dir=d.local_dir or None,
        split_limit=limit or None,
        skip_invalid=d.skip_invalid,
        blank_images=d.blank_images,
        keys=ColumnKeys(d.prompt_key, d.answer_key, d.image_key, d.choices_key),
    )
    prompts, prompt_stats = build_prompts(
        examples,
        processor,
        template=d.template,
        show_choices=d.show_choices,
        max_prompt_length=d.max_prompt_length,
        min_pixels=d.min_pixels,
        max_pixels=d.max_pixels,
    )
    metrics = {
        f"data/{split}_{key}": float(value)
        for key, value in {**_as_dict(stats), **_as_dict(prompt_stats)}.items()
        if isinstance(value, (int, float))
    }
    log.info("%s: %d prompts from %s (%s)", split, len(prompts), spec, metrics)
    return prompts, metrics


def _as_dict(stats) -> dict:
    if hasattr(stats, "as_dict"):
        return stats.as_dict()
    return dict(vars(stats)) if stats is not None else {}
