"""Converters: hand-made tables in the published layouts, plus the real NIH and CheXpert tables."""

from __future__ import annotations

import gzip
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from chestxr.cli import main
from chestxr.core import ManifestError
from chestxr.data import (
    NIH14,
    convert_chexpert,
    convert_mimic,
    convert_nih,
    convert_table,
    read_manifest,
    validate_manifest,
    write_manifest,
)

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
)
NIH_ROWS = (
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,058Y,M,PA,2894,2729,0.143,0.143\n"
    "00000003_000.png,No Finding,0,3,81,F,AP,2048,2500,0.168,0.168\n"
    "00000004_000.png,Mass|Nodule|Pleural_Thickening,0,4,82,M,AP,2500,2048,0.168,0.168\n"
)

CHEX_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,"
    "Pleural Other,Fracture,Support Devices\n"
)
CHEX_ROWS = (
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n"
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,PA,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n"
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,\n"
)

MIMIC_LABELS = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
    "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
    "Pneumothorax,Support Devices\n"
    "10000032,50414267,,,,,,,,,1.0,,,,,\n"
    "10000032,53189527,,,,,,,,,1.0,,,,,\n"
    "10000764,57375967,,,1.0,,,,,,,,,-1.0,,\n"
    "10000898,50771383,,,,,,,,,,,,,,\n"
)
MIMIC_META = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
    "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
    "PatientOrientationCodeSequence_CodeMeaning\n"
    "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,"
    "21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect\n"
    "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,"
    "21800506,213014.531,CHEST (PA AND LAT),lateral,Erect\n"
    "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,10000032,53189527,CHEST (PORTABLE AP),AP,3056,2544,"
    "21800626,165500.312,CHEST (PORTABLE AP),antero-posterior,Erect\n"
    "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4,10000764,57375967,CHEST (PA AND LAT),AP AXIAL,2705,"
    "2539,21321015,161627.328,CHEST (PA AND LAT),antero-posterior,Erect\n"
    "ffffffff-0000-0000-0000-000000000000,10009999,59999999,CHEST,PA,10,10,1,1,CHEST,postero-anterior,Erect\n"
)


def test_nih_hand_table(tmp_path):
    src = tmp_path / "Data_Entry.csv.gz"
    src.write_bytes(gzip.compress((NIH_HEADER + NIH_ROWS).encode()))
    f = convert_nih(src)
    assert list(f["path"]) == [
        "images/00000001_000.png",
        "images/00000001_001.png",
        "images/00000003_000.png",
        "images/00000004_000.png",
    ]
    assert list(f["patient_id"]) == ["00000001", "00000001", "00000003", "00000004"]
    assert list(f["study_id"]) == ["00000001_000", "00000001_001", "00000003_000", "00000004_000"]
    assert list(f["view"]) == ["PA", "PA", "AP", "AP"] and list(f["sex"]) == ["M", "M", "F", "M"]
    assert f["age"].tolist() == [57.0, 58.0, 81.0, 82.0]  # "058Y" (the 2017 table) read as 58
    assert list(f.columns[6:]) == NIH14 + ["No Finding"]
    labels = f[NIH14 + ["No Finding"]].to_numpy()
    assert set(np.unique(labels)) == {0.0, 1.0}  # NIH has no uncertain or blank labels
    assert labels.sum(axis=1).tolist() == [1, 2, 1, 3]
    assert f.loc[1, "Emphysema"] == 1 and f.loc[2, "No Finding"] == 1 and f.loc[3, "Pleural_Thickening"] == 1
    assert convert_nih(src, image_root="")["path"][0] == "00000001_000.png"


