"""Privacy end to end: patient identifiers in DICOM headers never reach any output.

DICOMs carry marker values in PatientName, PatientBirthDate, PatientID, AccessionNumber,
InstitutionName (and other identifying tags); the whole workflow runs on them (train -> calibrate ->
evaluate -> predict with a manifest -> predict a bare DICOM folder -> cache build), then every output
file's name and bytes, and everything printed, is searched for the markers.
"""

from __future__ import annotations

import pydicom
from conftest import tiny_args
from privacy_helpers import MARKERS, NEEDLES, leaks, mark_dicoms

from chestxr.cli import main

TINY = tiny_args()


def test_no_identifier_reaches_any_output(tmp_path, capsys):
    from chestxr.data import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(tmp_path / "data", n_images=40, seed=4, size=48, with_split=True)
    images = manifest.parent / "images"
    assert mark_dicoms(images) >= 10
    assert b"ZZPRIVATEZZ" in next(images.glob("*.dcm")).read_bytes()  # the inputs do hold them
    outputs = tmp_path / "out"
    run = outputs / "run"
    printed = []

    def cli(*argv: str) -> None:
        code = main(list(argv))
        cap = capsys.readouterr()
        printed.append(cap.out + cap.err)
        assert code == 0, cap.err

    cli("train", "--manifest", str(manifest), "--out", str(run), *TINY)
    cli(
        "calibrate",
        "--checkpoint",
        str(run),
        "--manifest",
        str(manifest),
        "--split",
        "val",
        "--bootstrap",
        "20",
        "--workers",
        "0",
    )
    cli(
        "evaluate",
        "--checkpoint",
        str(run),
        "--manifest",
        str(manifest),
        "--split",
        "test",
        "--out",
        str(outputs / "eval"),
        "--bootstrap",
        "20",
        "--workers",
        "0",
    )
    cli(
        "predict",
        "--checkpoint",
        str(run),
        "--manifest",
        str(manifest),
        "--out",
        str(outputs / "pred"),
        "--workers",
        "0",
    )
    dicom_only = tmp_path / "pacs_export"
    dicom_only.mkdir()
    for p in sorted(images.glob("*.dcm"))[:6]:
        (dicom_only / p.name).write_bytes(p.read_bytes())
    cli("predict", "--checkpoint", str(run), str(dicom_only), "--out", str(outputs / "pred_folder"), "--workers", "0")
    cli(
        "cache",
        "build",
        str(manifest),
        "--cache-dir",
        str(outputs / "cache"),
        "--workers",
        "1",
        "--no-progress",
        "--set",
        "preprocessing.cache_size=48",
        "--set",
        "preprocessing.size=32",
    )

    files = [p for p in outputs.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {
        "model.json",
        "config.yaml",
        "metrics.csv",
        "thresholds.json",
        "report.html",
        "review.html",
        "predictions.csv",
        "metrics.json",
    } <= names
    assert len([p for p in files if p.suffix == ".npy"]) == 40
    assert leaks(outputs) == []
    text = "".join(printed)
    assert "run folder:" in text  # the capture did capture
    assert [m for m in NEEDLES if m.decode() in text] == []
    # the manifest's own (pseudonymous) IDs are fine and do appear
    assert "p0001" in (outputs / "pred" / "predictions.csv").read_text()


def test_no_identifier_reaches_pacs_outputs(orthanc, tmp_path, capsys, monkeypatch):
    """predict --dicomweb --store-sr and listen (--store-sr to Orthanc) on marked DICOMs: no marker in any
    file or folder name, in any chestxr file's bytes (CSV, HTML, JSON, logs, journal state), or in what was
    printed. The listener's journal holds the received .dcm files themselves (as a PACS does) and the SR
    stored in the patient's study carries the identifiers: DICOM's one allowed exception."""
    import pytest

    pytest.importorskip("highdicom")
    pytest.importorskip("pynetdicom")
    from pacs_helpers import make_run, synthetic_studies
    from pynetdicom import AE, StoragePresentationContexts

    from chestxr.pacs import Listener, Node, setup_logging

    run = make_run(tmp_path / "run")
    by_study = synthetic_studies(tmp_path / "data", n_images=4, seed=11)
    assert mark_dicoms(tmp_path / "data" / "images") == 4
    files = [f for fs in by_study.values() for f in fs]
    orthanc.clear()
    for f in files:
        orthanc.upload(f)
    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    outputs = tmp_path / "out"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(run),
            "--dicomweb",
            orthanc.dicomweb,
            "--out",
            str(outputs / "pull"),
            "--store-sr",
            "--workers",
            "0",
        ]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    printed = cap.out + cap.err

    from orthanc import free_port

    port = free_port()
    setup_logging(outputs / "listen", quiet=True)
    lst = Listener(
        run,
        outputs / "listen",
        host="127.0.0.1",
        port=port,
        study_timeout=0.3,
        store_sr=True,
        store_to=Node(orthanc.aet, "127.0.0.1", orthanc.dicom_port),
    ).start()
    try:
        ae = AE(ae_title="MODALITY")
        ae.requested_contexts = StoragePresentationContexts
        assoc = ae.associate("127.0.0.1", port, ae_title="CHESTXR")
        assert assoc.is_established
        assert [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files] == [0] * len(files)
        assoc.release()
        import time

        deadline = time.monotonic() + 60
        while len(lst.processed) < len(by_study) or any(lst.journal.open_rounds(k) for k in lst.journal.studies()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        lst.stop()
    srs = [i for uid in by_study for i in orthanc.instances(uid) if i.get("Modality") == "SR"]
    assert len(srs) == len(by_study) and all(s["PatientID"] == MARKERS["PatientID"] for s in srs)
    found = []
    for p in outputs.rglob("*"):
        if any(m.decode() in p.name for m in NEEDLES):
            found.append(f"name: {p}")
        if p.is_file() and p.suffix != ".dcm":
            found += [f"{m.decode()} in {p}" for m in NEEDLES if m in p.read_bytes()]
    assert found == []
    assert (outputs / "listen" / "listen.log").stat().st_size > 0 and (outputs / "pull" / "predictions.csv").exists()
    assert [m for m in NEEDLES if m.decode() in printed] == [] and orthanc.password not in printed
