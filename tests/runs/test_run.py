"""The run contract: RunMetadata round trips and validation, old run folders still load, and the Run
object (load / scores / predict / thresholds) agrees with the CLI's pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import chestxr
from chestxr.core import CheckpointError, ImageReadError, hash_file, sigmoid
from chestxr.evaluation import Guarantee, OperatingPoint
from chestxr.imaging import IN_PROCESS, LoaderOptions
from chestxr.modeling import build_model
from chestxr.runs import Approval, Run, RunMetadata, read_metadata, save_model, update_metadata

FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]


# ----------------------------------------------------------------------------- a run folder of 0.1.0


def _legacy_model_json(weights_sha: str) -> dict:
    """model.json exactly as chestxr 0.1.0 wrote it after ``train`` + ``calibrate --probability platt``
    (key order, top-level chestxr_version/torch_version beside versions, flat threshold records)."""
    pre = {
        "size": 32,
        "channels": 3,
        "resize": "letterbox",
        "normalization": "imagenet",
        "voi": "auto",
        "window": None,
        "allow_color": False,
        "modalities": None,
        "body_parts": None,
        "view_positions": None,
        "cache_size": 48,
        "max_pixels": 100000000,
    }
    labels = {
        "uncertain": "masked",
        "blank": "masked",
        "soft_range": [0.55, 0.85],
        "per_finding": {},
        "no_finding": "drop",
    }

    def record(finding: str, method: str, thr: float | None) -> dict:
        return {
            "finding": finding,
            "method": method,
            "threshold": thr,
            "sensitivity": 0.6666666666666666,
            "specificity": 1.0,
            "ppv": 1.0,
            "npv": 0.9,
            "f1": 0.8,
            "tp": 4,
            "fp": 0,
            "tn": 18,
            "fn": 2,
            "n_pos": 6,
            "n_neg": 18,
            "prevalence": 0.25,
            "sensitivity_ci": [0.2333333333333334, 0.9208333333333332],
            "specificity_ci": [1.0, 1.0],
            "ppv_ci": [1.0, 1.0],
            "npv_ci": [0.7595238095238096, 0.9802083333333333],
            "f1_ci": [0.36875000000000013, 0.9568181818181817],
            "auroc_ci": [0.6140740740740741, 0.9683333333333333],
            "ece": {"before": 0.2642393558406164, "after": 0.19064041936779663},
        }

    return {
        "format": "chestxr-model",
        "findings": FINDINGS,
        "mode": "multilabel",
        "task": "multilabel",
        "backbone": "tiny",
        "in_channels": 3,
        "dropout": 0.0,
        "preprocessing": pre,
        "label_policy": labels,
        "thresholds": [
            record("Opacity", "youden", 0.5471882956211802),
            record("Cardiomegaly", "youden", 0.2577293129228961),
            record("Effusion", "youden", None),
            record("Nodule", "sensitivity:0.9", 0.11075702136047708),
        ],
        "probability_calibration": {
            "format": "chestxr.probability_calibrator",
            "version": 1,
            "method": "platt",
            "findings": None,
            "n_samples": [24, 29, 32, 30],
            "params": [{"a": 2.0, "b": -0.5}, {"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 0.25}, {"a": 1.1, "b": -2.0}],
        },
        "config": {"name": "run", "seed": 7, "preprocessing": pre, "labels": labels},
        "training_patients_sha": ["1e4d6b957d183bae", "4ad8a1c8d2b73254"],
        "training_manifest_hash": "c8fba9a5b85ab3e29376f02516402ac91f31d99c7526bdd0ef31b03b856b894b",
        "versions": {"chestxr": "0.1.0", "torch": "2.4.0"},
        "created": "2026-12-02T00:28:12+0000",
        "best_epoch": 1,
        "best_val_mean_auroc": 0.5,
        "calibration": {
            "run": "/somewhere/run",
            "manifest": "/somewhere/manifest.csv",
            "split": None,
            "manifest_hash": "d0054f5a61f85fab870c6777d8d251e23727e371c0bd46d753639fd7490bb166",
            "n_images": 32,
            "n_skipped": 0,
            "n_patients": 19,
            "ci_level": 0.95,
            "n_boot": 20,
            "training_patient_overlap": 13,
            "forced": True,
            "probability_calibration": "platt",
        },
        "format_version": 1,
        "chestxr_version": "0.1.0",
        "torch_version": "2.4.0",
        "version": 2,
        "history": [
            {"version": 1, "reason": "saved", "time": "2026-12-02T00:28:12+0000"},
            {
                "version": 2,
                "reason": "calibrate on manifest.csv",
                "time": "2026-12-02T00:28:23+0000",
                "changed": ["calibration", "probability_calibration", "thresholds"],
            },
        ],
        "weights_sha256": weights_sha,
    }


@pytest.fixture
def legacy_run(tmp_path) -> Path:
    """A run folder in the 0.1.0 format: safetensors weights + the model.json above."""
    from safetensors.torch import save_file

    run = tmp_path / "legacy"
    run.mkdir()
    torch.manual_seed(0)
    model = build_model("tiny", 4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    doc = _legacy_model_json(hash_file(run / "model.safetensors"))
    (run / "model.json").write_text(json.dumps(doc, indent=2))
    return run


def test_old_run_folder_loads_with_every_field(legacy_run, synth_manifest):
    run = Run.load(legacy_run, device="cpu")
    meta = run.metadata
    assert run.findings == FINDINGS and meta.backbone == "tiny" and meta.version == 2
    assert meta.versions == {"chestxr": "0.1.0", "torch": "2.4.0"} and meta.seed == 7
    assert run.preprocessing.size == 32 and run.label_policy.soft_range == (0.55, 0.85)
    # the stored thresholds; an undefined one (null) is NaN: not calibrated, it calls nothing (issue 17.2)
    np.testing.assert_array_equal(run.thresholds, [0.5471882956211802, 0.2577293129228961, np.nan, 0.11075702136047708])
    assert meta.threshold_status() == ["calibrated", "calibrated", "not calibrated", "calibrated"]
    nodule = meta.threshold_for("Nodule")
    assert nodule.method == "sensitivity:0.9" and nodule.ece.after == 0.19064041936779663
    assert nodule.sensitivity_ci == [0.2333333333333334, 0.9208333333333332]
    assert nodule.status == "not_a_guarantee" and not nodule.guaranteed and nodule.guarantee is None  # pre-guarantee
    assert meta.calibration.training_patient_overlap == 13 and meta.approval is None
    # the stored Platt calibrator is applied: p = sigmoid(a z + b) per finding
    z = np.array([[0.3, -1.0, 2.0, 0.0]])
    expected = sigmoid(np.array([[2.0 * 0.3 - 0.5, -1.0, 0.5 * 2.0 + 0.25, -2.0]]))
    np.testing.assert_allclose(run.scores_from_logits(z), expected, rtol=1e-12)
    np.testing.assert_allclose(run.scores_from_logits(z, calibrated=False), sigmoid(z), rtol=1e-12)
    # and it predicts images with its preprocessing
    images = sorted((synth_manifest.parent / "images").glob("*.png"))[:3]
    assert run.scores(images).shape == (3, 4)


def test_old_run_folder_rewritten_once_per_version(legacy_run):
    approval = Approval("dr-a", "2026-12-03T00:00:00Z", 3, 2, "0" * 64, "1" * 64)
    meta = update_metadata(legacy_run, {"approval": approval}, reason="sign-off")
    assert meta.version == 3 and meta.approval == approval
    doc = json.loads((legacy_run / "model.json").read_text())
    assert "torch_version" not in doc and "chestxr_version" not in doc and doc["versions"]["torch"] == "2.4.0"
    old = _legacy_model_json(doc["weights_sha256"])
    # nothing but versions' duplicates, the approval and the history changed; the thresholds are identical
    for key in set(old) - {"chestxr_version", "torch_version", "version", "history", "preprocessing", "label_policy"}:
        assert doc[key] == old[key], key
    for key in ("preprocessing", "label_policy"):  # typed sections: fields added since are filled with defaults
        assert {k: doc[key][k] for k in old[key]} == old[key], key
    assert json.loads((legacy_run / "model.v2.json").read_text()) == old
    assert [h["reason"] for h in doc["history"]] == ["saved", "calibrate on manifest.csv", "sign-off"]
    assert read_metadata(legacy_run) == meta


# ----------------------------------------------------------------------------- RunMetadata


def test_metadata_round_trip_keeps_guarantee_and_unknown_keys():
    guarantee = {
        "method": "clopper-pearson",
        "metric": "sensitivity",
        "target": 0.9,
        "level": 0.95,
        "status": "guaranteed",
        "lower_bound": 0.91,
        "n_pos": 120,
        "n_needed": 80,
    }
    guaranteed = {
        "finding": "A",
        "method": "sensitivity:0.9",
        "threshold": 0.25,
        "status": "guaranteed",
        "guaranteed": True,
        "target": 0.9,
        "confidence": 0.95,
        "lower_bound": 0.91,
        "n_pos": 120,
        "n_neg": 300,
        "n_needed": 80,
        "note": "",
        "sensitivity": 0.95,
        "sensitivity_ci": [0.9, 0.98],
        "guarantee": guarantee,
    }
    refused = {
        "finding": "B",
        "method": "sensitivity:0.99",
        "threshold": None,
        "status": "insufficient_data",
        "guaranteed": False,
        "guarantee": {**guarantee, "target": 0.99, "status": "insufficient_data", "n_pos": 12, "n_needed": 299},
        "note": "needs 299 positives",
    }
    doc = {
        "findings": ["A", "B"],
        "backbone": "tiny",
        "mode": "multilabel",
        "thresholds": [guaranteed, refused],
        "site_note": "added by a user",
    }
    meta = RunMetadata.from_json(doc, "x/model.json")
    a, b = meta.thresholds
    assert (a.status, a.guaranteed, a.lower_bound, a.target, a.n_pos, a.n_needed) == (
        "guaranteed",
        True,
        0.91,
        0.9,
        120,
        80,
    )
    assert a.guarantee == Guarantee.from_dict(guarantee)
    assert (b.status, b.guaranteed, b.n_pos, b.n_needed) == ("insufficient_data", False, None, 299)
    assert np.isnan(b.threshold) and b.guarantee.n_pos == 12  # refused: no number; the guarantee names its n_pos
    np.testing.assert_array_equal(meta.decision_thresholds(), [0.25, np.nan])  # refused: not calibrated
    assert meta.extra == {"site_note": "added by a user"}
    out = meta.to_json()
    assert out["thresholds"] == [guaranteed, refused] and out["site_note"] == "added by a user"
    assert RunMetadata.from_json(json.loads(json.dumps(out)), "x/model.json") == meta
    old = OperatingPoint.from_dict({"finding": "A", "method": "youden", "threshold": 0.3})  # before guarantees
    assert (
        old.status == "not_a_guarantee" and not old.guaranteed and old.guarantee is None and np.isnan(old.lower_bound)
    )


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"findings": []}, "'findings' must be a non-empty list"),
        ({"findings": ["A", "A"]}, "'findings' must be a list of distinct names"),
        ({"in_channels": 3.0}, "'in_channels' must be an integer"),
        ({"dropout": "0.1"}, "'dropout' must be a number"),
        ({"preprocessing": [32]}, "'preprocessing' must be a JSON object"),
        ({"preprocessing": {"size": "big"}}, "invalid preprocessing: preprocessing.size: expected an integer"),
        ({"label_policy": {"uncertain": "ones", "colour": 1}}, "invalid label_policy"),
        ({"thresholds": [{"threshold": 0.5}]}, "'thresholds' must be null or a list"),
        ({"approval": "yes"}, "'approval' must be a JSON object or null"),
        ({"format_version": 99}, "written by a newer chestxr (format 99)"),
        ({"format": "something-else"}, "not a chestxr model.json"),
    ],
)
def test_invalid_model_json_names_the_file(change, phrase):
    doc = {"findings": ["A", "B"], "backbone": "tiny", "mode": "multilabel", **change}
    with pytest.raises(CheckpointError) as err:
        RunMetadata.from_json(doc, "runs/x/model.json")
    assert str(err.value).startswith("runs/x/model.json: ") and phrase in str(err.value)


def test_update_refuses_weight_fields_and_unknown_fields(tmp_path):
    save_model(tmp_path, build_model("tiny", 2), {"findings": ["A", "B"]})
    with pytest.raises(CheckpointError, match="cannot be changed"):
        update_metadata(tmp_path, {"backbone": "resnet18"}, reason="x")
    with pytest.raises(CheckpointError, match="unknown field"):
        update_metadata(tmp_path, {"colour": "red"}, reason="x")
    assert read_metadata(tmp_path).version == 1


# ----------------------------------------------------------------------------- the Run object


def test_run_scores_and_predict_agree_with_logits(tiny_run, synth_manifest):
    run = chestxr.Run.load(tiny_run, device="cpu")
    assert run.findings == FINDINGS and not run.calibrated
    np.testing.assert_array_equal(run.thresholds, [0.5] * 4)
    frame = pd.read_csv(synth_manifest)
    paths = [str(synth_manifest.parent / p) for p in frame["path"][:6]]
    logits = run.logits(paths, loading=IN_PROCESS)
    assert logits.logits.shape == (6, 4) and list(logits.indices) == list(range(6))
    scores = run.scores(paths)
    np.testing.assert_allclose(scores, sigmoid(logits.logits), rtol=1e-6)
    result = run.predict(paths)
    np.testing.assert_array_equal(result.calls, scores >= 0.5)
    assert result.ok.all() and result.skipped == []
    table = result.to_frame()
    assert list(table.columns[:2]) == ["path", "ok"] and len(table) == 6
    np.testing.assert_allclose(table[[f"prob_{f}" for f in FINDINGS]].to_numpy(), scores)


def test_run_predict_marks_unreadable_images(tiny_run, synth_manifest, tmp_path):
    run = Run.load(tiny_run, device="cpu")
    good = sorted((synth_manifest.parent / "images").glob("*.png"))[:2]
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        run.scores([good[0], bad])
    result = run.predict([good[0], bad, good[1]], loading=LoaderOptions(num_workers=0, on_bad_image="skip"))
    assert result.ok.tolist() == [True, False, True]
    assert np.isnan(result.scores[1]).all() and not result.calls[1].any()
    assert result.skipped[0][0] == str(bad) and "empty" in result.skipped[0][1]
    np.testing.assert_allclose(result.scores[[0, 2]], run.scores([good[0], good[1]]))


def test_calibrated_run_thresholds_drive_predict(tiny_run_copy, synth_manifest):
    meta = read_metadata(tiny_run_copy)
    records = [OperatingPoint(f, threshold=t, method="fixed") for f, t in zip(FINDINGS, [0.0, 1.0, 0.4, 0.6])]
    update_metadata(tiny_run_copy, {"thresholds": records}, reason="test thresholds")
    run = Run.load(tiny_run_copy, device="cpu")
    assert run.calibrated and run.metadata.version == meta.version + 1
    np.testing.assert_array_equal(run.thresholds, [0.0, 1.0, 0.4, 0.6])
    frame = pd.read_csv(synth_manifest)
    paths = [str(synth_manifest.parent / p) for p in frame["path"][:5]]
    result = run.predict(paths)
    assert result.calls[:, 0].all() and not result.calls[:, 1].any()
    np.testing.assert_array_equal(result.calls[:, 2], result.scores[:, 2] >= 0.4)


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        Run.load(tmp_path / "nope")
