"""Synthetic frontal chest radiographs with known findings, for ``chestxr demo`` and for tests.

Planning (patients, studies, views, labels with uncertain/blank/soft cells, file formats), then rendering
(chestxr/data/_synthetic_render.py: the anatomy and the four findings, ``FINDINGS``) and writing PNG 8/16-bit
and DICOM files plus manifest.csv. Everything is deterministic given the seed: the same seed gives
byte-identical PNG and DICOM files and the same manifest. DICOM files carry only obviously fake
identifiers (PatientName ``SYNTH^<n>``, PatientID ``SYN<n>``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from chestxr.core import ConfigError, escape_row, write_text_atomic
from chestxr.data._synthetic_render import FINDINGS, draw_anatomy, render_chest

PREVALENCE: dict[str, float] = {"Opacity": 0.28, "Cardiomegaly": 0.22, "Effusion": 0.20, "Nodule": 0.20}
SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render and write one image of a synthetic dataset."""

    index: int
    path: str  # relative to the dataset folder
    patient: int
    study: int
    view: str
    sex: str
    age: int
    present: dict[str, bool]
    severity: dict[str, float]
    labels: dict[str, str]  # manifest cells: "1", "0", "-1", "" or a soft value
    fmt: str  # "png8" | "png16" | "dicom"
    dicom: dict[str, Any] = field(default_factory=dict)  # bits, photometric, slope, intercept, lo, hi, modality


