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
                                       "n_boot": "argument", "level": "config", "simultaneous": "config",
                                       "prevalence": "config"}  # fmt: skip
    assert data["rules"]["simultaneous"] is True and data["rules"]["prevalence"] is None
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


def test_per_finding_and_prevalence_flags_end_to_end(nih_run, tmp_path, capsys):
    """Issue 22.2-3 through the CLI: simultaneous by default (the family and the joint level recorded in
    thresholds.json and in each guarantee), --per-finding opts out, --prevalence LO:HI is validated (one-line
    error) and required by ppv:X (refused naming the flag), recorded and bound by the approval."""
    run, manifest = _copy(nih_run, tmp_path)
    data = _calibrate(run, manifest, "--finding-method", "Effusion=sensitivity:0.8")
    fam = data["guarantee_family"]
    assert fam["simultaneous"] is True and fam["confidence"] == 0.95
    assert set(fam["members"]) | set(fam["excluded"]) == {"Pneumothorax", "Effusion"}
    for r in data["thresholds"]:
        if r["method"].startswith("sensitivity"):
            g = r["guarantee"]
            assert g["level"] == 0.95 and g["method"] in ("clopper-pearson", "bentkus-patient") and g["method_text"]
            assert g["simultaneous"] in (True, False) and g["per_finding_level"] is not None
    assert "guarantees: " in capsys.readouterr().out
    run2, _ = _copy(nih_run, tmp_path / "b")
    data = _calibrate(run2, manifest, "--per-finding", "--prevalence", "0.05:0.2",
                      "--finding-method", "Effusion=ppv:0.8")  # fmt: skip
    assert data["rules"]["simultaneous"] is False and data["rules"]["prevalence"] == [0.05, 0.2]
    assert data["rules"]["source"]["simultaneous"] == "argument" and data["guarantee_family"]["simultaneous"] is False
    effusion = next(r for r in data["thresholds"] if r["finding"] == "Effusion")
    assert effusion["guarantee"]["prevalence"] == [0.05, 0.2] and effusion["guarantee"]["simultaneous"] is False
    assert "0.05-0.2" in effusion["note"] or effusion["status"] == "guaranteed"
    run3, _ = _copy(nih_run, tmp_path / "c")
    capsys.readouterr()
    code = main(["calibrate", "--checkpoint", str(run3), "--manifest", str(manifest), "--split", "val",
                 "--workers", "0", "--finding-method", "Effusion=ppv:0.8"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Effusion: ppv:0.8 needs" in err and "--prevalence LO:HI" in err
    assert not (run3 / "thresholds.json").exists()  # refused before scoring: nothing written
    with pytest.raises(CalibrationError, match=r"prevalence=\(lo, hi\)"):
        plan_calibration(Run.load(run3, device="cpu").metadata, "x", method="npv:0.9")
    for bad, why in [("0.2:0.05", "0 < lo <= hi < 1"), ("0.05", "LO:HI"), ("a:b", "LO:HI"), ("0:0.2", "0 < lo")]:
        with pytest.raises(SystemExit):
            main(["calibrate", "--checkpoint", str(run3), "--manifest", str(manifest), "--prevalence", bad])
        err = capsys.readouterr().err
        assert why in err and "--prevalence" in err and err.strip().splitlines()[-1].count("error") == 1


def test_the_approval_binds_the_guarantee_statement(nih_run, tmp_path):
    """Recalibrating the same thresholds per finding instead of jointly changes the sentence signed: an
    approval made on the joint calibration is void afterwards, naming the thresholds."""
    from chestxr.runs import approval_status, approve_run, calibrate_run

    run, manifest = _copy(nih_run, tmp_path)
    rules = {"Effusion": "sensitivity:0.5", "Nodule": "sensitivity:0.5"}
    kw = dict(split=None, n_boot=10, per_finding=rules, force=True)  # all 60 images: enough patients
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = calibrate_run(run, manifest, **kw)
        approve_run(run, reviewer="Dr. A")
        assert approval_status(run).state == "approved"
        alone = calibrate_run(run, manifest, simultaneous=False, **kw)
    g = joint.threshold_for("Nodule").guarantee
    assert g is not None and g.status == "guaranteed" and g.family_size == 2 and g.per_finding_level == 0.975
    assert joint.summary.guarantee_family["members"] == ["Effusion", "Nodule"]
    assert alone.threshold_for("Nodule").guarantee.per_finding_level == 0.95
    status = approval_status(run)
    assert status.state == "void" and "thresholds" in status.changed
