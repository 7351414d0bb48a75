"""``calibrate`` applies the run's own calibration config (the preset it was trained with) unless flags
override it: the nih14-densenet121 preset's Pneumothorax rule (sensitivity:0.9), tiny backbone."""

from __future__ import annotations

import json
import shutil
import warnings

import pandas as pd
import pytest
from conftest import tiny_overrides

from chestxr.cli import main
from chestxr.core import CalibrationError, load_config
from chestxr.runs import Run, plan_calibration, train

FINDINGS = ["Pneumothorax", "Cardiomegaly", "Effusion", "Nodule"]


@pytest.fixture(scope="module")
def nih_run(synth_manifest, tmp_path_factory):
    """A tiny run trained with the nih14-densenet121 preset on the synthetic set, its Opacity column
    renamed Pneumothorax (so the preset's per-finding rule has a finding to apply to)."""
    root = tmp_path_factory.mktemp("nihcfg")
    frame = pd.read_csv(synth_manifest, dtype=str, keep_default_na=False).rename(columns={"Opacity": "Pneumothorax"})
    frame["path"] = [str(synth_manifest.parent / p) for p in frame["path"]]
    manifest = root / "manifest.csv"
    frame.to_csv(manifest, index=False)
    overrides = [*tiny_overrides(), f"data.manifest={manifest}", f"data.findings=[{','.join(FINDINGS)}]"]
    config = load_config(
        "nih14-densenet121", [*overrides, "train.early_stopping_patience=null", "train.warmup_epochs=0"]
    )
    assert dict(config.calibration.per_finding) == {"Pneumothorax": "sensitivity:0.9"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHESTXR_NO_PROGRESS", "1")
        run = train(config, out_dir=root / "run", log=lambda s: None).run_dir
    return run, manifest


def _copy(nih_run, tmp_path):
    run, manifest = nih_run
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst, manifest


def _calibrate(run, manifest, *flags) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few positives in 8 val images: insufficient-data warnings
        code = main(["calibrate", "--checkpoint", str(run), "--manifest", str(manifest), "--split", "val",
                     "--workers", "0", "--bootstrap", "20", *flags])  # fmt: skip
    assert code == 0
    return json.loads((run / "thresholds.json").read_text())


def test_calibrate_uses_the_presets_pneumothorax_rule(nih_run, tmp_path, capsys):
    run, manifest = _copy(nih_run, tmp_path)
    data = _calibrate(run, manifest)
    methods = {r["finding"]: r["method"] for r in data["thresholds"]}
    assert methods == {"Pneumothorax": "sensitivity:0.9", "Cardiomegaly": "youden", "Effusion": "youden",
                       "Nodule": "youden"}  # fmt: skip
    pneumo = next(r for r in data["thresholds"] if r["finding"] == "Pneumothorax")
    assert pneumo["status"] in ("guaranteed", "insufficient_data", "unreachable") and pneumo["n_needed"] is not None
    assert data["rules"]["source"] == {"Pneumothorax": "config", "method": "config", "probability": "config",
                                       "n_boot": "argument", "level": "config"}  # fmt: skip
    assert "rules: default youden (config), Pneumothorax=sensitivity:0.9 (config)" in capsys.readouterr().out
    stored = {r.finding: r.method for r in Run.load(run, device="cpu").metadata.thresholds}
    assert stored == methods


def test_flags_override_the_config(nih_run, tmp_path, capsys):
    run, manifest = _copy(nih_run, tmp_path)
    data = _calibrate(run, manifest, "--method", "f1", "--finding-method", "Pneumothorax=youden", "--ci", "0.9")
    methods = {r["finding"]: r["method"] for r in data["thresholds"]}
    assert methods == {"Pneumothorax": "youden", "Cardiomegaly": "f1", "Effusion": "f1", "Nodule": "f1"}
    assert data["ci_level"] == 0.9 and data["rules"]["source"]["Pneumothorax"] == "argument"
    # --method alone keeps the config's per-finding rule
    run2, _ = _copy(nih_run, tmp_path / "b")
    data = _calibrate(run2, manifest, "--method", "f1")
    assert {r["finding"]: r["method"] for r in data["thresholds"]}["Pneumothorax"] == "sensitivity:0.9"


def test_probability_from_config_and_none_flag(nih_run, tmp_path):
    run, manifest = _copy(nih_run, tmp_path)
    meta = Run.load(run, device="cpu").metadata
    cfg = {**meta.config, "calibration": {**meta.config["calibration"], "probability": "platt"}}
    plan = plan_calibration(meta.replace(config=cfg), "x/model.json")
    assert plan.probability == "platt" and plan.source["probability"] == "config"
    assert plan_calibration(meta.replace(config=cfg), "x", probability="none").probability is None
    assert plan_calibration(meta, "x", probability="isotonic").probability == "isotonic"


def test_aliases_and_unknown_findings(nih_run):
    meta = Run.load(nih_run[0], device="cpu").metadata
    plan = plan_calibration(meta, "x", per_finding={"pleural effusion": "sensitivity:0.8"})
    assert plan.per_finding == {"Pneumothorax": "sensitivity:0.9", "Effusion": "sensitivity:0.8"}
    with pytest.raises(CalibrationError, match=r"unknown findings \['Hernia'\]"):
        plan_calibration(meta, "x", per_finding={"Hernia": "youden"})
    cfg = {**meta.config, "calibration": {**meta.config["calibration"], "per_finding": {"Hernia": "youden"}}}
    with pytest.warns(UserWarning, match=r"rules for \['Hernia'\], which the model does not predict"):
        plan = plan_calibration(meta.replace(config=cfg), "x")
    assert plan.per_finding == {} and plan.spec() == "youden"
