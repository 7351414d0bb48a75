"""task: multiclass takes the argmax of the one-vs-rest scores (issue 17.1): one class per image and per
study (ties to the first class), per-class thresholds used only by an explicit abstain rule."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_args

from chestxr.cli import main

CLASSES = ["Clear", "Cardiomegaly", "Effusion"]  # "Normal" would be read as No Finding


def test_argmax_decision_ties_to_the_first_class_and_abstains_only_when_asked():
    from chestxr.evaluation import ABSTAIN, decide

    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.3, 0.9], [0.1, 0.2, 0.3], [np.nan, 0.1, 0.2]])
    thr = np.array([0.4, 0.4, 0.5])
    d = decide(scores, thr, multiclass=True)
    idx, top = d.predicted, d.top
    assert idx.tolist() == [0, 2, 2, -1] and top[:3].tolist() == [0.5, 0.9, 0.3] and np.isnan(top[3])
    idx = decide(scores, thr, multiclass=True, abstain=True).predicted
    assert idx.tolist() == [0, 2, ABSTAIN, -1]  # 0.3 < 0.5: no class; a row without scores has none
    idx = decide(scores[:1], np.array([np.nan, 0.4, 0.5]), multiclass=True, abstain=True).predicted
    assert idx.tolist() == [ABSTAIN]  # the winner's threshold is not calibrated: abstain, never a guess


@pytest.fixture(scope="module")
def mc(synth_manifest, tmp_path_factory) -> dict[str, Path]:
    """A mutually exclusive 3-class manifest from the session synthetic images (patient split 50/50)
    and a one-vs-rest multiclass run trained on it (tiny recipe)."""
    root = tmp_path_factory.mktemp("mc")
    frame = pd.read_csv(synth_manifest, dtype=str, keep_default_na=False)
    frame["path"] = [str((synth_manifest.parent / p).resolve()) for p in frame["path"]]
    cls = np.where(frame["Cardiomegaly"] == "1", 1, np.where(frame["Effusion"] == "1", 2, 0))
    out = frame[["path", "patient_id", "study_id", "view"]].copy()
    patients = sorted(set(out["patient_id"]))
    out["split"] = ["val" if patients.index(p) % 2 else "train" for p in out["patient_id"]]
    for k, name in enumerate(CLASSES):
        out[name] = (cls == k).astype(int)
    manifest = root / "mc.csv"
    out.to_csv(manifest, index=False)
    run = root / "run"
    args = tiny_args("model.mode=ovr", "model.task=multiclass", "train.epochs=1")
    assert main(["train", "--manifest", str(manifest), "--out", str(run), *args]) == 0
    return {"manifest": manifest, "run": run, "root": root}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _predict(run: Path, manifest: Path, out: Path, *extra: str) -> None:
    code = main(["predict", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(out),
                 "--workers", "0", *extra])  # fmt: skip
    assert code == 0


def test_predict_writes_exactly_one_class_per_image_and_study(mc, tmp_path):
    _predict(mc["run"], mc["manifest"], tmp_path / "p")
    for name in ("predictions.csv", "study_predictions.csv"):
        rows = _rows(tmp_path / "p" / name)
        assert rows
        for r in rows:
            calls = [r[f"call_{c}"] for c in CLASSES]
            assert calls.count("positive") == 1 and set(calls) <= {"positive", "negative"}, (name, r)
            probs = np.array([float(r[f"prob_{c}"]) for c in CLASSES])
            assert r["predicted_class"] == CLASSES[int(np.argmax(probs))]  # argmax, first on ties
            assert r[f"call_{r['predicted_class']}"] == "positive"
            assert float(r["predicted_score"]) == pytest.approx(probs.max())
    html = (tmp_path / "p" / "review.html").read_text()
    assert "argmax" in html and "Predicted class" in html


def test_abstain_rule_uses_the_thresholds_only_when_asked(mc, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mc["run"], run)
    code = main(["calibrate", "--checkpoint", str(run), "--manifest", str(mc["manifest"]), "--split", "val",
                 "--bootstrap", "20", "--workers", "0", "--force"])  # fmt: skip
    assert code == 0
    from chestxr.runs import read_metadata

    thr = np.array(read_metadata(run).decision_thresholds())
    _predict(run, mc["manifest"], tmp_path / "plain")
    for r in _rows(tmp_path / "plain" / "predictions.csv"):  # calibrated, but no abstain rule: still one class
        assert [r[f"call_{c}"] for c in CLASSES].count("positive") == 1
    _predict(run, mc["manifest"], tmp_path / "a", "--abstain")
    abstained = 0
    for r in _rows(tmp_path / "a" / "predictions.csv"):
        probs = np.array([float(r[f"prob_{c}"]) for c in CLASSES])
        top = int(np.argmax(probs))
        calls = [r[f"call_{c}"] for c in CLASSES]
        if not probs[top] >= thr[top]:  # below (or NaN) threshold of the winning class: explicit abstain
            assert r["predicted_class"] == "abstain" and calls.count("positive") == 0
            abstained += 1
        else:
            assert r["predicted_class"] == CLASSES[top] and calls.count("positive") == 1
    assert abstained < len(_rows(tmp_path / "a" / "predictions.csv"))


def test_run_predict_api_one_class_per_row(mc):
    from chestxr.runs import Run

    run = Run.load(mc["run"], device="cpu")
    paths = pd.read_csv(mc["manifest"])["path"].tolist()[:6]
    result = run.predict(paths)
    assert (result.calls.sum(axis=1) == 1).all()
    assert [CLASSES[i] for i in result.predicted] == [CLASSES[i] for i in np.argmax(result.scores, axis=1)]


def test_evaluate_predictions_csv_calls_one_class(mc, tmp_path):
    code = main(["evaluate", "--checkpoint", str(mc["run"]), "--manifest", str(mc["manifest"]), "--split", "val",
                 "--out", str(tmp_path / "e"), "--workers", "0", "--bootstrap", "20"])  # fmt: skip
    assert code == 0
    for r in _rows(tmp_path / "e" / "predictions.csv"):
        preds = [r[f"call_{c}"] for c in CLASSES]
        probs = np.array([float(r[f"prob_{c}"]) for c in CLASSES])
        assert preds.count("positive") == 1 and r["predicted_class"] == CLASSES[int(np.argmax(probs))]
    assert "argmax" in (tmp_path / "e" / "report.html").read_text()


def test_abstain_refused_for_multilabel_runs(tiny_run, synth_manifest, tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(tiny_run), "--manifest", str(synth_manifest), "--out",
                 str(tmp_path / "p"), "--workers", "0", "--abstain"])  # fmt: skip
    assert code == 2 and "task: multiclass" in capsys.readouterr().err