def plan_synthetic_dataset(
    *,
    n_images: int = 400,
    seed: int = 0,
    findings: tuple[str, ...] = FINDINGS,
    dicom_fraction: float = 0.5,
    images_per_patient: tuple[int, int] = (1, 3),
    uncertain_rate: float = 0.05,
    blank_rate: float = 0.05,
    soft_labels: bool = False,
) -> list[ImageSpec]:
    """Draw patients, studies, findings, labels and file formats (no pixels). Deterministic by seed."""
    bad = [f for f in findings if f not in FINDINGS]
    if bad or not findings:
        raise ConfigError(f"findings must be a non-empty subset of {list(FINDINGS)}, got {list(findings)}")
    lo_n, hi_n = images_per_patient
    if n_images < 1 or lo_n < 1 or hi_n < lo_n:
        raise ConfigError(
            f"need n_images >= 1 and 1 <= images_per_patient[0] <= [1], got {n_images}, {images_per_patient}"
        )
    for name, rate in (
        ("dicom_fraction", dicom_fraction),
        ("uncertain_rate", uncertain_rate),
        ("blank_rate", blank_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {rate}")
    if uncertain_rate + blank_rate > 1.0:
        raise ConfigError("uncertain_rate + blank_rate must be <= 1")
    rng = np.random.default_rng([seed, 0])

    rows: list[dict] = []  # one per image; study dicts are shared by the images of a study
    studies: list[dict] = []
    patient = 0
    while len(rows) < n_images:
        patient += 1
        k = int(rng.integers(lo_n, hi_n + 1))
        sex, age = ("F", "M")[int(rng.integers(2))], int(rng.integers(18, 91))
        study: dict | None = None
        for _ in range(k):
            if study is None or rng.uniform() > 0.2:  # 20%: a second image in the same study
                pres: dict[str, bool] = {}
                for f in FINDINGS:
                    p = PREVALENCE[f]
                    if f == "Cardiomegaly" and study is not None and study["present"][f]:
                        p = 0.7  # chronic
                    if f == "Effusion" and pres["Cardiomegaly"]:
                        p = 0.4  # heart failure
                    pres[f] = bool(rng.uniform() < p)
                sevs = {f: math.sqrt(rng.uniform()) if pres[f] else 0.0 for f in FINDINGS}  # few faint ones
                study = {
                    "id": (study["id"] + 1) if study else 1,
                    "present": pres,
                    "severity": sevs,
                    "view": "PA" if rng.uniform() < 0.7 else "AP",
                    "n": 0,
                }
                studies.append(study)
            rows.append({"patient": patient, "sex": sex, "age": age, "study": study, "image": study["n"]})
            study["n"] += 1
    rows = rows[:n_images]
    kept = {id(r["study"]) for r in rows}
    studies = [s for s in studies if id(s) in kept]

    # labels, per study: uncertain mostly where the finding is faint, blank mostly where absent
    cells = [(s, f) for s in studies for f in findings]
    w_unc = np.array([(10.0 if s["severity"][f] < 0.35 else 1.0) if s["present"][f] else 1.5 for s, f in cells])
    n_unc = int(round(uncertain_rate * len(cells)))
    n_blank = min(int(round(blank_rate * len(cells))), len(cells) - n_unc)
    unc = set(rng.choice(len(cells), size=n_unc, replace=False, p=w_unc / w_unc.sum()).tolist()) if n_unc else set()
    rest = np.array([i for i in range(len(cells)) if i not in unc])
    w_blank = np.array([1.0 if cells[i][0]["present"][cells[i][1]] else 3.0 for i in rest])
    blank = (
        set(rest[rng.choice(len(rest), size=n_blank, replace=False, p=w_blank / w_blank.sum())].tolist())
        if n_blank
        else set()
    )
    for i, (s, f) in enumerate(cells):
        pos = s["present"][f]
        text = "1" if pos else "0"
        if i in unc:
            text = "-1"
            if soft_labels and rng.uniform() < 0.5:
                text = str(rng.choice([0.6, 0.7] if pos else [0.3, 0.4]))
        elif i in blank:
            text = ""
        s.setdefault("labels", {})[f] = text

    specs = []
    for idx, r in enumerate(rows):
        s = r["study"]
        if rng.uniform() < dicom_fraction:
            fmt, bits = "dicom", int(rng.choice([12, 14, 16]))
            maxv = 2**bits - 1
            dicom = {
                "bits": bits,
                "photometric": str(rng.choice(["MONOCHROME1", "MONOCHROME2"])),
                "slope": int(rng.choice([1, 2])),
                "intercept": int(rng.choice([-1024, 0])),
                "lo": int(maxv * rng.uniform(0.0, 0.08)),
                "hi": maxv - int(maxv * rng.uniform(0.0, 0.08)),
                "modality": str(rng.choice(["DX", "CR"])),
            }
        else:
            fmt, dicom = ("png8", "png16")[int(rng.integers(2))], {}
        ext = "dcm" if fmt == "dicom" else "png"
        specs.append(
            ImageSpec(
                index=idx,
                path=f"images/p{r['patient']:04d}_s{s['id']}_i{r['image']}.{ext}",
                patient=r["patient"],
                study=s["id"],
                view=s["view"],
                sex=r["sex"],
                age=r["age"],
                present=dict(s["present"]),
                severity=dict(s["severity"]),
                labels={f: s["labels"][f] for f in findings},
                fmt=fmt,
                dicom=dicom,
            )
        )
    return specs


def render_spec(spec: ImageSpec, *, seed: int, size: int, findings: tuple[str, ...] = FINDINGS) -> np.ndarray:
    """Pixels of one planned image: float32 (size, size) in [0, 1]. Only ``findings`` are drawn."""
    anatomy = draw_anatomy(np.random.default_rng([seed, 1, spec.patient]))
    present = {f: spec.present[f] and f in findings for f in FINDINGS}
    return render_chest(
        np.random.default_rng([seed, 2, spec.index]),
        size=size,
        findings_present=present,
        severity=spec.severity,
        anatomy=anatomy,
    )


def encode_dicom_pixels(img: np.ndarray, dicom: Mapping[str, Any]) -> np.ndarray:
    """Stored values (uint16, (H, W)) for a [0, 1] image: MONOCHROME1 stores the inverted image.

    Rescale (slope, intercept) then the window [lo, hi] in output units, then inverting MONOCHROME1,
    gives back ``img`` to within one stored step.
    """
    lo, hi = int(dicom["lo"]), int(dicom["hi"])
    shown = 1.0 - img.astype(np.float64) if dicom["photometric"] == "MONOCHROME1" else img.astype(np.float64)
    return np.round(lo + shown * (hi - lo)).astype(np.uint16)


def _dicom_bytes(img: np.ndarray, spec: ImageSpec, seed: int) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    d = spec.dicom
    uid = lambda kind: generate_uid(entropy_srcs=[f"chestxr-synthetic:{seed}:{kind}"])  # noqa: E731
    sop_class, sop_uid = UID(SOP_CLASS[str(d["modality"])]), uid(f"image{spec.index}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = uid(f"patient{spec.patient}-study{spec.study}")
    ds.SeriesInstanceUID = uid(f"series{spec.index}")
    ds.PatientName, ds.PatientID = f"SYNTH^{spec.patient:04d}", f"SYN{spec.patient:04d}"
    ds.PatientSex, ds.PatientAge = spec.sex, f"{spec.age:03d}Y"
    ds.StudyDate, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20000101", str(spec.study), 1, 1
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = str(d["modality"]), "CHEST", spec.view
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, str(d["photometric"])
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, int(d["bits"]), int(d["bits"]) - 1, 0
    slope, intercept = int(d["slope"]), int(d["intercept"])
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = str(slope), str(intercept), "US"
    lo_out, hi_out = int(d["lo"]) * slope + intercept, int(d["hi"]) * slope + intercept
    ds.WindowCenter, ds.WindowWidth = f"{(lo_out + hi_out) / 2:g}", f"{hi_out - lo_out:g}"
    ds.add_new(0x7FE00010, "OW", encode_dicom_pixels(img, d).astype("<u2").tobytes())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _png_bytes(img: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    if fmt == "png16":
        pil = Image.fromarray(np.round(img.astype(np.float64) * 65535).astype(np.uint16))
    else:
        pil = Image.fromarray(np.round(img.astype(np.float64) * 255).astype(np.uint8))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    n_images: int = 400,
    seed: int = 0,
    size: int = 256,
    findings: tuple[str, ...] = FINDINGS,
    dicom_fraction: float = 0.5,
    images_per_patient: tuple[int, int] = (1, 3),
    uncertain_rate: float = 0.05,
    blank_rate: float = 0.05,
    soft_labels: bool = False,
    with_split: bool = False,
) -> Path:
    """Write ``n_images`` synthetic chest X-rays (PNG 8/16-bit and DICOM) under ``out_dir/images``
    and ``out_dir/manifest.csv``; return the manifest's path.

    Manifest columns: path, patient_id, study_id, view, [split], sex, age, then one per finding
    (1 / 0 / -1 uncertain / blank, or with ``soft_labels`` a value in [0, 1] for some uncertain ones).
    ``with_split``: add a patient-level split column (about 70% train, 15% val, 15% test).
    """
    if size < 16:
        raise ConfigError(f"size must be >= 16 pixels, got {size}")
    findings = tuple(findings)
    specs = plan_synthetic_dataset(
        n_images=n_images,
        seed=seed,
        findings=findings,
        dicom_fraction=dicom_fraction,
        images_per_patient=images_per_patient,
        uncertain_rate=uncertain_rate,
        blank_rate=blank_rate,
        soft_labels=soft_labels,
    )
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    split_of: dict[int, str] = {}
    if with_split:
        patients = sorted({s.patient for s in specs})
        order = np.random.default_rng([seed, 3]).permutation(len(patients))
        n_val = n_test = max(1, int(round(0.15 * len(patients)))) if len(patients) >= 3 else 0
        for rank, i in enumerate(order):
            split_of[patients[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    for spec in specs:
        img = render_spec(spec, seed=seed, size=size, findings=findings)
        data = _dicom_bytes(img, spec, seed) if spec.fmt == "dicom" else _png_bytes(img, spec.fmt)
        (out / spec.path).write_bytes(data)

    header = ["path", "patient_id", "study_id", "view"] + (["split"] if with_split else []) + ["sex", "age", *findings]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(escape_row(header))
    for s in specs:
        pid = f"p{s.patient:04d}"
        split = [split_of[s.patient]] if with_split else []
        writer.writerow(
            escape_row(
                [s.path, pid, f"{pid}_s{s.study}", s.view, *split, s.sex, s.age, *(s.labels[f] for f in findings)]
            )
        )
    manifest = out / "manifest.csv"
    write_text_atomic(manifest, buf.getvalue())
    return manifest
