"""Synthetic frontal chest radiographs with known findings, for ``chestxr demo`` and for tests.

Each image is a cartoon of a PA/AP chest film: dark lung fields in a brighter body, mediastinum and
spine, a heart shadow, diaphragm domes, clavicles, rib texture, smooth noise, varying exposure and a
small random shift/rotation/scale. Four findings change the image in a localized, learnable way:

- ``Opacity``: a soft, textured bright blob inside a lung field;
- ``Cardiomegaly``: a wider heart shadow (cardiothoracic ratio 0.56-0.68 instead of ~0.40-0.48);
- ``Effusion``: fluid at one lung base with a meniscus top, which blunts the costophrenic angle;
- ``Nodule``: a small round bright spot, 5-8% of the image width across (5-8 px at the demo's 96 px:
  at 3-6% the demo's CNN found half of them at best - test AUROC 0.69-0.74 - so the demo failed its
  own bar depending on the thread count).

``severity`` in [0, 1] scales how visible a finding is; faint findings are the ones most often
labelled uncertain (-1). Everything is deterministic given the seed: the same seed gives
byte-identical PNG and DICOM files and the same manifest. DICOM files carry only obviously fake
identifiers (PatientName ``SYNTH^<n>``, PatientID ``SYN<n>``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from chestxr.core.csvsafe import escape_row
from chestxr.core.errors import ConfigError
from chestxr.core.fileio import write_text_atomic

FINDINGS: tuple[str, ...] = ("Opacity", "Cardiomegaly", "Effusion", "Nodule")
PREVALENCE: dict[str, float] = {"Opacity": 0.28, "Cardiomegaly": 0.22, "Effusion": 0.20, "Nodule": 0.20}
SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}


@dataclass(frozen=True)
class Anatomy:
    """A patient's body habitus in normalized image coordinates (u: -1 left .. 1 right, v: -1 top .. 1 bottom)."""

    body_ax: float
    lung_cx: float  # distance of each lung's centre from the midline
    lung_cy: float
    lung_ax: tuple[float, float]  # (image-left = patient's right, image-right = patient's left)
    lung_ay: float
    dome_v: tuple[float, float]  # highest point of each diaphragm dome
    dome_k: float
    ctr: float  # cardiothoracic ratio without cardiomegaly
    heart_cy: float
    heart_ay: float
    tissue: float
    lung_dark: float
    rib_freq: float
    rib_phase: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (always 15 draws from ``rng``)."""
    u = rng.uniform(size=15)
    lerp = lambda i, a, b: float(a + (b - a) * u[i])  # noqa: E731
    return Anatomy(
        body_ax=lerp(0, 0.84, 0.95),
        lung_cx=lerp(1, 0.35, 0.40),
        lung_cy=lerp(2, -0.12, -0.05),
        lung_ax=(lerp(3, 0.25, 0.29), lerp(4, 0.23, 0.27)),
        lung_ay=lerp(5, 0.62, 0.70),
        dome_v=(lerp(6, 0.34, 0.40), lerp(7, 0.40, 0.46)),
        dome_k=lerp(8, 1.4, 2.0),
        ctr=lerp(9, 0.40, 0.50),
        heart_cy=lerp(10, 0.06, 0.12),
        heart_ay=lerp(11, 0.22, 0.27),
        tissue=lerp(12, 0.52, 0.62),
        lung_dark=lerp(13, 0.30, 0.38),
        rib_freq=lerp(14, 4.2, 5.2),
        rib_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float, edge: float) -> np.ndarray:
    """Soft ellipse mask in [0, 1]; ``edge`` is the blur width in normalized units."""
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    return _sig((1.0 - r) * min(au, av) / edge)


@lru_cache(maxsize=16)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """(size, cells) matrix doing bicubic-spline upsampling of a length-``cells`` signal to ``size``."""
    from scipy.ndimage import zoom

    eye = np.eye(cells)
    cols = [zoom(e, size / cells, order=3, mode="reflect", grid_mode=True)[:size] for e in eye]
    return np.stack(cols, axis=1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise, float32 (size, size), unit-ish amplitude: a coarse random grid, upsampled."""
    m = _upsampler(size, cells)
    # einsum without BLAS: tiny products, and BLAS threads stall on a busy machine
    return np.einsum("ik,jk->ij", m @ rng.standard_normal((cells, cells), dtype=np.float32), m)


