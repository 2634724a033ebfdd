import pytest

from recon.data.errors import ReconError
from recon.train.config import Config
from recon.train.overrides import build_config, dump_yaml, merge, parse_set


def test_set_overrides_nested_values_with_types():
    cfg = build_config(
        Config,
        sets=[
            "train.steps=500",
            "strategy.kind=mcmc",
            "data.background=[0, 0, 0]",
            "train.time_budget=12.5",
            "optim.means_lr=1e-3",
        ],
    )
    assert cfg.train.steps == 500 and cfg.strategy.kind == "mcmc"
    assert cfg.data.background == (0.0, 0.0, 0.0) and cfg.train.time_budget == 12.5
    assert cfg.optim.means_lr == 1e-3
    assert Config().train.steps == 30000  # defaults untouched


def test_unknown_key_names_the_valid_choices():
    with pytest.raises(ReconError, match="unknown config key 'train.stepz'.*steps"):
        build_config(Config, sets=["train.stepz=5"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.steps=abc", "train.steps: expected an integer"),
        ("strategy.kind=foo", "not one of 'default', 'mcmc'"),
        ("data.background=[1, 2]", "expected 3 values"),
        ("train.eval_at_end=3", "expected true or false"),
    ],
)
def test_wrong_types_are_errors(item, message):
    with pytest.raises(ReconError, match=message):
        build_config(Config, sets=[item])


def test_preset_then_set_and_yaml_round_trip(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  steps: 100\n  ssim_lambda: 0.5\nmodel:\n  sh_degree: 1\n")
    cfg = build_config(Config, preset=preset, sets=["train.steps=200"])
    assert (cfg.train.steps, cfg.train.ssim_lambda, cfg.model.sh_degree) == (200, 0.5, 1)
    import yaml

    again = merge(Config(), yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    with pytest.raises(ReconError, match="key=value"):
        parse_set("train.steps")
