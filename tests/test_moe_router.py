"""algorithm.router_aux_loss_coef: a mixture-of-experts policy's router load-balancing loss in the update.

The training forward (padded and packed) computes transformers' own loss over the real tokens, as the stock
forward's ``aux_loss``; the update adds coef x it per micro-batch and logs ``actor/router_aux_loss``; 0 leaves the
update as it was and asks the model for nothing more; a negative value or a dense model is refused in one line.
"""

from __future__ import annotations

import pytest
import torch
from conftest import train_error_line

import mm_gmpo.trainer.forward as forward_module
from mm_gmpo.config import load_config
from mm_gmpo.errors import UserError
from mm_gmpo.models import load_model, load_processor
from mm_gmpo.testing.batches import run_update_round, sample_train_batch
from mm_gmpo.trainer.forward import is_moe, policy_outputs
from mm_gmpo.trainer.precision import resolve_precision
from mm_gmpo.trainer.setup import build_policy
from mm_gmpo.trainer.update import UpdateSettings


@pytest.fixture(scope="module")
def moe_batch(tiny_qwen3_vl_moe_dir):
    """6 image rows of different prompt and response lengths (left-padded prompts, right-padded responses)."""
    processor = load_processor(tiny_qwen3_vl_moe_dir, min_pixels=3136, max_pixels=12544)
    return sample_train_batch(processor, with_images=True)


def _settings(coef: float, micro_batch_size: int = 3) -> UpdateSettings:
    return UpdateSettings(
        temperature=1.0,
        chunk_size=512,
        micro_batch_size=micro_batch_size,
        updates_per_round=1,
        sequences_per_step=6,
        router_aux_coef=coef,
    )


def _gates(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: p for name, p in params.items() if name.endswith("mlp.gate.weight")}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_router_loss_equals_the_stock_forwards_aux_loss(tiny_qwen3_vl_moe_dir, moe_batch, packed):
    rollout = moe_batch.rollout
    assert rollout.num_rows == len(rollout.image_grid_thw)  # one row per prompt: the stock forward's own images
    assert (rollout.attention_mask == 0).any()  # there is padding to leave out
    model = load_model(tiny_qwen3_vl_moe_dir, "float32")
    assert is_moe(model)
    out = policy_outputs(model, rollout, temperature=1.0, packed=packed, router_aux=True)
    assert out.router_aux.requires_grad and out.router_aux.ndim == 0
    # the stock forward on the tokens the trainer's backbone runs on (the last token predicts nothing scored)
    input_ids = rollout.input_ids[:, :-1]
    inputs = dict(
        input_ids=input_ids,
        mm_token_type_ids=(input_ids == rollout.image_token_id).int(),
        pixel_values=rollout.pixel_values,
        image_grid_thw=rollout.image_grid_thw,
        output_router_logits=True,
        use_cache=False,
    )
    with torch.no_grad():
        stock = model(**inputs, attention_mask=rollout.attention_mask[:, :-1]).aux_loss
        stock_with_padding = model(**inputs, attention_mask=None).aux_loss  # pads routed and counted: another value
    assert float(out.router_aux.detach()) == pytest.approx(float(stock), abs=1e-6)
    assert abs(float(stock_with_padding) - float(stock)) > 1e-4
    # the log-probs are those of the forward without the router loss
    plain, _ = forward_module.policy_logprobs(model, rollout, temperature=1.0, packed=packed)
    assert torch.equal(out.logprobs.detach(), plain.detach())


