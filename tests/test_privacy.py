"""Privacy end to end: patient identifiers in DICOM headers never reach any output.

DICOMs carry marker values in PatientName, PatientBirthDate, PatientID, AccessionNumber,
InstitutionName (and other identifying tags); the whole workflow runs on them (train -> calibrate ->
evaluate -> predict with a manifest -> predict a bare DICOM folder -> cache build), then every output
file's name and bytes, and everything printed, is searched for the markers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from conftest import tiny_args

from chestxr.cli.main import main

TINY = tiny_args()
MARKERS = {
    "PatientName": "ZZPRIVATEZZ^NAME",
    "PatientBirthDate": "19000101",
    "PatientID": "ZZPIDZZ",
    "AccessionNumber": "ZZACCZZ",
    "InstitutionName": "ZZINSTZZ",
    "ReferringPhysicianName": "ZZDOCZZ",
    "OtherPatientIDs": "ZZOTHERZZ",
    "StudyID": "ZZSTUDYIDZZ",
}
NEEDLES = [b"ZZPRIVATEZZ", b"19000101", b"ZZPIDZZ", b"ZZACCZZ", b"ZZINSTZZ", b"ZZDOCZZ", b"ZZOTHERZZ", b"ZZSTUDYIDZZ"]


def mark_dicoms(folder: Path) -> int:
    """Put the marker identifiers into every DICOM under ``folder``; returns how many were changed."""
    n = 0
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in MARKERS.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
        n += 1
    return n


def leaks(root: Path) -> list[str]:
    """Every file or folder under ``root`` whose name or content holds a marker."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if any(m.decode() in name for m in NEEDLES):
                found.append(f"name: {p}")
            if p.is_file():
                data = p.read_bytes()
                found += [f"{m.decode()} in {p}" for m in NEEDLES if m in data]
    return found


def test_no_identifier_reaches_any_output(tmp_path, capsys):
    from chestxr.data.synthetic import generate_synthetic_dataset

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
