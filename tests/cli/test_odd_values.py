"""Odd option and file values are refused with one line naming them (issue 24.6), not a traceback or a run that
silently never works."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_args

from chestxr.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--out", "OUT"],
        ["calibrate", "--checkpoint", "r", "--manifest", "m.csv"],
        ["evaluate", "--checkpoint", "r", "--manifest", "m.csv", "--out", "OUT"],
        ["manifest", "split", "m.csv", "--val", "0.1", "--test", "0.2", "--out", "OUT"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_outside_numpy_range_is_one_line(argv, seed, tmp_path, capsys):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--seed", seed])
    assert info.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert f"argument --seed: {seed} is out of range; allowed: in [0, 4294967295]" in line, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_config_seed_minus_one_is_one_line(synth_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(synth_manifest), "--out", str(out), *tiny_args("seed=-1")])
    err = capsys.readouterr().err
    assert code == 2 and "seed: -1 is out of range; allowed: in [0, 4294967295]" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()


# --- card: a bad metrics.json --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expect",
    [
        ("{not json", "cannot read JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"findings": [1, 2]}', "findings"),
        ('{"findings": {"Opacity": 3}}', "findings.Opacity"),
        ('{"findings": {"Opacity": {"auroc_ci": 7}}}', "findings.Opacity.auroc_ci"),
        ('{"level": "high"}', "level"),
        ('{"subgroups": {"sex": [1]}}', "subgroups"),
        ('{"model_info": "x"}', "model_info"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "nested"),
    ],
)
def test_card_with_a_bad_metrics_json_is_one_line(content, expect, tiny_run, tmp_path, capsys):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(content)
    code = main(["card", str(tiny_run), "--eval", str(ev), "--out", str(tmp_path / "card")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "metrics.json" in lines[0] and expect in lines[0], err
    assert not (tmp_path / "card").exists()


# --- state.json epoch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [-3, 1e12, 2.5, "1", True, 10**12])
def test_resume_with_an_edited_state_epoch_is_one_line(epoch, tiny_run_copy, synth_manifest, capsys):
    path = tiny_run_copy / "last" / "state.json"
    doc = json.loads(path.read_text())
    doc["epoch"] = epoch
    path.write_text(json.dumps(doc))
    before = (tiny_run_copy / "model.safetensors").read_bytes()
    code = main(
        [
            "train",
            "--manifest",
            str(synth_manifest),
            "--out",
            str(tiny_run_copy),
            "--resume",
            *tiny_args("train.epochs=3", "train.lr=0.003"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "state.json" in err and "epoch" in err and "Traceback" not in err, err
    assert (tiny_run_copy / "model.safetensors").read_bytes() == before


# --- preprocessing.channels: 1 in a 3-channel run ------------------------------------------------------------------


@pytest.mark.parametrize("also_in_channels", [False, True])
def test_channels_edited_in_model_json_is_one_line(also_in_channels, tiny_run_copy, synth_manifest, tmp_path, capsys):
    path = tiny_run_copy / "model.json"
    meta = json.loads(path.read_text())
    assert meta["in_channels"] == 3 and meta["preprocessing"]["channels"] == 3
    meta["preprocessing"]["channels"] = 1
    if also_in_channels:
        meta["in_channels"] = 1
    path.write_text(json.dumps(meta))
    image = next((synth_manifest.parent / "images").glob("*.png"))
    code = main(["predict", "--checkpoint", str(tiny_run_copy), str(image), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "channels" in lines[0] and "Traceback" not in err, err


# --- --resume compares the config it would train with ----------------------------------------------------------


def test_resume_refuses_an_edited_config_yaml(synth_manifest, tmp_path, capsys):
    """train --resume --out RUN (no --config) trains with RUN/config.yaml: an edit there (train.lr) must not pass
    as the same recipe just because the file now agrees with itself."""
    import yaml

    run = tmp_path / "run"
    args = ["train", "--manifest", str(synth_manifest), "--out", str(run), *tiny_args("train.epochs=2")]
    code = main([*args[:-2], *tiny_args("train.epochs=1")])
    assert code == 0, capsys.readouterr().err
    cfg_path = run / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["lr"] = float(cfg["train"]["lr"]) * 10
    cfg_path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    code = main(["train", "--manifest", str(synth_manifest), "--out", str(run), "--resume", "--set", "train.epochs=2"])
    err = capsys.readouterr().err
    assert code == 2 and "train.lr (trained with:" in err and "Traceback" not in err, err


def _argparse_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --- listen options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, expect",
    [
        ("--study-timeout", "nan", "argument --study-timeout: nan is out of range"),
        ("--study-timeout", "inf", "argument --study-timeout: inf is out of range"),
        ("--study-timeout", "0", "argument --study-timeout: 0 is out of range"),
        ("--batch-size", "0", "argument --batch-size: 0 is out of range"),
        ("--port", "0", "argument --port: 0 is out of range"),
        ("--port", "70000", "argument --port: 70000 is out of range"),
        ("--ae-title", "CHÉSTXR", "argument --ae-title: 'CHÉSTXR'"),
        ("--ae-title", "A\\B", "argument --ae-title: 'A\\\\B'"),
        ("--ae-title", "   ", "argument --ae-title: '   '"),
        ("--ae-title", "X" * 17, "argument --ae-title: 'XXXXXXXXXXXXXXXXX'"),
    ],
)
def test_listen_odd_options_are_one_line(option, value, expect, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["listen", "--checkpoint", str(tmp_path / "r"), "--out", str(tmp_path / "o"), option, value])
    assert info.value.code == 2
    line = _argparse_line(capsys)
    assert expect in line, line
    assert not (tmp_path / "o").exists()
