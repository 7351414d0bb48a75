"""Studies keyed by (patient, study) and folders walked safely (issues 18.3, 18.9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dicom_factory import block_image, make_dataset

from chestxr.cli import main

TINY = [
    "--set",
    "model.backbone=tiny",
    "--set",
    "preprocessing.size=32",
    "--set",
    "preprocessing.cache_size=48",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.epochs=1",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("fold") / "data", n_images=32, seed=5, size=48, dicom_fraction=0.0
    )


@pytest.fixture(scope="module")
def run_dir(synth) -> Path:
    out = synth.parent.parent / "run"
    assert main(["train", "--manifest", str(synth), "--out", str(out), *TINY]) == 0
    return out


def pngs(synth, n):
    return sorted((synth.parent / "images").glob("*.png"))[:n]


def predict(run_dir, out, *inputs, extra=()):
    return main(
        ["predict", "--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", *extra, *map(str, inputs)]
    )


# ----------------------------------------------------------------------------- 18.3 studies


def test_flat_folder_of_pngs_is_one_study_per_image(run_dir, synth, tmp_path):
    flat = tmp_path / "flat_pngs"
    flat.mkdir()
    for p in pngs(synth, 7):
        shutil.copy(p, flat / p.name)
    assert predict(run_dir, tmp_path / "out", flat) == 0
    studies = pd.read_csv(tmp_path / "out" / "study_predictions.csv")
    assert len(studies) == 7 and (studies["n_images"] == 1).all()
    assert "flat_pngs" not in set(studies["study_id"].astype(str))
    assert (tmp_path / "out" / "review.html").read_text().count('class="card ') == 7


def test_study_id_reused_by_patients_gives_one_study_per_patient(run_dir, synth, tmp_path):
    images = pngs(synth, 28)
    frame = pd.DataFrame(
        {"path": [str(p) for p in images], "patient_id": [f"P{i % 11}" for i in range(28)], "study_id": "S1"}
    )
    frame.to_csv(tmp_path / "m.csv", index=False)
    assert predict(run_dir, tmp_path / "out", extra=["--manifest", str(tmp_path / "m.csv")]) == 0
    studies = pd.read_csv(tmp_path / "out" / "study_predictions.csv")
    assert len(studies) == 11 and studies["n_images"].sum() == 28
    assert sorted(studies["patient_id"]) == sorted(f"P{i}" for i in range(11))


def test_two_patients_sharing_a_study_uid_stay_apart(run_dir, tmp_path):
    folder = tmp_path / "dicoms"
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.8.498.1"
    for k, pid in enumerate(["A", "B", "B"]):
        ds = make_dataset(block_image(shape=(48, 48)))
        ds.PatientID, ds.StudyInstanceUID = pid, uid
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    assert predict(run_dir, tmp_path / "out", folder) == 0
    studies = pd.read_csv(tmp_path / "out" / "study_predictions.csv")
    assert sorted(studies["n_images"]) == [1, 2]  # patient A's image, patient B's two images
    text = (tmp_path / "out" / "study_predictions.csv").read_text() + (tmp_path / "out" / "predictions.csv").read_text()
    assert uid not in text and "PID-12345" not in text  # keys are hashes, never the identifiers


def test_study_table_keys_by_patient_and_study():
    from chestxr.reporting import build_study_table

    frame = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "patient_id": ["P1", "p1 ", "P2", "P2"],
            "study_id": ["S", "S", "S", "T"],
            "prob_X": [0.1, 0.9, 0.5, 0.2],
        }
    )
    table = build_study_table(frame, findings=["X"])
    assert table[["study_id", "n_images"]].values.tolist() == [["S", 2], ["S", 1], ["T", 1]]
    assert table["prob_X"].tolist() == [0.9, 0.5, 0.2]


# ----------------------------------------------------------------------------- 18.9 folders


def test_symlinked_subfolder_is_followed_with_loop_protection(run_dir, synth, tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    for p in pngs(synth, 5):
        shutil.copy(p, real / p.name)
    top = tmp_path / "export"
    top.mkdir()
    shutil.copy(pngs(synth, 6)[-1], top / "own.png")
    (top / "linked").symlink_to(real, target_is_directory=True)
    (real / "back").symlink_to(top, target_is_directory=True)  # a loop
    assert predict(run_dir, tmp_path / "out", top) == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(table) == 6
    assert sum(str(i).startswith("linked/") for i in table["image_id"]) == 5  # named by the link, not the target


def test_fifo_dangling_link_dicomdir_and_readme_are_skipped_with_reasons(run_dir, synth, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for p in pngs(synth, 2):
        shutil.copy(p, folder / p.name)
    os.mkfifo(folder / "b.dcm")
    (folder / "gone.png").symlink_to(tmp_path / "missing-target.png")
    (folder / "README").write_text("exported by PACS\n")
    (folder / "notes.txt").write_text("x\n")
    ds = make_dataset(block_image())
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.save_as(folder / "DICOMDIR", enforce_file_format=True)
    # in a subprocess with a deadline: opening the FIFO used to block predict forever
    cmd = [
        sys.executable,
        "-m",
        "chestxr",
        "predict",
        "--checkpoint",
        str(run_dir),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "0",
        str(folder),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "out" / "predictions.csv")) == 2
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv").set_index("path")["reason"].to_dict()
    assert "FIFO" in skipped["b.dcm"]
    assert "broken symbolic link" in skipped["gone.png"] and "missing-target.png" in skipped["gone.png"]
    assert "DICOMDIR" in skipped["DICOMDIR"]
    assert "not an image" in skipped["README"] and "not an image" in skipped["notes.txt"]


def test_walk_inputs_unit(tmp_path):
    from chestxr.imaging import walk_inputs

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"\x89PNG")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    noext = tmp_path / "a" / "1.2.3"
    noext.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)  # DICOM without a suffix
    files, skipped = walk_inputs([tmp_path])
    assert [f.name for f in files] == ["1.2.3", "x.png"]
    assert [(p.name, "loop" in r) for p, r in skipped] == [("loop", True)]