def test_router_loss_moves_the_routers_and_is_logged(tiny_qwen3_vl_moe_dir, moe_batch):
    _, without, rows_without = run_update_round(load_model(tiny_qwen3_vl_moe_dir, "float32"), moe_batch, _settings(0))
    _, with_aux, rows_with = run_update_round(load_model(tiny_qwen3_vl_moe_dir, "float32"), moe_batch, _settings(1.0))
    gates_without, gates_with = _gates(without), _gates(with_aux)
    assert gates_with  # every decoder layer's router
    moved = max(float((gates_with[name] - gates_without[name]).abs().max()) for name in gates_with)
    assert moved > 1e-4, moved  # AdamW's first step: about lr x sign(gradient); the router loss flips signs
    (row,) = rows_with
    aux = row["actor/router_aux_loss"]
    # num_experts x sum_e (share of the assignments to e) x (mean router probability of e): at most num_experts
    experts = load_model(tiny_qwen3_vl_moe_dir, "float32").config.text_config.num_experts
    assert 0.0 < aux <= experts
    for key in ("actor/loss", "actor/pg_loss", "actor/grad_norm", "actor/entropy"):
        assert torch.isfinite(torch.tensor(row[key])), key
    assert "actor/router_aux_loss" not in rows_without[0]
    # the micro-batches' router losses, weighted by their rows (two of 3), are what the metric reports
    model = load_model(tiny_qwen3_vl_moe_dir, "float32")
    with torch.no_grad():
        per_micro = [
            float(policy_outputs(model, moe_batch.rollout.select(rows).trimmed(), temperature=1.0, router_aux=True)[2])
            for rows in ([0, 1, 2], [3, 4, 5])
        ]
    assert aux == pytest.approx(sum(per_micro) / 2, rel=1e-5)


def test_coef_zero_asks_the_model_for_nothing_more(tiny_qwen3_vl_moe_dir, moe_batch, monkeypatch):
    seen = []
    language_model = type(load_model(tiny_qwen3_vl_moe_dir, "float32").model.language_model)
    original = language_model.forward

    def recorded(self, *args, **kwargs):
        seen.append(kwargs.get("output_router_logits"))
        return original(self, *args, **kwargs)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the router loss was computed with algorithm.router_aux_loss_coef=0")

    monkeypatch.setattr(language_model, "forward", recorded)
    monkeypatch.setattr(forward_module, "router_aux_loss", must_not_run)
    settings = UpdateSettings(  # the defaults: algorithm.router_aux_loss_coef=0
        temperature=1.0, chunk_size=512, micro_batch_size=3, updates_per_round=1, sequences_per_step=6
    )
    _, after, rows = run_update_round(load_model(tiny_qwen3_vl_moe_dir, "float32"), moe_batch, settings)
    assert len(seen) == 4 and not any(seen)  # old log-probs and the update, 2 micro-batches each: no router logits
    assert "actor/router_aux_loss" not in rows[0] and torch.isfinite(torch.tensor(rows[0]["actor/loss"]))
    before = _gates(dict(load_model(tiny_qwen3_vl_moe_dir, "float32").named_parameters()))
    assert any(not torch.equal(p, before[name]) for name, p in _gates(after).items())  # they learn from the policy


def test_negative_coef_is_refused_before_any_model_loads(tmp_path, models_must_not_load, capsys):
    line = train_error_line(tmp_path, "nomodel", ["algorithm.router_aux_loss_coef=-0.001"], capsys)
    assert "algorithm.router_aux_loss_coef=-0.001 must be a finite number >= 0" in line


def test_coef_on_a_dense_model_is_refused(tiny_vl_dir):
    cfg = load_config(None, [f"model.path={tiny_vl_dir}", "algorithm.router_aux_loss_coef=0.001"])
    precision = resolve_precision(cfg.model.dtype, deepspeed=False, device=torch.device("cpu"))
    with pytest.raises(UserError, match=r"router_aux_loss_coef=0.001: .* is not a mixture-of-experts model"):
        build_policy(cfg, str(tiny_vl_dir), precision)
    cfg = load_config(None, [f"model.path={tiny_vl_dir}"])  # 0 (the default) on a dense model: nothing to refuse
    assert not is_moe(build_policy(cfg, str(tiny_vl_dir), precision))
