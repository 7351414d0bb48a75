"""chestxr monitor end to end through the command line: calibrate writes the reference profile, predict writes
the inference log, monitor compares them. Synthetic radiographs (chestxr.data's generator, PNG and DICOM) from
patients other than the calibration patients must not alarm; the same images after a scanner change
(contrast/gamma, half the resolution, MONOCHROME1) must, naming the change; bad input is one line, exit 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from chestxr.cli._main import main

ID_PATTERNS = [re.compile(rb"SYN\d{4}"), re.compile(rb"SYNTH\^"), re.compile(rb"1\.2\.826\.0\.1\.3680043")]


@pytest.fixture(scope="module")
def monitor_world(tiny_run, tmp_path_factory):
    """A calibrated copy of the session's tiny run (reference: the calibration half of 360 synthetic images,
    by patient) and the other half's images copied into a deployment folder with their own manifest."""
    from chestxr.data import generate_synthetic_dataset
    from chestxr.runs import calibrate_run

    root = tmp_path_factory.mktemp("monitor")
    manifest = generate_synthetic_dataset(root / "data", n_images=360, seed=7, size=48)
    frame = pd.read_csv(manifest)
    frame["patient_id"] = "m" + frame["patient_id"].astype(str)  # not the session run's training patients
    patients = sorted(frame["patient_id"].unique())
    rng = np.random.default_rng(0)
    cal_patients = set(rng.choice(patients, size=len(patients) // 2, replace=False).tolist())
    cal = frame[frame["patient_id"].isin(cal_patients)]
    deploy = frame[~frame["patient_id"].isin(cal_patients)]
    cal.to_csv(root / "data" / "cal.csv", index=False)
    folder = root / "deploy"
    folder.mkdir()
    rows = []
    for _, r in deploy.iterrows():
        src = root / "data" / r["path"]
        dst = folder / Path(r["path"]).name
        shutil.copy2(src, dst)
        rows.append({**r.to_dict(), "path": dst.name})
    pd.DataFrame(rows).to_csv(folder.parent / "deploy.csv", index=False)
    run = root / "run"
    shutil.copytree(tiny_run, run)
    calibrate_run(run, root / "data" / "cal.csv", method="youden")
    return {"root": root, "run": run, "deploy": folder, "deploy_manifest": folder.parent / "deploy.csv"}


def _predict(world, folder: Path, out: Path) -> Path:
    assert main(["predict", "--checkpoint", str(world["run"]), str(folder), "--out", str(out), "--workers", "0"]) == 0
    assert (out / "inference_log.jsonl").is_file()
    return out


def _monitor(world, logs: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["monitor", "--checkpoint", str(world["run"]), str(logs), "--out", str(out), "--window", "100", *extra])
    data = json.loads((out / "monitor.json").read_text()) if (out / "monitor.json").is_file() else {}
    return code, data


def _leaks(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                found += [f"{p}: {pat.pattern!r}" for pat in ID_PATTERNS if pat.search(data)]
    return found


def test_profile_is_written_by_calibrate_and_bound_by_its_hash(monitor_world):
    from chestxr.runs import bound_parts, load_reference_profile, profile_sha256, read_metadata

    run = monitor_world["run"]
    profile = load_reference_profile(run)
    meta = read_metadata(run)
    assert profile.findings == tuple(meta.findings) and len(profile) > 100
    np.testing.assert_allclose(profile.thresholds, meta.decision_thresholds(), equal_nan=True, atol=1e-9)
    assert profile.sketch.shape == (len(profile), 16) and profile.projection is not None
    assert set(profile.numeric) == {"input_mean", "input_std", "rows", "cols"}
    assert {"Modality", "PhotometricInterpretation", "AgeBand", "Sex", "TransferSyntax"} <= set(profile.fields)
    assert set(profile.fields["TransferSyntax"]) >= {"PNG file", "Explicit VR Little Endian"}
    # the file is its canonical bytes: read back and written again it is byte for byte the same
    raw = (run / "reference_profile.json").read_bytes()
    assert profile.to_bytes() == raw
    assert bound_parts(run, meta)["reference_profile"] == profile_sha256(run)
    assert _leaks(run) == []


def test_patients_like_the_calibration_patients_do_not_alarm(monitor_world, tmp_path, capsys):
    pred = _predict(monitor_world, monitor_world["deploy"], tmp_path / "pred")
    code, data = _monitor(monitor_world, pred, tmp_path / "mon")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no alarm in 2 window(s)" in out and data["quiet"] is True and data["alarms"] == []
    assert data["log"]["entries"] == len(list(monitor_world["deploy"].iterdir()))
    w = data["windows"][0]
    names = {t["name"] for t in w["tests"]}
    assert {"input.embedding", "input.PhotometricInterpretation", "input.input_mean", "output.score.Effusion"} <= names
    assert all(t["p_value"] is not None or t["undefined"] for t in w["tests"])
    html = (tmp_path / "mon" / "monitor.html").read_text()
    assert "No alarm" in html[: html.index("How to read")]
    assert (tmp_path / "mon" / "alarms.csv").read_text().count("\n") == 1  # the header only
    assert _leaks(pred / "inference_log.jsonl", tmp_path / "mon") == []


def _rewrite_dicoms(folder: Path, change) -> int:
    n = 0
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        change(ds)
        ds.save_as(p, enforce_file_format=True)
        n += 1
    return n


def _window(ds) -> tuple[float, float]:
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    wc, ww = float(ds.WindowCenter), float(ds.WindowWidth)
    return (wc - ww / 2 - intercept) / slope, (wc + ww / 2 - intercept) / slope


def _gamma(ds) -> None:
    lo, hi = _window(ds)
    x = np.clip((ds.pixel_array.astype(np.float64) - lo) / (hi - lo), 0, 1)
    mono1 = ds.PhotometricInterpretation == "MONOCHROME1"
    shown = (1 - x if mono1 else x) ** 0.5  # brighter, flatter: another processing curve
    x = 1 - shown if mono1 else shown
    ds.PixelData = np.round(lo + x * (hi - lo)).astype("<u2").tobytes()


def _half_resolution(ds) -> None:
    arr = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.astype("<u2").tobytes()


def _monochrome1(ds) -> None:
    if ds.PhotometricInterpretation == "MONOCHROME2":
        lo, hi = _window(ds)
        ds.PixelData = np.round(lo + hi - ds.pixel_array.astype(np.float64)).clip(0, 65535).astype("<u2").tobytes()
        ds.PhotometricInterpretation = "MONOCHROME1"


def _scanner_change(world, tmp_path, change) -> Path:
    """The deployment images with ``change`` applied to every DICOM (half of them) and the PNGs left out:
    one scanner (the DICOM one) changed, the exports gone."""
    folder = tmp_path / "changed"
    folder.mkdir()
    for p in world["deploy"].glob("*.dcm"):
        shutil.copy2(p, folder / p.name)
    assert _rewrite_dicoms(folder, change) > 50
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,expected",
    [
        (_gamma, {"input.input_mean", "input.input_std", "input.embedding"}),
        (_half_resolution, {"input.rows", "input.cols"}),
        (_monochrome1, {"input.PhotometricInterpretation"}),
    ],
    ids=["gamma", "resolution", "monochrome1"],
)
def test_a_scanner_change_alarms_and_names_what_changed(monitor_world, tmp_path, capsys, change, expected):
    folder = _scanner_change(monitor_world, tmp_path, change)
    pred = _predict(monitor_world, folder, tmp_path / "pred")
    code, data = _monitor(monitor_world, pred, tmp_path / "mon")
    out = capsys.readouterr().out
    assert code == 3, out
    fired = {a["test"] for a in data["alarms"]}
    assert fired & expected, fired
    assert "ALARM" in out and "re-calibrate" in out and "re-approve" in out
    a = data["alarms"][0]
    assert a["threatens"] and a["action"].startswith("re-calibrate")
    rows = pd.read_csv(tmp_path / "mon" / "alarms.csv")
    assert len(rows) == len(data["alarms"]) and set(rows["test"]) == fired
    html = (tmp_path / "mon" / "monitor.html").read_text()
    assert "ALARM" in html[: html.index("How to read")]
    assert _leaks(tmp_path / "mon") == []
    if change is _monochrome1:  # read correctly: only the header says so; the outputs did not move
        assert not [t for t in fired if t.startswith("output.")]


def test_labels_join_by_image_and_by_study(monitor_world, tmp_path):
    pred = _predict(monitor_world, monitor_world["deploy"], tmp_path / "pred")
    labels = pd.read_csv(monitor_world["deploy_manifest"])
    labels["path"] = [str(monitor_world["deploy"] / p) for p in labels["path"]]
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code, data = _monitor(monitor_world, pred, tmp_path / "mon", "--labels", str(tmp_path / "labels.csv"))
    assert code in (0, 3)
    n = data["log"]["entries"]
    assert data["log"]["labelled"] == n and data["log"]["labels_unmatched"] == 0
    # the run's promises are point rules (youden): no label test, but every window reports the prevalence
    assert all(w["prevalence"] for w in data["windows"])
    # by study: rows whose files are elsewhere, identified by (patient_id, study_id) as the DICOM headers have them
    dicoms = labels[labels["path"].str.endswith(".dcm")].copy()
    ids = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicoms["path"]]
    dicoms["patient_id"] = [str(d.PatientID) for d in ids]
    dicoms["study_id"] = [str(d.StudyInstanceUID) for d in ids]
    dicoms["path"] = [f"/elsewhere/{i}.dcm" for i in range(len(dicoms))]
    dicoms.to_csv(tmp_path / "by_study.csv", index=False)
    code, data = _monitor(monitor_world, pred, tmp_path / "mon2", "--labels", str(tmp_path / "by_study.csv"))
    assert data["log"]["labelled"] == len(dicoms)


def test_bad_input_is_one_line_exit_2(monitor_world, tiny_run_copy, tmp_path, capsys):
    pred = _predict(monitor_world, monitor_world["deploy"], tmp_path / "pred")
    capsys.readouterr()
    # a run calibrated before profiles existed / never calibrated: no profile
    code = main(["monitor", "--checkpoint", str(tiny_run_copy), str(pred), "--out", str(tmp_path / "m1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "reference_profile.json: no reference profile" in err[0]
    for args, words in (
        (["--window", "7x"], "--window '7x'"),
        (["--window", "1"], "at least 2 images"),
    ):
        code = main(
            ["monitor", "--checkpoint", str(monitor_world["run"]), str(pred), "--out", str(tmp_path / "m2"), *args]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], err
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "monitor",
                "--checkpoint",
                str(monitor_world["run"]),
                str(pred),
                "--out",
                str(tmp_path / "m3"),
                "--alarm-rate",
                "2",
            ]
        )
    assert exc.value.code == 2 and "allowed: in (0, 1)" in capsys.readouterr().err
    # a damaged line in the middle of a log names the file and line
    log = pred / "inference_log.jsonl"
    lines = log.read_text().splitlines()
    lines[3] = lines[3][:40]
    log.write_text("\n".join(lines) + "\n")
    code = main(["monitor", "--checkpoint", str(monitor_world["run"]), str(pred), "--out", str(tmp_path / "m4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{log}:4: not a JSON object" in err[0]
    # the output may not be the run folder or a log
    code = main(["monitor", "--checkpoint", str(monitor_world["run"]), str(pred), "--out", str(pred), "--overwrite"])
    assert code == 2 and log.is_file()
    capsys.readouterr()


def test_no_dicom_identifier_in_the_log_or_the_monitor_outputs(monitor_world, tmp_path):
    """Marker identifiers in every DICOM header (tests/privacy_helpers.py: name, birth date, patient ID,
    accession, institution, referring physician, other IDs, study ID) and in the labels manifest that is joined
    by (patient_id, study_id): none may reach inference_log.jsonl, monitor.html, monitor.json or alarms.csv."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from privacy_helpers import MARKERS, NEEDLES, leaks, mark_dicoms
    finally:
        sys.path.pop(0)
    folder = tmp_path / "marked"
    folder.mkdir()
    for p in monitor_world["deploy"].glob("*.dcm"):
        shutil.copy2(p, folder / p.name)
    assert mark_dicoms(folder) > 50
    pred = _predict(monitor_world, folder, tmp_path / "pred")
    labels = pd.read_csv(monitor_world["deploy_manifest"])
    labels = labels[labels["path"].str.endswith(".dcm")].copy()
    headers = [pydicom.dcmread(folder / Path(p).name, stop_before_pixels=True) for p in labels["path"]]
    labels["patient_id"] = [str(h.PatientID) for h in headers]
    labels["study_id"] = [str(h.StudyInstanceUID) for h in headers]
    labels["path"] = [f"/elsewhere/{i}.dcm" for i in range(len(labels))]
    assert set(labels["patient_id"]) == {MARKERS["PatientID"]}
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code, data = _monitor(monitor_world, pred, tmp_path / "mon", "--labels", str(tmp_path / "labels.csv"))
    assert code in (0, 3) and data["log"]["labelled"] > 0  # the identifiers were used (hashed) to join
    log = (pred / "inference_log.jsonl").read_bytes()
    assert [m for m in NEEDLES if m in log] == []
    assert {p.name for p in (tmp_path / "mon").iterdir()} == {"monitor.html", "monitor.json", "alarms.csv"}
    assert leaks(tmp_path / "mon") == []
    assert _leaks(pred / "inference_log.jsonl", tmp_path / "mon") == []


def test_monitor_imports_no_torch(monitor_world, tmp_path):
    """A monitor job on a cron box stays light: ``chestxr monitor --help``, ``chestxr monitor`` and
    ``chestxr.monitor(...)`` read the run's metadata, approval, reference profile and logs without torch."""
    import os
    import subprocess
    import sys
    import textwrap

    pred = _predict(monitor_world, monitor_world["deploy"], tmp_path / "pred")
    run = str(monitor_world["run"])
    script = textwrap.dedent(
        f"""
        import sys
        from chestxr.cli._main import main
        try:
            main(["monitor", "--help"])
        except SystemExit:
            pass
        assert "torch" not in sys.modules, "monitor --help imported torch"
        code = main(["monitor", "--checkpoint", {run!r}, {str(pred)!r}, "--out", {str(tmp_path / "m1")!r}])
        assert code in (0, 3), code
        assert "torch" not in sys.modules, "chestxr monitor imported torch"
        import chestxr
        result = chestxr.monitor({run!r}, [{str(pred)!r}], window="100", out={str(tmp_path / "m2")!r})
        assert type(result).__name__ == "MonitorResult" and result.windows
        assert "torch" not in sys.modules, "chestxr.monitor imported torch"
        print("light")
        """
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "CHESTXR_NO_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "light" in out.stdout, out.stderr[-2000:]


def test_an_unexpected_failure_is_exit_2_for_cron(monkeypatch, tmp_path, capsys):
    """Cron reads 0 as quiet and 3 as alarm: anything else that goes wrong, a bug included, must be 2 with one
    line (CHESTXR_DEBUG=1 re-raises for the traceback)."""
    import chestxr.monitoring

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chestxr.monitoring, "monitor", broken)
    argv = ["monitor", "--checkpoint", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected RuntimeError: boom" in err[0]
    monkeypatch.setenv("CHESTXR_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(argv)


def test_promises_keep_the_family_and_the_prevalence_range_of_the_guarantee():
    """The monitor watches the promises calibrate made, in the words of their records: the joint family
    (Bonferroni share) and the PPV range; refused and point rules are not promises."""
    import warnings

    from chestxr.evaluation import fit_thresholds
    from chestxr.monitoring import promises_from_points

    rng = np.random.default_rng(1)
    y = (rng.random((600, 3)) < 0.3).astype(float)
    s = np.clip(y * 0.6 + rng.random((600, 3)) * 0.5, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = fit_thresholds(
            y, s, method=["sensitivity:0.8", "ppv:0.6", "youden"], findings=["A", "B", "C"], prevalence=(0.2, 0.4)
        )
    assert [p.status for p in points] == ["guaranteed", "guaranteed", "not_a_guarantee"]
    promises = promises_from_points(points)
    assert [(p.finding, p.metric) for p in promises] == [("A", "sensitivity"), ("B", "ppv")]
    assert all("jointly for 2 findings" in p.family for p in promises)
    assert promises[0].prevalence is None and promises[1].prevalence == (0.2, 0.4)
