"""The shipped recipes hold the official settings: the text recipes those of the official GMPO code (callsys/GMPO on
oat 0.1.3 and understand-r1-zero), the Geometry3K recipes those of EasyR1's example, so that a later edit cannot
drift from them silently. The toy and tiny configs keep the defaults of every key added for the recipes (their
recorded learning results depend on the behaviour those defaults keep)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_gmpo.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEXT_RECIPES = {
    "math_qwen2_5_math_7b_gmpo.yaml": ("Qwen/Qwen2.5-Math-7B", "gmpo", 0.4, 0.4),
    "math_qwen2_5_math_7b_grpo.yaml": ("Qwen/Qwen2.5-Math-7B", "grpo", 0.2, 0.2),
    "math_qwen2_5_math_1_5b_gmpo.yaml": ("Qwen/Qwen2.5-Math-1.5B", "gmpo", 0.4, 0.4),
    "math_qwen2_5_math_1_5b_grpo.yaml": ("Qwen/Qwen2.5-Math-1.5B", "grpo", 0.2, 0.2),
    # the official ablations: grpo_clip_wider (ratio clip [0.67, 1.49]) and the harmonic-mean HMPO
    "math_qwen2_5_math_7b_grpo_clip_wider.yaml": ("Qwen/Qwen2.5-Math-7B", "grpo", 0.33, 0.49),
    "math_qwen2_5_math_7b_hmpo.yaml": ("Qwen/Qwen2.5-Math-7B", "hmpo", 0.4, 0.4),
}
GEO3K_RECIPES = ("geo3k_qwen2_5_vl_7b_gmpo.yaml", "geo3k_qwen2_5_vl_7b_grpo.yaml")
# Qwen3 recipes: (their Qwen2.5 twin, the keys where they differ from it: each a choice their header states)
QWEN3_RECIPES = {
    "geo3k_qwen3_vl_8b_gmpo.yaml": (
        "geo3k_qwen2_5_vl_7b_gmpo.yaml",
        {"model.path", "rollout.vllm_gpu_memory_utilization"},
    ),
    "geo3k_qwen3_vl_8b_grpo.yaml": (
        "geo3k_qwen2_5_vl_7b_grpo.yaml",
        {"model.path", "rollout.vllm_gpu_memory_utilization"},
    ),
    "math_qwen3_4b_gmpo.yaml": (
        "math_qwen2_5_math_7b_gmpo.yaml",
        {
            "model.path",
            "data.template",
            "reward.extraction",
            "rollout.stop_tokens",
            "rollout.max_new_tokens",
            "rollout.val_temperature",
        },
    ),
}
SMALL_CONFIGS = ("geo3k_tiny.yaml", "math_tiny.yaml", "toy_gmpo.yaml", "toy_grpo.yaml", "toy_text_gmpo.yaml")
SMALL_CONFIGS += ("toy_text_grpo.yaml",)


def load_recipe(path: Path) -> Config:
    return load_config(path, [])


def test_every_shipped_yaml_loads_and_is_classified():
    paths = sorted(CONFIGS.glob("*.yaml"))
    names = {p.name for p in paths}
    assert names == set(TEXT_RECIPES) | set(GEO3K_RECIPES) | set(QWEN3_RECIPES) | set(SMALL_CONFIGS), "unchecked"
    for path in paths:
        assert isinstance(load_recipe(path), Config)


@pytest.mark.parametrize("name", sorted(TEXT_RECIPES))
def test_text_recipes_hold_the_official_settings(name):
    model, loss, clip_low, clip_high = TEXT_RECIPES[name]
    cfg = load_recipe(CONFIGS / name)
    t, r, a, d = cfg.trainer, cfg.rollout, cfg.algorithm, cfg.data
    assert cfg.model.path == model and d.template == "qwen_math" and d.max_prompt_length == 1024
    # 500 rounds of 128 prompts x 8 responses, 8 optimizer steps of 128 responses each: step_00500
    assert (t.max_steps, t.updates_per_round, r.prompts_per_round, r.n) == (4000, 8, 128, 8)
    assert t.max_steps // t.updates_per_round == 500
    assert r.prompts_per_round * r.n // t.updates_per_round == 128
    assert (t.lr, t.betas, t.weight_decay, t.grad_clip, t.warmup_steps) == (1e-6, [0.9, 0.95], 0.0, 1.0, 0)
    assert (r.temperature, r.top_p, r.top_k, r.max_new_tokens) == (1.0, 1.0, 0, 3000)
    assert r.stop_tokens == ["<|endoftext|>"]  # the official sampler unsets every stop string: EOS only
    assert t.minibatch_order == "shuffle" and a.adv_eps == 1e-8 and a.normalize_std
    assert (a.loss, a.clip_low, a.clip_high, a.clip_dual, a.loss_aggregation) == (loss, clip_low, clip_high, 0.0, "seq_mean")  # fmt: skip
    assert a.kl_coef == 0.0 and a.entropy_coef == 0.0 and not a.dynamic_sampling
    assert cfg.reward.zero_truncated and cfg.reward.extraction == "official"  # boxed_reward_fn, truncated -> 0
    assert t.save_every == 800  # the official save_steps: every 100 rounds


@pytest.mark.parametrize("name", GEO3K_RECIPES)
def test_geo3k_recipes_hold_easyr1_settings(name):
    cfg = load_recipe(CONFIGS / name)
    t, r, a, d, w = cfg.trainer, cfg.rollout, cfg.algorithm, cfg.data, cfg.reward
    assert cfg.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert d.template == "geo3k_easyr1"  # problem and instruction joined by a space
    assert (d.min_pixels, d.max_pixels, d.max_prompt_length) == (262144, 4194304, 2048)
    assert (r.n, r.prompts_per_round, r.temperature, r.top_p, r.max_new_tokens) == (5, 512, 1.0, 1.0, 2048)
    # 4 updates of 128 prompts per round; 15 epochs of 4 rounds (2,101 // 512, EasyR1 drops the partial batch)
    assert t.updates_per_round == 4 and r.prompts_per_round // t.updates_per_round == 128
    assert t.max_steps == 15 * (2101 // 512) * 4
    assert (t.lr, t.betas, t.weight_decay, t.grad_clip, t.warmup_steps) == (1e-6, [0.9, 0.999], 1e-2, 1.0, 0)
    assert a.kl_coef == 1e-2 and a.adv_eps == 1e-6 and a.normalize_std
    assert (w.accuracy_weight, w.format_weight, w.zero_truncated) == (0.9, 0.1, False)
    assert (w.format, w.extraction) == ("easyr1", "easyr1")
    assert r.stop_tokens == ["<|im_end|>", "<|endoftext|>"]  # the instruct model's own end of turn
    # the paper's evaluation protocol: 16 samples at temperature 0.5, in validation and in the eval command
    assert (r.val_n, r.val_temperature) == (16, 0.5)
    text = (CONFIGS / name).read_text().replace("\\\n#", "")  # the command's continuation lines joined
    command = next(line for line in text.splitlines() if "mm-gmpo eval" in line)
    for flag in ("--data geometry3k:test", "--template geo3k_easyr1", "--n 16", "--temperature 0.5"):
        assert flag in command, flag
    if "grpo" in name:  # EasyR1's PPO-clip loss: 0.2 / 0.3, dual clip 3, token mean over the mini-batch
        assert (a.loss, a.clip_low, a.clip_high, a.clip_dual, a.loss_aggregation) == ("grpo", 0.2, 0.3, 3.0, "token_mean")  # fmt: skip
    else:  # the paper's GMPO loss in the same recipe
        assert (a.loss, a.clip_low, a.clip_high, a.clip_dual, a.loss_aggregation) == ("gmpo", 0.4, 0.4, 0.0, "seq_mean")  # fmt: skip


@pytest.mark.parametrize("name", SMALL_CONFIGS)
def test_toy_and_tiny_configs_keep_the_defaults_of_the_new_keys(name):
    cfg = load_recipe(CONFIGS / name)
    default = Config()
    assert cfg.rollout.stop_tokens == default.rollout.stop_tokens == ["<|im_end|>", "<|endoftext|>"]
    assert cfg.trainer.minibatch_order == default.trainer.minibatch_order == "strided"
    assert cfg.algorithm.adv_eps == default.algorithm.adv_eps == 1e-6
    assert cfg.algorithm.clip_dual == 0.0 and cfg.algorithm.loss_aggregation == "seq_mean"
    assert cfg.data.template != "geo3k_easyr1"


def _flat(cfg: Config) -> dict:
    import dataclasses

    out = {}
    for section in dataclasses.fields(cfg):
        for key, value in dataclasses.asdict(getattr(cfg, section.name)).items():
            out[f"{section.name}.{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(QWEN3_RECIPES))
def test_qwen3_recipes_differ_from_their_twins_only_where_they_say(name):
    twin, differ = QWEN3_RECIPES[name]
    ours, theirs = _flat(load_recipe(CONFIGS / name)), _flat(load_recipe(CONFIGS / twin))
    changed = {key for key in ours if ours[key] != theirs[key]} - {"trainer.output_dir"}
    assert changed == differ, changed ^ differ
    header = (CONFIGS / name).read_text().split("\nmodel:\n")[0]
    assert "ours" in header and "docs/gpu.md" in header
    assert ours["model.path"] in {"Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-4B"}