def test_nih_unknown_label_and_wrong_table(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(NIH_HEADER + "x.png,Cardiomegaly|Covid,0,1,50,M,PA,1,1,1,1\n")
    with pytest.raises(ManifestError, match="Covid"):
        convert_nih(bad)
    other = tmp_path / "other.csv"
    other.write_text(CHEX_HEADER + CHEX_ROWS)
    with pytest.raises(ManifestError, match="Image Index"):
        convert_nih(other)
    with pytest.raises(ManifestError, match="not found"):
        convert_nih(tmp_path / "missing.csv")


def test_chexpert_hand_table(tmp_path):
    src = tmp_path / "train.csv"
    src.write_text(CHEX_HEADER + CHEX_ROWS)
    f = convert_chexpert(src)
    assert list(f["patient_id"]) == ["patient00001", "patient00002", "patient00002"]
    assert list(f["study_id"]) == ["patient00001/study1", "patient00002/study2", "patient00002/study1"]
    assert list(f["view"]) == ["AP", "PA", "LATERAL"] and list(f["sex"]) == ["F", "F", "F"]
    assert f["path"][0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert "Effusion" in f.columns and "Pleural Effusion" not in f.columns
    np.testing.assert_array_equal(f["Effusion"], [np.nan, -1.0, np.nan])  # -1 kept, blank stays blank
    np.testing.assert_array_equal(f["Consolidation"], [np.nan, -1.0, -1.0])
    np.testing.assert_array_equal(f["Support Devices"], [1.0, np.nan, np.nan])
    assert f["Pneumothorax"][0] == 0.0


def test_mimic_hand_table(tmp_path):
    lab, meta = tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", tmp_path / "mimic-cxr-2.0.0-metadata.csv"
    lab.write_bytes(gzip.compress(MIMIC_LABELS.encode()))
    meta.write_text(MIMIC_META)
    with pytest.warns(UserWarning, match="1 image"):
        f = convert_mimic(lab, metadata=meta)
    assert len(f) == 5  # one row per image (dicom), not per study
    assert f["path"][0] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert list(f["view"]) == ["PA", "LATERAL", "AP", "AP_AXIAL", "PA"]
    assert list(f["patient_id"][:2]) == ["10000032", "10000032"] and f["study_id"][3] == "57375967"
    assert f["No Finding"].tolist()[:3] == [1.0, 1.0, 1.0]
    assert f.loc[3, "Consolidation"] == 1.0 and f.loc[3, "Pneumonia"] == -1.0
    assert np.isnan(f.loc[4, ["Atelectasis", "No Finding"]].to_numpy(dtype=float)).all()  # unlabeled study
    assert "Effusion" in f.columns
    with pytest.raises(ManifestError, match="metadata"):
        convert_table("mimic", lab)


def test_written_conversion_is_a_valid_manifest(tmp_path):
    src = tmp_path / "train.csv"
    src.write_text(CHEX_HEADER + CHEX_ROWS)
    out = tmp_path / "out" / "chexpert.csv"
    write_manifest(convert_chexpert(src), out)
    r = validate_manifest(out, check_paths=False)
    assert r.ok, r.errors
    with warnings.catch_warnings(record=True) as caught:  # 3 rows: no positives / negatives
        warnings.simplefilter("always")
        m = read_manifest(out, check_paths=False, findings=["Effusion", "Consolidation"])
    assert len(caught) == 4 and all("labels" in str(w.message) for w in caught)
    np.testing.assert_array_equal(m.labels(), [[np.nan, np.nan], [-1, -1], [np.nan, -1]])


def test_cli_convert_nih_with_image_root(tmp_path, capsys):
    src = tmp_path / "Data_Entry.csv"
    src.write_text(NIH_HEADER + NIH_ROWS)
    img = tmp_path / "data" / "imgs"
    img.mkdir(parents=True)
    for name in ("00000001_000.png", "00000001_001.png", "00000003_000.png", "00000004_000.png"):
        (img / name).write_bytes(b"x")
    out = tmp_path / "manifests" / "nih.csv"
    args = ["manifest", "convert", "--from", "nih", str(src), "--out", str(out), "--image-root", str(img)]
    assert main(args + ["--check-paths"]) == 0
    assert "4 images, 3 patients, 15 findings" in capsys.readouterr().out
    assert out.read_text().splitlines()[1].startswith("../data/imgs/00000001_000.png,00000001,")
    assert main(args) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    # default image root: images/ beside the manifest, which does not exist here
    assert (
        main(["manifest", "convert", "--from", "nih", str(src), "--out", str(out), "--overwrite", "--check-paths"]) == 1
    )
    assert "file not found" in capsys.readouterr().out
    assert main(["manifest", "convert", "--from", "mimic", str(src), "--out", str(tmp_path / "m.csv")]) == 2


def test_real_nih_table(shared_data, tmp_path):
    src = shared_data / "label_tables" / "Data_Entry_2017_v2020.csv.gz"
    t0 = time.perf_counter()
    f = convert_nih(src)
    elapsed = time.perf_counter() - t0
    assert len(f) == 112120 and f["patient_id"].nunique() == 30805
    counts = f[NIH14 + ["No Finding"]].sum().astype(int).to_dict()
    # counts from the published table (Infiltration 19,894; Hernia 227; No Finding 60,361)
    assert counts["Infiltration"] == 19894 and counts["Hernia"] == 227 and counts["No Finding"] == 60361
    assert counts["Effusion"] == 13317 and counts["Atelectasis"] == 11559
    assert elapsed < 10.0  # vectorized; about 1 s on a laptop
    out = tmp_path / "nih.csv"
    write_manifest(f, out)
    m = read_manifest(out, check_paths=False)
    assert len(m) == 112120 and m.findings == NIH14 + ["No Finding"]


def test_real_chexpert_table(shared_data):
    f = convert_chexpert(shared_data / "label_tables" / "chexpert_train.csv.gz")
    assert len(f) == 223414 and f["patient_id"].nunique() == 64540
    assert f["view"].value_counts().to_dict() == {"AP": 161590, "LATERAL": 32387, "PA": 29420, "LL": 16, "RL": 1}
    assert int((f["Effusion"] == -1).sum()) == 11628 and int((f["Effusion"] == 1).sum()) == 86187
    assert int(f["Effusion"].isna().sum()) == 90203
    assert int((f["Atelectasis"] == -1).sum()) == 33739


def test_real_nih14_shared_manifest_in_repo(shared_data):
    """data_manifests/nih14_shared.csv (made by the NIH converter) is usable in place."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data_manifests" / "nih14_shared.csv"
    if shared_data.parent.resolve() != (path.parent / ".." / ".." / "shared").resolve():
        pytest.skip("shared data is not at ../shared beside the repository")
    m = read_manifest(path)
    assert len(m) == 421
    counts = dict(zip(m.findings, (m.labels() == 1).sum(axis=0).astype(int).tolist()))
    assert counts["Infiltration"] == 83 and counts["No Finding"] == 79 and counts["Edema"] == 12
    src = pd.read_csv(shared_data / "nih14" / "Data_Entry.csv")
    assert len(src) == 421