def render_chest(
    rng: np.random.Generator,
    *,
    size: int = 256,
    findings_present: Mapping[str, bool] | None = None,
    severity: float | Mapping[str, float] = 1.0,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """Render one synthetic frontal chest radiograph.

    The number of draws from ``rng`` does not depend on ``findings_present`` or ``severity``, so
    the same seed with a finding switched on and off gives the same anatomy, pose and noise.
    ``anatomy``: a patient's :class:`Anatomy` (drawn from ``rng`` when None).
    Returns float32 (size, size) in [0, 1], bright = dense (bone, fluid), dark = air.
    """
    present = {f: bool((findings_present or {}).get(f, False)) for f in FINDINGS}
    unknown = set(findings_present or {}) - set(FINDINGS)
    if unknown:
        raise ConfigError(f"unknown synthetic finding(s) {sorted(unknown)}; choose from {list(FINDINGS)}")
    sev = {f: float(severity.get(f, 1.0) if isinstance(severity, Mapping) else severity) for f in FINDINGS}
    sev = {f: min(max(s, 0.0), 1.0) for f, s in sev.items()}
    a = anatomy if anatomy is not None else draw_anatomy(rng)

    # pose, exposure and per-finding geometry: a fixed number of draws whatever is present
    shift = [float(t) for t in rng.uniform(-0.06, 0.06, size=2)]
    rot, scale = math.radians(rng.uniform(-5.0, 5.0)), rng.uniform(0.92, 1.06)
    gain, offset, gamma = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.25)
    op_side, op_r, op_t, op_sigma = rng.integers(2), rng.uniform(), rng.uniform(0, 2 * math.pi), rng.uniform(0.12, 0.20)
    no_side, no_r, no_t, no_diam = rng.integers(2), rng.uniform(), rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.08)
    ef_side, ef_slope = rng.integers(2), rng.uniform(1.2, 1.8)
    smooth = _smooth_noise(rng, size, 10)
    texture = _smooth_noise(rng, size, 24)
    fine = rng.standard_normal((size, size), dtype=np.float32)

    # pixel grid -> anatomical coordinates (inverse of shift, rotation, scale)
    x = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    xx, yy = np.meshgrid(x, x)
    xs, ys = xx - shift[0], yy - shift[1]
    c, s = math.cos(rot), math.sin(rot)
    u, v = (c * xs + s * ys) / scale, (-s * xs + c * ys) / scale
    edge = 0.015

    img = 0.08 + (a.tissue - 0.08) * _ellipse(u, v, 0.0, 0.15, a.body_ax, 1.25, 0.03)
    img += 0.10 * _sig((0.06 - np.abs(u)) / 0.01) * (0.8 + 0.2 * np.cos(v * 28.0)) * (v > -0.8)  # spine
    img -= 0.12 * _sig((0.025 - np.abs(u)) / 0.008) * _sig((-0.25 - v) / 0.02)  # trachea

    # lungs: ellipses cut by the diaphragm domes (dome highest at the lung centre)
    sides, lungs = (-1.0, 1.0), []
    for i, sd in enumerate(sides):
        cu = sd * a.lung_cx
        dome = a.dome_v[i] + a.dome_k * (u - cu) ** 2
        lungs.append(_ellipse(u, v, cu, a.lung_cy, a.lung_ax[i], a.lung_ay, edge) * _sig((dome - v) / edge))
    lung = lungs[0] + lungs[1]
    ribs = np.clip(np.sin(2 * math.pi * a.rib_freq * (v - 0.35 * np.abs(u)) + a.rib_phase), 0.0, 1.0) ** 2
    air = lung.copy()
    if present["Effusion"]:  # fluid over one dome, its top rising laterally (meniscus); blunts the angle
        i = int(ef_side)
        cu, ax = sides[i] * a.lung_cx, a.lung_ax[i]
        lateral = np.clip((u - cu) * sides[i] / ax, -1.0, 1.0) * 0.5 + 0.5  # 0 medial .. 1 lateral
        top = a.dome_v[i] - (0.06 + 0.20 * sev["Effusion"]) * (0.3 + ef_slope * lateral)
        air -= lungs[i] * _sig((v - top) / 0.012) * (0.75 + 0.2 * sev["Effusion"])
    img -= air * a.lung_dark * (1.0 - 0.18 * ribs + 0.10 * texture)

    # heart: spans about -0.35w .. +0.65w around the midline, w = ctr * thoracic width
    thorax = 2 * a.lung_cx + a.lung_ax[0] + a.lung_ax[1]
    ctr = 0.56 + 0.12 * sev["Cardiomegaly"] if present["Cardiomegaly"] else a.ctr
    w = ctr * thorax
    heart = _ellipse(u, v, 0.15 * w, a.heart_cy + 0.1 * (ctr - 0.45), w / 2, a.heart_ay * (ctr / 0.45) ** 0.4, 0.02)
    img += heart * np.maximum(a.tissue + 0.04 - img, 0.0) * 0.9  # fills the lung, leaves the spine

    def in_lung(side: int, r: float, t: float) -> tuple[float, float]:
        cu, ax = sides[side] * a.lung_cx, a.lung_ax[side]
        pu, pv = cu + 0.6 * math.sqrt(r) * ax * math.cos(t), a.lung_cy + 0.6 * math.sqrt(r) * a.lung_ay * math.sin(t)
        return pu, min(pv, a.dome_v[side] - 0.12)

    if present["Opacity"]:
        pu, pv = in_lung(int(op_side), op_r, op_t)
        blob = np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * op_sigma**2)) * (1.0 + 0.3 * texture)
        img += (0.20 + 0.22 * sev["Opacity"]) * blob * np.clip(lungs[int(op_side)] * 1.2, 0.0, 1.0)
    if present["Nodule"]:
        pu, pv = in_lung(int(no_side), no_r, no_t)
        radius = no_diam  # diameter as a fraction of image width (2 units) = radius in units
        img += (0.22 + 0.20 * sev["Nodule"]) * _sig((radius - np.hypot(u - pu, v - pv)) / (0.12 * radius))

    au = np.abs(u)  # clavicles: bands from near the midline rising laterally
    img += 0.12 * _sig((0.035 - np.abs(v + 0.68 + 0.18 * (au - 0.1))) / 0.008) * ((au > 0.08) & (au < 0.75))

    img += 0.025 * smooth + 0.012 * fine
    img = np.clip(gain * img + offset, 0.0, 1.0) ** gamma
    return img.astype(np.float32)


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


__all__ = [
    "FINDINGS",
    "Anatomy",
    "ImageSpec",
    "draw_anatomy",
    "encode_dicom_pixels",
    "generate_synthetic_dataset",
    "plan_synthetic_dataset",
    "render_chest",
    "render_spec",
]
