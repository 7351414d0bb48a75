"""Tests of the synthetic chest X-ray generator (chestxr/data/_synthetic.py): tiny images, seconds in all."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from chestxr.core import ConfigError
from chestxr.data import (
    FINDINGS,
    encode_dicom_pixels,
    generate_synthetic_dataset,
    plan_synthetic_dataset,
    render_chest,
    render_spec,
)

N, SIZE, SEED = 24, 64, 7


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _read_like_a_reader(path: Path) -> np.ndarray:
    """What a correct reader does: DICOM rescale -> window -> MONOCHROME1 inversion; PNG / max."""
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        out = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        x = np.clip((out - (c - w / 2)) / w, 0.0, 1.0)
        return 1.0 - x if ds.PhotometricInterpretation == "MONOCHROME1" else x
    a = np.asarray(Image.open(path))
    return a.astype(np.float64) / (65535.0 if a.dtype == np.uint16 else 255.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_images=N, seed=SEED, size=SIZE)


@pytest.fixture(scope="module")
def specs():
    return plan_synthetic_dataset(n_images=N, seed=SEED)


def test_manifest_schema(dataset: Path) -> None:
    rows = _rows(dataset)
    assert dataset.name == "manifest.csv" and len(rows) == N
    assert list(rows[0]) == ["path", "patient_id", "study_id", "view", "sex", "age", *FINDINGS]
    for r in rows:
        assert re.fullmatch(r"images/p\d{4}_s\d+_i\d+\.(png|dcm)", r["path"]), r["path"]
        assert (dataset.parent / r["path"]).is_file()
        assert r["path"].startswith(f"images/{r['patient_id']}_") and r["study_id"].startswith(r["patient_id"] + "_s")
        assert r["view"] in {"PA", "AP"} and r["sex"] in {"F", "M"} and 18 <= int(r["age"]) <= 90
        assert all(r[f] in {"1", "0", "-1", ""} for f in FINDINGS)
    values = {r[f] for r in rows for f in FINDINGS}
    assert {"0", "1"} <= values
    assert len({r["path"] for r in rows}) == N


def test_split_column_is_by_patient(tmp_path: Path) -> None:
    rows = _rows(generate_synthetic_dataset(tmp_path, n_images=40, seed=1, size=32, with_split=True))
    assert list(rows[0])[:5] == ["path", "patient_id", "study_id", "view", "split"]
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {s for ss in split_of.values() for s in ss} == {"train", "val", "test"}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path, dataset: Path) -> None:
    again = generate_synthetic_dataset(tmp_path / "again", n_images=N, seed=SEED, size=SIZE)
    assert again.read_bytes() == dataset.read_bytes()
    for r in _rows(dataset):
        assert (again.parent / r["path"]).read_bytes() == (dataset.parent / r["path"]).read_bytes(), r["path"]
    other = generate_synthetic_dataset(tmp_path / "other", n_images=N, seed=SEED + 1, size=SIZE)
    assert other.read_bytes() != dataset.read_bytes()
    first = _rows(dataset)[0]["path"]
    if (other.parent / first).exists():
        assert not np.array_equal(
            _read_like_a_reader(other.parent / first), _read_like_a_reader(dataset.parent / first)
        )


def test_formats_mixed(dataset: Path) -> None:
    kinds = set()
    for r in _rows(dataset):
        p = dataset.parent / r["path"]
        if p.suffix == ".dcm":
            ds = pydicom.dcmread(p)
            kinds.add(ds.PhotometricInterpretation)
            kinds.add(f"bits{ds.BitsStored}")
        else:
            kinds.add({"L": "png8", "I;16": "png16"}[Image.open(p).mode])
    assert {"png8", "png16", "MONOCHROME1", "MONOCHROME2"} <= kinds
    assert len({k for k in kinds if k.startswith("bits")}) >= 2


def test_dicom_tags_and_fake_identity(dataset: Path) -> None:
    rows = [r for r in _rows(dataset) if r["path"].endswith(".dcm")]
    assert rows
    for r in rows:
        ds = pydicom.dcmread(dataset.parent / r["path"])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality in {"DX", "CR"} and ds.BodyPartExamined == "CHEST" and ds.ViewPosition == r["view"]
        assert ds.BitsAllocated == 16 and ds.BitsStored in {12, 14, 16} and ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0 and (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert float(ds.RescaleSlope) in {1.0, 2.0} and float(ds.RescaleIntercept) in {0.0, -1024.0}
        n = int(r["patient_id"][1:])
        assert str(ds.PatientName) == f"SYNTH^{n:04d}" and ds.PatientID == f"SYN{n:04d}"
        raw = ds.pixel_array
        assert raw.max() <= 2**ds.BitsStored - 1
        # the window covers exactly the stored values' range after rescaling
        out = raw.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        lo, hi = float(ds.WindowCenter) - float(ds.WindowWidth) / 2, float(ds.WindowCenter) + float(ds.WindowWidth) / 2
        assert lo <= out.min() and out.max() <= hi


def test_stored_pixels_match_render_and_monochrome1_is_inverted(dataset: Path, specs) -> None:
    seen = set()
    for spec in specs:
        img = render_spec(spec, seed=SEED, size=SIZE).astype(np.float64)
        path = dataset.parent / spec.path
        decoded = _read_like_a_reader(path)
        if spec.fmt == "dicom":
            raw = pydicom.dcmread(path).pixel_array
            np.testing.assert_array_equal(raw, encode_dicom_pixels(img, spec.dicom))
            corr = np.corrcoef(raw.ravel(), img.ravel())[0, 1]
            assert (corr < -0.999) if spec.dicom["photometric"] == "MONOCHROME1" else (corr > 0.999)
            step = 1.0 / (spec.dicom["hi"] - spec.dicom["lo"])
            seen.add(spec.dicom["photometric"])
        else:
            step = 1.0 / (255 if spec.fmt == "png8" else 65535)
        # a correct reader gets the same anatomy back, to within one stored step
        assert np.abs(decoded - img).max() <= step * 0.51 + 1e-9, spec.path
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def test_encode_dicom_pixels_hand_checked() -> None:
    img = np.array([[0.0, 0.5, 1.0]])
    d = {"lo": 100, "hi": 300, "photometric": "MONOCHROME2"}
    assert encode_dicom_pixels(img, d).tolist() == [[100, 200, 300]]
    assert encode_dicom_pixels(img, {**d, "photometric": "MONOCHROME1"}).tolist() == [[300, 200, 100]]


def test_several_images_per_patient(specs) -> None:
    per_patient: dict[int, int] = {}
    for s in specs:
        per_patient[s.patient] = per_patient.get(s.patient, 0) + 1
    assert max(per_patient.values()) >= 2 and min(per_patient.values()) >= 1
    assert all(n <= 3 for n in per_patient.values())
    one = plan_synthetic_dataset(n_images=10, seed=0, images_per_patient=(1, 1))
    assert len({s.patient for s in one}) == 10


def test_label_noise_counts_per_study() -> None:
    specs = plan_synthetic_dataset(n_images=200, seed=3, uncertain_rate=0.1, blank_rate=0.05)
    studies = {(s.patient, s.study): s for s in specs}
    cells = [st.labels[f] for st in studies.values() for f in FINDINGS]
    assert cells.count("-1") == round(0.1 * len(cells))
    assert cells.count("") == round(0.05 * len(cells))
    # images of one study share the study's labels
    for s in specs:
        assert s.labels == studies[(s.patient, s.study)].labels
    # certain labels agree with what is drawn; uncertain ones lean to faint positives
    for st in studies.values():
        for f in FINDINGS:
            if st.labels[f] in {"0", "1"}:
                assert st.labels[f] == ("1" if st.present[f] else "0")
    prevalence = np.mean([st.present[f] for st in studies.values() for f in FINDINGS])
    assert 0.15 <= prevalence <= 0.35


def test_soft_labels(tmp_path: Path) -> None:
    specs = plan_synthetic_dataset(n_images=200, seed=3, uncertain_rate=0.2, soft_labels=True)
    values = {s.labels[f] for s in specs for f in FINDINGS}
    soft = {float(v) for v in values if v not in {"1", "0", "-1", ""}}
    assert soft and soft <= {0.3, 0.4, 0.6, 0.7} and "-1" in values
    rows = _rows(
        generate_synthetic_dataset(tmp_path, n_images=12, seed=3, size=32, soft_labels=True, uncertain_rate=0.3)
    )
    for r in rows:
        for f in FINDINGS:
            assert r[f] in {"1", "0", "-1", ""} or 0.0 <= float(r[f]) <= 1.0


def test_findings_subset(tmp_path: Path) -> None:
    rows = _rows(generate_synthetic_dataset(tmp_path, n_images=6, seed=0, size=32, findings=("Nodule", "Effusion")))
    assert list(rows[0])[-2:] == ["Nodule", "Effusion"] and "Opacity" not in rows[0]


def test_png_only_and_dicom_only(tmp_path: Path) -> None:
    png = plan_synthetic_dataset(n_images=12, seed=0, dicom_fraction=0.0)
    dcm = plan_synthetic_dataset(n_images=12, seed=0, dicom_fraction=1.0)
    assert {s.fmt for s in png} <= {"png8", "png16"} and {s.fmt for s in dcm} == {"dicom"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"findings": ("Opacity", "Pneumothorax")},
        {"findings": ()},
        {"n_images": 0},
        {"images_per_patient": (2, 1)},
        {"uncertain_rate": 1.5},
        {"dicom_fraction": -0.1},
        {"uncertain_rate": 0.6, "blank_rate": 0.6},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs) -> None:
    with pytest.raises(ConfigError):
        generate_synthetic_dataset(tmp_path, size=32, **kwargs)


def test_render_chest_is_deterministic_and_in_range() -> None:
    a = render_chest(np.random.default_rng(0), size=64)
    b = render_chest(np.random.default_rng(0), size=64)
    c = render_chest(np.random.default_rng(1), size=64)
    assert a.shape == (64, 64) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    # anatomy: lungs (mid-lateral) darker than the mediastinum (centre) and the abdomen (bottom)
    lung = a[20:36, 8:20].mean()
    assert lung < a[20:36, 30:34].mean() - 0.1 and lung < a[56:62, 24:40].mean() - 0.1
    with pytest.raises(ConfigError):
        render_chest(np.random.default_rng(0), size=64, findings_present={"Pneumothorax": True})


def _pair(finding: str, seed: int = 0, severity: float = 1.0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    off = render_chest(np.random.default_rng(seed), size=size, findings_present={finding: False}, severity=severity)
    on = render_chest(np.random.default_rng(seed), size=size, findings_present={finding: True}, severity=severity)
    return off.astype(np.float64), on.astype(np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cardiomegaly_widens_the_heart(seed: int) -> None:
    off, on = _pair("Cardiomegaly", seed)
    diff = on - off
    assert diff.min() > -0.02  # only adds density
    # the heart grows into the lower part of the left lung (image right), not into the right lung's apex
    assert diff[48:72, 56:80].mean() > 0.05 and np.abs(diff[5:30, 10:40]).max() < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nodule_is_a_small_local_maximum(seed: int) -> None:
    off, on = _pair("Nodule", seed, severity=0.5, size=128)
    diff = on - off
    r, c = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff[r, c] > 0.15
    area = int((diff > 0.5 * diff[r, c]).sum())
    # 5-8% of the width across (128 px: 6.4-10.2 px, area 32-82 px), slack for the pose scale and pixel grid
    assert np.pi * (0.022 * 128) ** 2 <= area <= np.pi * (0.044 * 128) ** 2 + 4
    # a bright spot: brighter than the ring around it, which it was not before
    yy, xx = np.mgrid[: on.shape[0], : on.shape[1]]
    ring = (np.hypot(yy - r, xx - c) >= 7) & (np.hypot(yy - r, xx - c) <= 10)
    assert on[r, c] > np.median(on[ring]) + 0.05
    assert on[r, c] - np.median(on[ring]) > off[r, c] - np.median(off[ring]) + 0.12
    assert (np.abs(diff) > 0.01).mean() < 0.02  # localized


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opacity_and_effusion_brighten_one_lung_region(seed: int) -> None:
    for finding in ("Opacity", "Effusion"):
        off, on = _pair(finding, seed)
        diff = on - off
        assert diff.max() > 0.15 and diff.min() > -0.02, finding
        changed = diff > 0.05
        assert 0.005 < changed.mean() < 0.25, finding
        cols = np.nonzero(changed.any(axis=0))[0]
        assert cols.max() < 48 or cols.min() >= 48, finding  # one side only
    off, on = _pair("Effusion", seed)
    rows = np.nonzero((on - off > 0.05).any(axis=1))[0]
    assert rows.min() > 96 * 0.4 and rows.max() > 96 * 0.6  # from a lung base up, not the apex


def test_severity_scales_visibility() -> None:
    faint = _pair("Opacity", 0, severity=0.0)
    strong = _pair("Opacity", 0, severity=1.0)
    np.testing.assert_array_equal(faint[0], strong[0])
    assert (faint[1] - faint[0]).max() < (strong[1] - strong[0]).max() - 0.05
