"""Patient identifiers: one comparison rule, and keyed hashes that do not reveal the patients.

Comparison rule (overlap and split checks): IDs are compared after :func:`normalize_id`, i.e.
trimmed of surrounding whitespace and case-folded, so ``" p001"``, ``"P001"`` and ``"p001 "`` are
the same patient. Other characters (inner spaces, leading zeros, punctuation) are kept.

Training-patient hashes (``model.json`` ``training_patients_sha``) are HMAC-SHA256 of the normalised
ID under a per-run random 256-bit key. The key lives beside the run in ``RUN/patient_hash.key``
(mode 0600) and is never written to model.json, reports or cards. Threat model:

- someone holding only model.json (or a card/report made from it) learns nothing about the
  patients: without the key, testing a guessed ID (or an 8-digit MRN space) is a guess of a
  256-bit key;
- the run's owner (anyone who can read the key file) can check whether given IDs trained the
  model -- that is the overlap check of calibrate/evaluate. Whoever can read the key can also test
  guessed IDs, so share the run folder only with people allowed to see the patient list, or share
  model.json/model.safetensors without the key file (the check then reports "unknown").

Runs written before this scheme (no ``patient_hash`` record) used ``sha256("chestxr:" + id)`` with a
fixed salt: their hashes still load and are checked (raw IDs), with a warning that model.json itself
reveals the training IDs to anyone who guesses them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

if TYPE_CHECKING:
    import numpy as np

from chestxr.core.fileio import write_bytes_atomic

KEY_FILE = "patient_hash.key"
SCHEME = "hmac-sha256-v1"
LEGACY_SALT = "chestxr"


def normalize_id(value: object) -> str:
    """The form IDs are compared in: ``str(value).strip().casefold()``."""
    return str(value).strip().casefold()


def normalize_ids(values: Iterable[object]) -> "np.ndarray":
    """:func:`normalize_id` of every value, shape (N,) object array; each distinct value is
    normalised once (a 1M-row manifest has ~300k patients), so this is ~3x faster than a loop."""
    import numpy as np
    import pandas as pd

    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=object)
    if arr.size == 0:
        return arr
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    normed = np.array([normalize_id(u) for u in uniques], dtype=object)
    return normed[codes]


def load_or_create_key(run_dir: str | Path) -> bytes:
    """The run's patient-hash key, creating ``RUN/patient_hash.key`` (0600) when there is none."""
    path = Path(run_dir) / KEY_FILE
    if path.is_file():
        return read_key(run_dir)  # type: ignore[return-value]
    key = secrets.token_bytes(32)
    write_bytes_atomic(path, key.hex().encode("ascii") + b"\n", secret=True)
    return key


def read_key(run_dir: str | Path) -> Optional[bytes]:
    """The run's key, or None when the key file is absent (e.g. model.json copied alone)."""
    path = Path(run_dir) / KEY_FILE
    if not path.is_file():
        return None
    from chestxr.core.errors import CheckpointError

    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a chestxr patient-hash key ({exc}); restore it from a backup") from None
    if len(key) < 16:
        raise CheckpointError(f"{path}: key too short ({len(key)} bytes); restore it from a backup")
    return key


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (tells which key file belongs to a model.json)."""
    return hashlib.sha256(b"chestxr-key-id:" + key).hexdigest()[:16]


def hash_patients(ids: Iterable[object], key: bytes) -> list[str]:
    """Sorted distinct HMAC-SHA256 hex digests (32 hex) of the normalised IDs."""
    out = {hmac.new(key, normalize_id(v).encode("utf-8"), hashlib.sha256).hexdigest()[:32] for v in ids}
    return sorted(out)


def legacy_hash(ids: Iterable[object]) -> list[str]:
    """The pre-0.2 fixed-salt hashes (raw IDs), kept only to check old run folders."""
    return sorted({hashlib.sha256(f"{LEGACY_SALT}:{v}".encode()).hexdigest()[:16] for v in ids})


def training_patient_record(run_dir: str | Path, ids: Iterable[object]) -> dict[str, Any]:
    """model.json fields for the training patients: {"training_patients_sha": [...], "patient_hash": {...}}."""
    key = load_or_create_key(run_dir)
    return {
        "training_patients_sha": hash_patients(ids, key),
        "patient_hash": {"scheme": SCHEME, "key_file": KEY_FILE, "key_id": key_id(key)},
    }


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


def training_overlap(
    run_dir: str | Path,
    training_patients_sha: Iterable[str],
    record: Optional[Mapping[str, Any]],
    ids: Iterable[object],
) -> Overlap:
    """Count the distinct patients in ``ids`` that are among the run's training patients.

    training_patients_sha, record: model.json's hashed training patients and its ``patient_hash`` record
    (None for old runs). Uses the run's key (HMAC scheme) or, for old runs, the fixed-salt hashes with a warning.
    """
    ids = list(ids)
    distinct = {normalize_id(v) for v in ids}
    trained = set(training_patients_sha or [])
    if not trained:
        return Overlap(None, len(distinct), "model.json lists no training patients")
    if not record:
        warnings.warn(
            f"{run_dir}: model.json hashes its training patients with the old fixed salt, so anyone holding it "
            "can test guessed IDs; retrain with this chestxr version to get keyed hashes (README, Safety)",
            stacklevel=2,
        )
        raw = {str(v) for v in ids} | {str(v).strip() for v in ids}
        hits = {normalize_id(v) for v in raw if legacy_hash([v])[0] in trained}
        return Overlap(len(hits), len(distinct))
    key = read_key(run_dir)
    if key is None:
        return Overlap(None, len(distinct), f"{Path(run_dir) / KEY_FILE} is missing, so the check cannot be made")
    if record.get("key_id") and record["key_id"] != key_id(key):
        return Overlap(None, len(distinct), f"{Path(run_dir) / KEY_FILE} is not the key model.json was hashed with")
    hits = {v for v in distinct if hash_patients([v], key)[0] in trained}
    return Overlap(len(hits), len(distinct))
