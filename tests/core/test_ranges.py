"""Values out of range are refused at the boundary with one line naming the option and the range
(issue 18.6): config values, CLI options, thresholds in model.json, fixed:T."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_args

from chestxr.cli import main
from chestxr.core import CheckpointError, ConfigError, load_config


@pytest.mark.parametrize(
    "override,where",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("preprocessing.size=0", "preprocessing.size"),
        ("train.lr=.nan", "train.lr"),
        ("train.threads=-1", "train.threads"),
        ("train.epochs=0", "train.epochs"),
        ("data.num_workers=-1", "data.num_workers"),
        ("train.lr=-0.1", "train.lr"),
        ("calibration.ci_level=1.5", "calibration.ci_level"),
    ],
)
def test_config_values_out_of_range(override, where):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert msg.startswith(where) and "\n" not in msg
    assert "allowed" in msg or "finite" in msg


def test_train_epochs_0_is_refused_from_the_cli(synth_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(synth_manifest), "--out", str(out), *tiny_args("train.epochs=0")])
    err = capsys.readouterr().err
    assert code == 2 and "train.epochs: 0 is out of range; allowed: >= 1" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()  # no untrained model saved


def test_good_values_still_accepted():
    cfg = load_config(None, ["train.epochs=1", "train.batch_size=1", "data.num_workers=0", "train.lr=0.0001"])
    assert cfg.train.epochs == 1 and cfg.data.num_workers == 0


@pytest.mark.parametrize(
    "command,option,value",
    [
        ("predict", "--batch-size", "0"),
        ("predict", "--batch-size", "-1"),
        ("evaluate", "--workers", "-1"),
        ("evaluate", "--ci", "1.5"),
        ("calibrate", "--bootstrap", "-5"),
        ("calibrate", "--confidence", "0"),
    ],
)
def test_cli_options_out_of_range(command, option, value, tmp_path, capsys):
    argv = {
        "predict": ["predict", "--checkpoint", "r", "--out", str(tmp_path / "o"), "x.png"],
        "evaluate": ["evaluate", "--checkpoint", "r", "--manifest", "m.csv", "--out", str(tmp_path / "o")],
        "calibrate": ["calibrate", "--checkpoint", "r", "--manifest", "m.csv"],
    }[command]
    with pytest.raises(SystemExit) as info:
        main([*argv, option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert f"argument {option}: {value} is out of range; allowed:" in line and "Traceback" not in err


def test_fixed_threshold_outside_0_1_is_refused(tiny_run_copy, synth_manifest, capsys):
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(tiny_run_copy),
            "--manifest",
            str(synth_manifest),
            "--split",
            "val",
            "--method",
            "fixed:2",
            "--workers",
            "0",
            "--bootstrap",
            "10",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "fixed:2" in err and "[0, 1]" in err
    assert json.loads((tiny_run_copy / "model.json").read_text()).get("version") == 1


@pytest.mark.parametrize("value", [7.5, -3])
def test_model_json_threshold_outside_0_1_is_refused_at_load(tiny_run_copy, tmp_path, value, capsys):
    from chestxr.runs import read_metadata

    path = tiny_run_copy / "model.json"
    meta = json.loads(path.read_text())
    meta["thresholds"] = [{"finding": f, "threshold": 0.4} for f in meta["findings"]]
    meta["thresholds"][1]["threshold"] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"outside \[0, 1\]"):
        read_metadata(tiny_run_copy)
    image = next((tiny_run_copy.parent / "data" / "images").glob("*.png"), None) or next(
        tiny_run_copy.parent.rglob("*.png")
    )
    code = main(["predict", "--checkpoint", str(tiny_run_copy), "--out", str(tmp_path / "p"), str(image)])
    err = capsys.readouterr().err
    assert code == 2 and "outside [0, 1]" in err and meta["findings"][1] in err
