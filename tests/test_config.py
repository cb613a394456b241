import pytest

from mm_gmpo.config import Config, load_config, save_config
from mm_gmpo.errors import UserError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  lr: 1e-6\n  max_steps: 4\nrollout:\n  n: 8\n")
    cfg = load_config(
        path, ["trainer.lr=3e-5", "algorithm.loss=grpo", "algorithm.clip_low=0.2", "trainer.betas=[0.9,0.99]"]
    )
    assert isinstance(cfg, Config)
    assert cfg.trainer.lr == pytest.approx(3e-5)  # override wins over the file
    assert cfg.trainer.max_steps == 4 and cfg.rollout.n == 8
    assert cfg.algorithm.loss == "grpo" and cfg.algorithm.clip_low == 0.2
    assert cfg.trainer.betas == [0.9, 0.99]
    assert cfg.algorithm.clip_high is None  # untouched default


def test_required_keys_exist():
    t = load_config().trainer
    for key in ("output_dir", "max_steps", "seed", "save_every", "resume_from", "deepspeed"):
        assert hasattr(t, key)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.lrr=1", "unknown config key trainer.lrr; did you mean trainer.lr?"),
        ("trainer.max_stesp=3", "did you mean trainer.max_steps?"),
        ("trainer.max_steps=abc", "trainer.max_steps must be int"),
        ("trainer.max_steps=1.5", "trainer.max_steps must be int"),
        ("rollout.backend=sglang", "rollout.backend='sglang' is not one of: hf, vllm"),
        ("model.tiny.kind=llama", "model.tiny.kind='llama' is not one of"),
        ("trainer.tensorboard=3", "trainer.tensorboard must be bool"),
        ("trainer.betas=0.9", "trainer.betas must be a list"),
        ("nosuchsection.x=1", "unknown config key nosuchsection"),
        ("trainer", "is not of the form key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_bad_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  save_evry: 2\n")
    with pytest.raises(UserError, match="did you mean trainer.save_every"):
        load_config(typo)


def test_round_trip(tmp_path):
    cfg = load_config(None, ["trainer.seed=7", "data.template=qwen_math"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_shipped_configs_load():
    from pathlib import Path

    from test_recipes import load_recipe  # reads reward.format: easyr1 as think_boxed until this branch knows it

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        load_recipe(path)
