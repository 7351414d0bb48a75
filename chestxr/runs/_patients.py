"""A run's training patients: keyed hashes that do not reveal them, and the overlap check.

Training-patient hashes (``model.json`` ``training_patients_sha``) are HMAC-SHA256 (:class:`chestxr.core.KeyedHasher`)
of the normalised ID (:func:`chestxr.core.normalize_id`: trimmed, case-folded) under a per-run random 256-bit
key. The key lives beside the run in ``RUN/patient_hash.key`` (mode 0600) and is never written to model.json,
reports or cards. Threat model:

- someone holding only model.json (or a card/report made from it) learns nothing about the patients:
  without the key, testing a guessed ID (or an 8-digit MRN space) is a guess of a 256-bit key;
- the run's owner (anyone who can read the key file) can check whether given IDs trained the model -- that
  is the overlap check of calibrate/evaluate (:func:`check_not_training_patients`). Whoever can read the key
  can also test guessed IDs, so share the run folder only with people allowed to see the patient list, or
  share model.json/model.safetensors without the key file (the check then reports "unknown").

Runs written before this scheme (no ``patient_hash`` record) used ``sha256("chestxr:" + id)`` with a fixed
salt (:func:`legacy_patient_hashes`): their hashes still load and are checked (raw IDs), with a warning that
model.json itself reveals the training IDs to anyone who guesses them.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from chestxr.core import CalibrationError, CheckpointError, KeyedHasher, normalize_id
from chestxr.runs._folder import KEY_FILE, RunFolder
from chestxr.runs._metadata import PatientHashScheme, RunMetadata

SCHEME = "hmac-sha256-v1"
LEGACY_SALT = "chestxr"


def load_or_create_key(run_dir: str | Path) -> bytes:
    """The run's patient-hash key, creating ``RUN/patient_hash.key`` (0600) when there is none."""
    hasher = _hasher(run_dir, create=True)
    assert hasher is not None
    return hasher.key


def read_key(run_dir: str | Path) -> Optional[bytes]:
    """The run's key, or None when the key file is absent (e.g. model.json copied alone)."""
    hasher = _hasher(run_dir, create=False)
    return None if hasher is None else hasher.key


def _hasher(run_dir: str | Path, *, create: bool) -> Optional[KeyedHasher]:
    path = RunFolder(run_dir).patient_key
    try:
        return KeyedHasher.from_file(path, create=create)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a chestxr patient-hash key ({exc}); restore it from a backup") from None


def hash_patients(ids: Iterable[object], key: bytes) -> list[str]:
    """Sorted distinct HMAC-SHA256 hex digests (32 hex) of the normalised IDs."""
    hasher = KeyedHasher(key)
    return sorted({hasher.digest(normalize_id(v), 32) for v in ids})


def legacy_patient_hashes(ids: Iterable[object]) -> list[str]:
    """The pre-0.2 fixed-salt hashes (sha256 of "chestxr:" + the raw ID, 16 hex), sorted and distinct: kept
    only to check old run folders (anyone can test guessed IDs against them)."""
    return sorted({hashlib.sha256(f"{LEGACY_SALT}:{v}".encode()).hexdigest()[:16] for v in ids})


@dataclass(frozen=True)
class TrainingPatients:
    """model.json's training-patient fields: the hashes and how they were made."""

    hashes: list[str]
    scheme: PatientHashScheme


def training_patient_record(run_dir: str | Path, ids: Iterable[object]) -> TrainingPatients:
    """The keyed hashes of ``ids`` under the run's key (created when the run has none)."""
    hasher = _hasher(run_dir, create=True)
    assert hasher is not None
    return TrainingPatients(
        hash_patients(ids, hasher.key), PatientHashScheme(scheme=SCHEME, key_file=KEY_FILE, key_id=hasher.key_id)
    )


@dataclass
class Overlap:
    """How many distinct patients of a scored set trained the model; ``count`` None when unknown."""

    count: Optional[int]
    n_patients: int
    note: str = ""

    def describe(self) -> str:
        if self.count is None:
            return f"unknown ({self.note})"
        return f"{self.count} of {self.n_patients} patients"


def training_overlap(run_dir: str | Path, meta: RunMetadata, ids: Iterable[object]) -> Overlap:
    """Count the distinct patients in ``ids`` that are among the run's training patients (model.json's
    ``training_patients_sha``): with the run's key, or for old runs the fixed-salt hashes with a warning."""
    ids = list(ids)
    distinct = {normalize_id(v) for v in ids}
    trained = set(meta.training_patients_sha or [])
    if not trained:
        return Overlap(None, len(distinct), "model.json lists no training patients")
    scheme = meta.patient_hash
    if scheme is None:
        warnings.warn(
            f"{run_dir}: model.json hashes its training patients with the old fixed salt, so anyone holding it "
            "can test guessed IDs; retrain with this chestxr version to get keyed hashes (README, Safety)",
            stacklevel=2,
        )
        raw = {str(v) for v in ids} | {str(v).strip() for v in ids}
        hits = {normalize_id(v) for v in raw if legacy_patient_hashes([v])[0] in trained}
        return Overlap(len(hits), len(distinct))
    hasher = _hasher(run_dir, create=False)
    key_file = RunFolder(run_dir).patient_key
    if hasher is None:
        return Overlap(None, len(distinct), f"{key_file} is missing, so the check cannot be made")
    if scheme.key_id and scheme.key_id != hasher.key_id:
        return Overlap(None, len(distinct), f"{key_file} is not the key model.json was hashed with")
    hits = {v for v in distinct if hash_patients([v], hasher.key)[0] in trained}
    return Overlap(len(hits), len(distinct))


def check_not_training_patients(
    run_dir: str | Path, meta: RunMetadata, patients: Iterable[object], *, force: bool, what: str
) -> Overlap:
    """How many scored patients trained the model (IDs trimmed + case-folded; keyed hashes). Calibration
    refuses a non-zero overlap unless ``force`` (CalibrationError); every caller states the count, and a
    non-zero or unknown overlap is also a warning."""
    overlap = training_overlap(run_dir, meta, patients)
    if overlap.count and not force:
        raise CalibrationError(
            f"{overlap.count} patient(s) of the {what} split were in the model's training data; "
            "thresholds fitted on them would be optimistic. Use a held-out split (e.g. --split val) "
            "or pass --force to do it anyway"
        )
    if overlap.count:
        warnings.warn(
            f"{overlap.count} of {overlap.n_patients} patients of the {what} data were in the model's training "
            "data: its numbers are optimistic",
            stacklevel=2,
        )
    elif overlap.count is None:
        warnings.warn(f"training-patient overlap of the {what} data is {overlap.describe()}", stacklevel=2)
    return overlap
