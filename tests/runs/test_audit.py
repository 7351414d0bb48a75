"""calibrate / evaluate / predict from the CLI on a tiny trained run: files, versions, refusals."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main


def test_calibrate_writes_new_version_and_thresholds(tiny_run_copy, synth_manifest, capsys):
    run = tiny_run_copy
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(run),
            "--manifest",
            str(synth_manifest),
            "--split",
            "val",
            "--method",
            "youden",
            "--finding-method",
            "Nodule=sensitivity:0.9",
            "--bootstrap",
            "100",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Nodule" in out and "sensitivity:0.9" in out
    data = json.loads((run / "thresholds.json").read_text())
    recs = {r["finding"]: r for r in data["thresholds"]}
    assert recs["Nodule"]["method"] == "sensitivity:0.9"
    assert recs["Opacity"]["method"] == "youden"
    for r in recs.values():
        assert {
            "threshold",
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "prevalence",
            "n_pos",
            "n_neg",
            "sensitivity_ci",
            "specificity_ci",
            "ppv_ci",
            "npv_ci",
        } <= set(r)
    if np.isfinite(recs["Nodule"]["threshold"] or np.nan):
        assert recs["Nodule"]["sensitivity"] >= 0.9
    assert len(data["manifest_hash"]) == 64
    meta = json.loads((run / "model.json").read_text())
    assert meta["version"] == 2 and (run / "model.v1.json").exists()
    assert json.loads((run / "model.v1.json").read_text())["thresholds"] is None
    assert [r["threshold"] for r in meta["thresholds"]] == [r["threshold"] for r in data["thresholds"]]


def test_calibrate_refuses_training_patients(tiny_run_copy, synth_manifest, capsys):
    run = tiny_run_copy
    args = [
        "calibrate",
        "--checkpoint",
        str(run),
        "--manifest",
        str(synth_manifest),
        "--split",
        "train",
        "--bootstrap",
        "50",
    ]
    assert main(args) == 2
    assert "training data" in capsys.readouterr().err
    assert not (run / "thresholds.json").exists()
    assert main(args + ["--force"]) == 0
    data = json.loads((run / "thresholds.json").read_text())
    assert data["forced"] is True and data["training_patient_overlap"] == data["n_patients"] > 0
    # forced, the overlap is stated (it used to be computed and thrown away), in the output and the files
    out = capsys.readouterr().out
    assert f"training-patient overlap: {data['n_patients']} of {data['n_patients']} patients" in out
    assert json.loads((run / "model.json").read_text())["calibration"]["training_patient_overlap"] == data["n_patients"]


def test_evaluate_reports_promise_and_files(tiny_run_copy, synth_manifest, tmp_path):
    run = tiny_run_copy
    assert (
        main(
            [
                "calibrate",
                "--checkpoint",
                str(run),
                "--manifest",
                str(synth_manifest),
                "--split",
                "val",
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--manifest",
                str(synth_manifest),
                "--split",
                "test",
                "--out",
                str(out),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    assert {"report.html", "metrics.csv", "metrics.json", "predictions.csv"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    splits = pd.read_csv(synth_manifest)
    assert metrics["n_images"] == int((splits["split"] == "test").sum())
    f = metrics["findings"]["Cardiomegaly"]
    assert "promise" in f and "auroc_ci" in f
    # refuses to overwrite without --overwrite
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--manifest",
                str(synth_manifest),
                "--split",
                "test",
                "--out",
                str(out),
                "--bootstrap",
                "10",
            ]
        )
        == 2
    )


def test_predict_folder_of_dicoms_without_manifest(tiny_run, synth_manifest, tmp_path):
    run = tiny_run
    folder = tmp_path / "incoming"
    folder.mkdir()
    for p in sorted((synth_manifest.parent / "images").glob("*.dcm"))[:6]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), str(folder), "--out", str(out)]) == 0
    per_image = pd.read_csv(out / "predictions.csv")
    assert len(per_image) == 6
    for f in ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]:
        assert per_image[f"prob_{f}"].between(0, 1).all()
    studies = pd.read_csv(out / "study_predictions.csv")
    assert 1 <= len(studies) <= 6
    assert (out / "review.html").stat().st_size > 1000


def test_probability_calibration_changes_predicted_scores(tiny_run_copy, synth_manifest, tmp_path):
    run = tiny_run_copy
    manifest = str(synth_manifest)
    assert main(["predict", "--checkpoint", str(run), "--manifest", manifest, "--out", str(tmp_path / "p0")]) == 0
    assert (
        main(
            [
                "calibrate",
                "--checkpoint",
                str(run),
                "--manifest",
                manifest,
                "--split",
                "val",
                "--probability",
                "platt",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    meta = json.loads((run / "model.json").read_text())
    assert meta["probability_calibration"]["method"] == "platt"
    assert main(["predict", "--checkpoint", str(run), "--manifest", manifest, "--out", str(tmp_path / "p1")]) == 0
    a = pd.read_csv(tmp_path / "p0" / "predictions.csv")
    b = pd.read_csv(tmp_path / "p1" / "predictions.csv")
    params = meta["probability_calibration"]["params"]
    fitted = [f for f, p in zip(meta["findings"], params) if not p.get("identity")]
    assert fitted, params  # at least one finding has both classes in the val split
    for f, p in zip(meta["findings"], params):
        col = f"prob_{f}"
        if p.get("identity"):  # one class only: sigmoid kept
            np.testing.assert_allclose(a[col], b[col], rtol=1e-6)
            continue
        assert not np.allclose(a[col], b[col]), f
        # a monotone per-finding map (slope > 0): the ranking is unchanged
        assert (a[col].rank().to_numpy() == b[col].rank().to_numpy()).all(), f


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "80", "--epochs", "2", "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "evaluation report:" in printed and "review worklist:" in printed
    assert (out / "report" / "report.html").exists() and (out / "review" / "review.html").exists()
    assert json.loads((out / "run" / "model.json").read_text())["thresholds"] is not None
    # issue 22.6: the model card is written, the approve command printed, and the demo never approves
    assert (out / "card" / "model_card.html").exists() and "model card:" in printed
    assert f"chestxr approve {out / 'run'} --reviewer 'YOUR NAME, ROLE'" in printed
    assert json.loads((out / "run" / "model.json").read_text()).get("approval") is None
    statuses = [r["status"] for r in json.loads((out / "run" / "thresholds.json").read_text())["thresholds"]]
    assert "insufficient_data" not in statuses and "unreachable" not in statuses  # the rule fits the split


def test_demo_promises_what_the_split_supports():
    """The demo's rule is chosen from the validation split's positive patients only: the preset's
    sensitivity:0.5 needs 7 per finding jointly over 4 (Bonferroni, 98.75 % each); fewer lower X."""
    from chestxr.cli._demo import DEMO_CONFIG, supported_sensitivity
    from chestxr.evaluation import patients_needed

    assert DEMO_CONFIG["calibration"] == {"method": "sensitivity:0.5", "simultaneous": True}
    assert patients_needed(0.5, 0.9875) == 7 and patients_needed(0.6, 0.9875) == 9
    assert supported_sensitivity({"A": 7, "B": 11, "C": 10, "D": 9}) == 0.5  # seed 0 of the 400-image demo
    assert supported_sensitivity({"A": 20, "B": 25, "C": 30, "D": 21}) == 0.8
    assert supported_sensitivity({"A": 4, "B": 11}) == 0.3 and supported_sensitivity({"A": 1, "B": 11}) is None


def _calibrate(run, manifest, method="youden", *extra):
    args = ["calibrate", "--checkpoint", str(run), "--manifest", str(manifest), "--split", "val"]
    return main(args + ["--method", method, "--bootstrap", "20", *extra])


def test_approve_binds_thresholds_and_recalibration_voids_it(tiny_run_copy, synth_manifest, tmp_path, capsys):
    from chestxr.runs import approval_status

    run = tiny_run_copy
    assert main(["approve", str(run), "--reviewer", "Dr A"]) == 2  # nothing to approve yet
    assert "calibrate" in capsys.readouterr().err
    assert _calibrate(run, synth_manifest) == 0
    assert approval_status(run).state == "not_approved"
    assert main(["approve", str(run), "--reviewer", "Dr A. Radiologist", "--note", "pilot <b>ward</b>"]) == 0
    meta = json.loads((run / "model.json").read_text())
    rec = meta["approval"]
    assert (
        rec["reviewer"] == "Dr A. Radiologist" and rec["time"].endswith("Z") and len(rec["binding_hmac_sha256"]) == 64
    )
    assert meta["history"][-1]["reason"] == "approved by Dr A. Radiologist"
    status = approval_status(run)
    assert status.state == "approved" and "Dr A. Radiologist" in status.banner
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(run), "--manifest", str(synth_manifest), "--workers", "0"]
    assert main(args + ["--out", str(out), "--require-approval"]) == 0
    html = (out / "review.html").read_text()
    assert "Approved for clinical use" in html and "Dr A. Radiologist" in html and "<b>ward</b>" not in html
    # re-calibration changes the thresholds: the approval is void, predict --require-approval refuses
    assert _calibrate(run, synth_manifest, "f1") == 0
    status = approval_status(run)
    # calibrate rewrites the thresholds and the reference profile (issue 23) in one transaction: both are named
    assert status.state == "void" and "the thresholds, the reference profile" in status.reason
    assert "changed since the approval" in status.reason
    assert status.changed == ("thresholds", "reference_profile")
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "pred2"), "--require-approval"]) == 2
    err = capsys.readouterr().err
    assert "NOT APPROVED FOR CLINICAL USE" in err and "void" in err and not (tmp_path / "pred2").exists()
    assert main(args + ["--out", str(tmp_path / "pred3")]) == 0
    assert "NOT APPROVED FOR CLINICAL USE" in (tmp_path / "pred3" / "review.html").read_text()


def test_approval_is_bound_to_the_weights(tiny_run_copy, synth_manifest, tmp_path):
    from chestxr.runs import approval_status

    run = tiny_run_copy
    assert _calibrate(run, synth_manifest) == 0 and main(["approve", str(run), "--reviewer", "Dr B"]) == 0
    with open(run / "model.safetensors", "ab") as fh:  # the weights file changes under the approval
        fh.write(b"\0")
    status = approval_status(run)
    assert status.state == "void" and status.changed == ("weights",)


def test_guaranteed_rule_from_the_cli_refuses_with_counts_and_card(tiny_run_copy, synth_manifest, tmp_path, capsys):
    from chestxr.calibration import InsufficientDataWarning

    run = tiny_run_copy
    with pytest.warns(InsufficientDataWarning, match="Nodule: no threshold: .* needs at least 299 positives .*; has "):
        assert (
            _calibrate(
                run, synth_manifest, "youden", "--finding-method", "Nodule=sensitivity:0.99", "--confidence", "0.95"
            )
            == 0
        )
    assert "insufficient_data" in capsys.readouterr().out
    rec = {r["finding"]: r for r in json.loads((run / "thresholds.json").read_text())["thresholds"]}["Nodule"]
    assert rec["status"] == "insufficient_data" and rec["threshold"] is None and rec["n_needed"] == 299
    assert rec["guarantee"]["status"] == "insufficient_data" and rec["n_pos"] < 299
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--manifest",
                str(synth_manifest),
                "--split",
                "test",
                "--out",
                str(ev),
                "--bootstrap",
                "20",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["findings"]["Nodule"]["promise"]["state"] == "refused"
    summary = metrics["promise_summary"]
    assert summary["refused"] == ["Nodule"]  # counted and listed, never dropped
    assert sorted(summary["point_rules"]) == ["Cardiomegaly", "Effusion", "Opacity"]  # youden: not promises
    assert "refused at calibration (no threshold): Nodule" in summary["text"] and "Nodule" in printed
    assert "operating points: " in printed and "Nodule: refused at calibration" in printed
    for name in summary["point_rules"]:  # calibration estimate beside the test value, a two-sample test
        p = metrics["findings"][name]["promise"]
        assert p["state"] in ("moved", "not_moved") and p["kind"] == "point"
        for t in p["tests"]:  # tested (exact, or by patient with several images), or why not in words
            tested = any(w in (t["test"] or "") for w in ("exact test", "permutation test of per-patient"))
            assert (t["calibration_n"] and tested) or t["unit"].startswith("no "), t
        assert any(t["test"] for t in p["tests"])
    report = (ev / "report.html").read_text()
    assert 'id="promise-summary"' in report and not re.search(r"\bholds\b", report) and "NOT HELD" not in report
    metrics_csv = pd.read_csv(ev / "metrics.csv").set_index("finding")
    assert metrics_csv.loc["Nodule", "promise_state"] == "refused" and "promise_holds" not in metrics_csv.columns
    assert metrics["approval"]["state"] == "not_approved" and "NOT APPROVED" in (ev / "report.html").read_text()
    card = tmp_path / "card"
    use = tmp_path / "use.yaml"
    use.write_text("intended_use: Pilot study of <script>x</script> triage\n")
    assert main(["card", str(run), "--eval", str(ev), "--intended-use", str(use), "--out", str(card)]) == 0
    md, html = (card / "model_card.md").read_text(), (card / "model_card.html").read_text()
    for text in (md, html):
        assert "NOT APPROVED FOR CLINICAL USE" in text and "REFUSED (insufficient_data)" in text
        assert "Training data" in text and "CLAIM" in text and "Pilot study of" in text
        assert "manifest sha256 of the training split recorded in model.json" in text
    assert "<script>x</script>" not in html and "<script>x</script>" not in md
    assert main(["card", str(run), "--out", str(card)]) == 2  # exists: needs --overwrite
    use.write_text("intended_use: x\nbogus: 1\n")
    assert main(["card", str(run), "--intended-use", str(use), "--out", str(card), "--overwrite"]) == 2
