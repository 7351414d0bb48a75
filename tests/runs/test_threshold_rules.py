"""A finding without a usable threshold calls nothing and says "not calibrated" everywhere (issue 17.2);
calibrating on a split without usable labels never silently drops a good threshold (issue 17.4).

The session ``tiny_run`` (conftest); calibrations work on copies of it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main

FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]


@pytest.fixture(scope="module")
def data(tiny_run, synth_manifest, tmp_path_factory) -> dict[str, Path]:
    """Manifests built from the session manifest the run was trained on (absolute paths): ``good`` gives
    every finding both classes on val (alternating labels), ``no_pos`` the same with no Nodule positive on val."""
    root = tmp_path_factory.mktemp("thr")
    frame = pd.read_csv(synth_manifest, dtype=str, keep_default_na=False)
    frame["path"] = [str((synth_manifest.parent / p).resolve()) for p in frame["path"]]
    val = frame["split"] == "val"
    assert val.sum() >= 4
    for k, f in enumerate(FINDINGS):
        frame.loc[val, f] = [str((i + k) % 2) for i in range(int(val.sum()))]
    good = root / "good.csv"
    frame.to_csv(good, index=False)
    frame.loc[val, "Nodule"] = "0"
    no_pos = root / "no_nodule_positives.csv"
    frame.to_csv(no_pos, index=False)
    return {"good": good, "no_pos": no_pos, "run": tiny_run, "root": root}


def _copy_run(data, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(data["run"], run)
    return run


def _calibrate(run: Path, manifest: Path, *extra: str) -> int:
    return main(["calibrate", "--checkpoint", str(run), "--manifest", str(manifest), "--split", "val",
                 "--bootstrap", "20", "--workers", "0", *extra])  # fmt: skip


def _thresholds(run: Path) -> dict[str, object]:
    meta = json.loads((run / "model.json").read_text())
    return {r["finding"]: r for r in meta["thresholds"]}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- 17.2: not calibrated


def test_uncalibratable_finding_calls_nothing_in_predict_and_evaluate(data, tmp_path, capsys):
    from chestxr.runs import read_metadata

    run = _copy_run(data, tmp_path)
    assert _calibrate(run, data["no_pos"]) == 0
    recs = _thresholds(run)
    assert recs["Nodule"]["threshold"] is None and recs["Cardiomegaly"]["threshold"] is not None
    thr = np.array(read_metadata(run).decision_thresholds())
    assert np.isnan(thr[FINDINGS.index("Nodule")]) and np.isfinite(thr[FINDINGS.index("Cardiomegaly")])

    # predict: every Nodule call says "not calibrated", never positive/negative; other findings are called
    assert main(["predict", "--checkpoint", str(run), "--manifest", str(data["good"]), "--out",
                 str(tmp_path / "p"), "--workers", "0"]) == 0  # fmt: skip
    for name in ("predictions.csv", "study_predictions.csv"):
        rows = _csv_rows(tmp_path / "p" / name)
        assert {r["call_Nodule"] for r in rows} == {"not calibrated"}, name
        assert {r["call_Cardiomegaly"] for r in rows} <= {"positive", "negative"}
        assert all(r["margin_Nodule"] == "" for r in rows)
    studies = _csv_rows(tmp_path / "p" / "study_predictions.csv")
    html = (tmp_path / "p" / "review.html").read_text()
    assert "not calibrated" in html
    assert len(studies) > 0

    # evaluate: threshold metrics of Nodule are undefined and the report says "not calibrated" beside it
    assert main(["evaluate", "--checkpoint", str(run), "--manifest", str(data["good"]), "--split", "val",
                 "--out", str(tmp_path / "e"), "--workers", "0", "--bootstrap", "20"]) == 0  # fmt: skip
    metrics = {r["finding"]: r for r in _csv_rows(tmp_path / "e" / "metrics.csv")}
    assert metrics["Nodule"]["threshold_status"] == "not calibrated"
    assert metrics["Nodule"]["threshold"] == "" and metrics["Nodule"]["sensitivity"] == ""
    assert metrics["Cardiomegaly"]["threshold_status"] == "calibrated"
    preds = _csv_rows(tmp_path / "e" / "predictions.csv")
    assert {r["call_Nodule"] for r in preds} == {"not calibrated"}
    assert {r["call_Cardiomegaly"] for r in preds} <= {"positive", "negative"}
    report = (tmp_path / "e" / "report.html").read_text()
    section = report[report.index(">Nodule</h3>") :]
    assert "not calibrated" in section[: section.index("</table>")]
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["findings"]["Nodule"]["threshold_status"] == "not calibrated"


def test_never_calibrated_run_uses_the_documented_default(data):
    from chestxr.runs import read_metadata

    meta = read_metadata(data["run"])
    assert not meta.thresholds
    np.testing.assert_array_equal(meta.decision_thresholds(), np.full(4, 0.5))
    assert meta.threshold_status() == ["uncalibrated run (default 0.5)"] * 4


# ----------------------------------------------------------------------------- 17.4: never lose a threshold


def test_split_without_usable_labels_keeps_the_previous_threshold(data, tmp_path, capsys):
    run = _copy_run(data, tmp_path)
    assert _calibrate(run, data["good"]) == 0
    before = _thresholds(run)["Nodule"]
    assert before["threshold"] is not None
    with pytest.warns(UserWarning, match=r"Nodule: .*no usable labels.*kept the previous threshold"):
        assert _calibrate(run, data["no_pos"]) == 0
    meta = json.loads((run / "model.json").read_text())
    after = _thresholds(run)["Nodule"]
    assert after["threshold"] == before["threshold"]
    assert after["kept_from_version"] == meta["version"] - 1 and "no usable labels" in after["kept_note"]
    assert _thresholds(run)["Cardiomegaly"]["threshold"] is not None
    side = json.loads((run / "thresholds.json").read_text())
    assert side["kept_previous"] == ["Nodule"]
    assert {r["finding"]: r for r in side["thresholds"]}["Nodule"]["threshold"] == before["threshold"]
    assert "kept the previous threshold" in capsys.readouterr().out


def test_refused_threshold_replacing_a_good_one_needs_force(data, tmp_path, capsys):
    """A rule the split cannot meet (a guarantee it is too small for) would drop the stored threshold:
    refused without --force, written as null with it."""
    run = _copy_run(data, tmp_path)
    assert _calibrate(run, data["good"]) == 0
    good = _thresholds(run)["Nodule"]["threshold"]
    version = json.loads((run / "model.json").read_text())["version"]
    strict = ["--finding-method", "Nodule=sensitivity:0.99"]
    assert _calibrate(run, data["good"], *strict) == 2
    err = capsys.readouterr().err
    assert "Nodule" in err and "--force" in err and f"{good:.4g}" in err
    assert json.loads((run / "model.json").read_text())["version"] == version  # nothing written
    assert _calibrate(run, data["good"], *strict, "--force") == 0
    assert _thresholds(run)["Nodule"]["threshold"] is None


def test_exported_metadata_says_not_calibrated_in_strict_json(data, tmp_path):
    """The MONAI bundle metadata carries a null (strict JSON, never NaN or 0.5) and the status."""
    from chestxr.runs import bundle_metadata, read_metadata

    run = _copy_run(data, tmp_path)
    assert _calibrate(run, data["no_pos"]) == 0
    doc = bundle_metadata(read_metadata(run), channels=3, size=32)["chestxr"]
    text = json.dumps(doc, allow_nan=False)  # raises on NaN
    assert doc["probability_thresholds"][FINDINGS.index("Nodule")] is None and "NaN" not in text
    assert doc["threshold_status"][FINDINGS.index("Nodule")] == "not calibrated"
