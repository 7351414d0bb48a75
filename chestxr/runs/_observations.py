"""What the monitor observes of each image a run predicts, without identifiers: keyed hashes of the image,
its study and its patient, the acquisition fields of its header, and numbers about the model's input.
Calibrate stores these for the calibration images (the reference profile), predict and listen append them
to the inference log; both build them here so the two sides are made the same way.

Keyed hashes: HMAC-SHA256 (32 hex) under the run's key (``RUN/patient_hash.key``, chestxr.core.KeyedHasher),
domain-separated from the training-patient hashes in model.json (so a log and a model.json cannot be joined
without the key):

- image: ``sop\\x1f<SOPInstanceUID>`` for a DICOM, else ``file\\x1f<sha256 of the file's bytes>``;
- patient: ``patient\\x1f<normalised patient ID>`` (the manifest's patient_id, else DICOM PatientID);
- study: ``study\\x1f<normalised patient ID>\\x1f<study ID>`` (the manifest's study_id, else DICOM
  StudyInstanceUID). Without a patient (a PNG predicted without a manifest) the image is its own patient
  and its own study.

The raw identifiers are read from the header, hashed, and dropped here; nothing else leaves this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from chestxr.core import ImageReadError, KeyedHasher, normalize_id
from chestxr.imaging import ACQUISITION_FIELDS, acquisition_fields, read_image_header

HASH_LENGTH = 32
#: numeric fields about the model's input: mean and standard deviation of the input tensor (after resizing
#: and normalisation) and the stored image's rows and columns
NUMERIC_FIELDS = ("input_mean", "input_std", "rows", "cols")


@dataclass(frozen=True, eq=False)
class Observations:
    """n images: ``image``/``study``/``patient`` (n,) keyed hashes; ``fields`` name -> (n,) str or None
    (:data:`chestxr.imaging.ACQUISITION_FIELDS`); ``numeric`` name -> (n,) float (:data:`NUMERIC_FIELDS`,
    NaN missing); ``features`` (n, D) penultimate features or None."""

    image: np.ndarray
    study: np.ndarray
    patient: np.ndarray
    fields: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]
    features: Optional[np.ndarray]

    def __len__(self) -> int:
        return int(self.image.shape[0])


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _given(value: Any) -> bool:
    return value is not None and str(value).strip() != "" and not (isinstance(value, float) and np.isnan(value))


def observe_images(
    paths: Sequence[str | Path],
    hasher: KeyedHasher,
    *,
    input_stats: Optional[np.ndarray] = None,
    features: Optional[np.ndarray] = None,
    patient_ids: Optional[Sequence[Any]] = None,
    study_ids: Optional[Sequence[Any]] = None,
    ages: Optional[Sequence[Any]] = None,
    sexes: Optional[Sequence[Any]] = None,
) -> Observations:
    """:class:`Observations` of the (already predicted) images ``paths``: headers read without decoding
    pixels; ``input_stats`` (n, 2) and ``features`` (n, D) from ``Run.logits(..., features=True)``;
    ``patient_ids``/``study_ids``/``ages``/``sexes`` from a manifest (else from the DICOM header)."""
    n = len(paths)
    image = np.empty(n, dtype=object)
    study = np.empty(n, dtype=object)
    patient = np.empty(n, dtype=object)
    fields = {name: np.empty(n, dtype=object) for name in ACQUISITION_FIELDS}
    rows = np.full(n, np.nan)
    cols = np.full(n, np.nan)
    for i, path in enumerate(map(str, paths)):
        try:
            header = read_image_header(path)
            meta, pid, sid, sop = header.meta, header.patient_id, header.study_uid, header.sop_uid
        except ImageReadError:  # predicted, so readable: a header that fails now leaves its fields missing
            meta, pid, sid, sop = {}, "", "", ""
        if patient_ids is not None and _given(patient_ids[i]):
            pid = str(patient_ids[i])
        if study_ids is not None and _given(study_ids[i]):
            sid = str(study_ids[i])
        image[i] = hasher.digest(f"sop\x1f{sop}" if sop else f"file\x1f{_file_sha256(path)}", HASH_LENGTH)
        patient[i] = hasher.digest(f"patient\x1f{normalize_id(pid)}", HASH_LENGTH) if pid else image[i]
        study[i] = hasher.digest(f"study\x1f{normalize_id(pid)}\x1f{sid}", HASH_LENGTH) if sid else image[i]
        got = acquisition_fields(
            meta,
            age=None if ages is None else ages[i],
            sex=None if sexes is None else sexes[i],
        )
        for name in ACQUISITION_FIELDS:
            fields[name][i] = got[name]
        rows[i] = meta.get("rows") if meta.get("rows") is not None else np.nan
        cols[i] = meta.get("cols") if meta.get("cols") is not None else np.nan
    stats = np.full((n, 2), np.nan) if input_stats is None else np.asarray(input_stats, dtype=np.float64)
    numeric = {"input_mean": stats[:, 0], "input_std": stats[:, 1], "rows": rows, "cols": cols}
    return Observations(image, study, patient, fields, numeric, None if features is None else np.asarray(features))


def call_codes(positive: np.ndarray, calibrated: np.ndarray, *, multiclass: bool = False) -> np.ndarray:
    """(n, f) int8 calls for the monitor from :func:`chestxr.evaluation.decide`'s ``positive`` (n, f) and
    ``calibrated`` (f,): 1 positive, 0 negative, -1 for a finding without a threshold (it calls nothing;
    a multiclass run's classes are always called: one-hot)."""
    out = np.asarray(positive, dtype=np.int8).copy()
    if not multiclass:
        out[:, ~np.asarray(calibrated, dtype=bool)] = -1
    return out


def label_keys(
    hasher: KeyedHasher, path: str | None, patient_id: Any, study_id: Any
) -> tuple[Optional[str], Optional[str]]:
    """(image key, study key) of a labels-manifest row, made as :func:`observe_images` makes them: the
    image key from the file when it can be read (None otherwise), the study key from (patient_id,
    study_id) when both are given (None otherwise)."""
    img = None
    if path is not None and Path(path).is_file():
        try:
            sop = read_image_header(path).sop_uid
        except ImageReadError:
            sop = ""
        img = hasher.digest(f"sop\x1f{sop}" if sop else f"file\x1f{_file_sha256(str(path))}", HASH_LENGTH)
    stud = None
    if _given(patient_id) and _given(study_id):
        stud = hasher.digest(f"study\x1f{normalize_id(patient_id)}\x1f{study_id}", HASH_LENGTH)
    return img, stud
