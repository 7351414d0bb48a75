"""Config loading: defaults, presets, overrides, strict validation, round trip."""

from __future__ import annotations

import pytest
import yaml

from chestxr.core import Config, ConfigError, config_from_dict, config_to_dict, load_config, parse_overrides


def test_defaults_are_valid_and_round_trip():
    cfg = Config()
    assert cfg.model.backbone == "densenet121"
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "data.findings=[A, B]",
            "train.pos_weight=auto",
            "preprocessing.window=[40, 400]",
            "train.grad_clip=null",
        ],
    )
    assert cfg.train.epochs == 3
    assert cfg.data.findings == ["A", "B"]
    assert cfg.train.pos_weight == "auto"
    assert cfg.preprocessing.window == (40.0, 400.0)
    assert cfg.train.grad_clip is None


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.epochz=3", "unknown key"),
        ("train.epochs=three", "expected an integer"),
        ("model.mode=softmax", "not one of"),
        ("augmentation.enabled=1", "true/false"),
        ("nosection.x=1", "unknown key"),
        ("train.epochs", "section.key=value"),
    ],
)
def test_bad_values_are_specific_errors(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_every_preset_loads():
    for name in ["demo", "nih14-densenet121", "chexpert5", "one-vs-rest", "binary", "nih14-fast"]:
        cfg = load_config(name)
        assert cfg.name == name


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump({"train": {"lr": 0.1, "bogus": 1}}))
    with pytest.raises(ConfigError, match=r"x.yaml.*bogus"):
        load_config(p)


def test_demo_yaml_matches_demo_command():
    from chestxr.cli._demo import DEMO_CONFIG

    assert load_config("demo") == config_from_dict(DEMO_CONFIG)


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
