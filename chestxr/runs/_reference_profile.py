"""The reference profile: what the calibration patients looked like to the signed-off model, stored in the
run folder (``RUN/reference_profile.json``) by ``calibrate`` and compared with the inference log by
``chestxr monitor``.

Per calibration image (at most :data:`MAX_PROFILE_IMAGES`, a seeded subsample of whole patients when the
split is larger): its patient as a keyed hash (HMAC-SHA256 under the run's key, the same hasher as the
log, so one image per patient can be chosen), the model's calibrated scores and its calls at the signed
thresholds, the calibration labels (1 / 0 / null; for the prevalence and the PPV/NPV the thresholds
imply), an embedding sketch and the acquisition fields. Never an identifier, a UID, a name, a date or
a path: the fields are the non-identifying technical ones (Modality, Manufacturer,
ManufacturerModelName, SoftwareVersions, ViewPosition, PhotometricInterpretation, BitsStored,
PixelSpacing band, TransferSyntax, KVP band), the age band and sex, and four numbers about the model's
input (mean and standard deviation of the input tensor, the stored image's rows and columns); all made
by :mod:`chestxr.runs._observations`, as the inference log's are.

Embedding sketch: the penultimate features (the input of the final linear layer; for one-vs-rest runs
the members' features side by side) reduced by a PCA fitted on the calibration images to
:data:`SKETCH_DIM` dimensions; the PCA's mean and components are stored, so inference applies exactly
the same reduction (:meth:`SketchProjection.apply`).

The file is canonical JSON (sorted keys, no spaces, floats rounded as written), so its sha256
(:func:`profile_sha256`) is a stable content hash: the approval binds it (issue 24), the log's headers
name it, and re-reading and re-writing a profile reproduces the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from chestxr.core import CheckpointError
from chestxr.runs._folder import REFERENCE_PROFILE_FILE, read_run_json
from chestxr.runs._observations import Observations

FORMAT_VERSION = 1
SKETCH_DIM = 16
MAX_PROFILE_IMAGES = 20_000


def _round(x: Any, digits: int) -> list[Any]:
    """Nested lists of floats rounded to ``digits`` (NaN -> None), for JSON."""
    arr = np.round(np.asarray(x, dtype=np.float64), digits)
    if arr.ndim > 1:
        return [_round(row, digits) for row in arr]
    return [None if not math.isfinite(v) else float(v) for v in arr.tolist()]


@dataclass(frozen=True, eq=False)
class SketchProjection:
    """PCA of penultimate features: ``mean`` (D,), ``components`` (d, D) orthonormal rows."""

    mean: np.ndarray
    components: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(n, d) sketch of features (n, D)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.mean.size:
            raise CheckpointError(
                f"features of shape {f.shape} do not fit the reference profile's sketch (D = {self.mean.size}): "
                "the profile was made by another model; calibrate again"
            )
        return (f - self.mean) @ self.components.T

    @classmethod
    def fit(cls, features: np.ndarray, dim: int = SKETCH_DIM) -> "SketchProjection":
        """PCA by SVD of the centred features (n, D); d = min(dim, n - 1, D) (at least 1)."""
        f = np.asarray(features, dtype=np.float64)
        mean = f.mean(axis=0)
        d = max(1, min(dim, f.shape[0] - 1, f.shape[1]))
        _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
        comps = vt[:d]
        # a sign convention, so a refit on the same data gives the same bytes
        signs = np.sign(comps[np.arange(d), np.abs(comps).argmax(axis=1)])
        return cls(mean=mean, components=comps * np.where(signs == 0, 1.0, signs)[:, None])


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """The profile (module docstring); arrays: ``patients`` (n,), ``scores`` and ``labels`` (n, F) float
    (labels NaN unknown), ``calls`` (n, F) int8, ``sketch`` (n, d), ``fields`` name -> (n,) str or
    None, ``numeric`` name -> (n,) float (NaN missing)."""

    findings: tuple[str, ...]
    thresholds: np.ndarray
    model_sha256: str
    patients: np.ndarray
    scores: np.ndarray
    calls: np.ndarray
    labels: np.ndarray
    sketch: np.ndarray
    projection: Optional[SketchProjection]
    fields: Mapping[str, np.ndarray]
    numeric: Mapping[str, np.ndarray]
    n_images_split: int
    created: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "chestxr_reference_profile": FORMAT_VERSION,
            "created": self.created,
            "split": self.split,
            "findings": list(self.findings),
            "thresholds": _round(self.thresholds, 9),
            "model_sha256": self.model_sha256,
            "n_images_split": int(self.n_images_split),
            "n_images": len(self),
            "patients": [str(p) for p in self.patients],
            "scores": _round(self.scores, 7),
            "calls": np.asarray(self.calls, dtype=int).tolist(),
            "labels": _round(self.labels, 3),
            "sketch": {
                "method": "PCA of the penultimate features (input of the final linear layer), fitted on this split",
                "mean": None if self.projection is None else _round(self.projection.mean, 6),
                "components": None if self.projection is None else _round(self.projection.components, 6),
                "values": _round(self.sketch, 5),
            },
            "fields": {k: [None if v is None else str(v) for v in col] for k, col in sorted(self.fields.items())},
            "numeric": {k: _round(col, 6) for k, col in sorted(self.numeric.items())},
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (sorted keys, compact): the bytes :func:`profile_sha256` hashes."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> "ReferenceProfile":
        if obj.get("chestxr_reference_profile") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: not a chestxr reference profile (format {FORMAT_VERSION})")
        try:
            findings = tuple(str(f) for f in obj["findings"])
            n_f = len(findings)

            def mat(v: Any, width: int) -> np.ndarray:
                a = np.array([[np.nan if x is None else x for x in row] for row in v], dtype=np.float64)
                return a.reshape(len(v), width)

            sk = obj["sketch"]
            projection = None
            if sk.get("components") is not None:
                comps = np.array(sk["components"], dtype=np.float64)
                projection = SketchProjection(np.array(sk["mean"], dtype=np.float64), comps)
            d = projection.dim if projection is not None else 0
            scores = mat(obj["scores"], n_f)
            n = scores.shape[0]
            fields = {k: np.array(v, dtype=object) for k, v in obj["fields"].items()}
            numeric = {
                k: np.array([np.nan if x is None else x for x in v], dtype=np.float64)
                for k, v in obj["numeric"].items()
            }
            for k, col in [*fields.items(), *numeric.items()]:
                if col.shape != (n,):
                    raise ValueError(f"field {k} has {col.shape[0]} values for {n} images")
            return cls(
                findings=findings,
                thresholds=np.array([np.nan if t is None else t for t in obj["thresholds"]], dtype=np.float64),
                model_sha256=str(obj["model_sha256"]),
                patients=np.array(obj["patients"], dtype=object),
                scores=scores,
                calls=np.array(obj["calls"], dtype=np.int8).reshape(n, n_f),
                labels=mat(obj["labels"], n_f),
                sketch=mat(sk["values"], d) if d else np.zeros((n, 0)),
                projection=projection,
                fields=fields,
                numeric=numeric,
                n_images_split=int(obj["n_images_split"]),
                created=str(obj.get("created", "")),
                split=str(obj.get("split", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: a damaged reference profile ({exc}); calibrate the run again") from None


def profile_sha256(run_dir: str | Path) -> Optional[str]:
    """sha256 (hex) of ``RUN/reference_profile.json``'s bytes, its stable content hash (what an approval
    binds, and what the inference log's headers name); None when the run has no profile."""
    path = Path(run_dir) / REFERENCE_PROFILE_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def load_reference_profile(run_dir: str | Path) -> ReferenceProfile:
    """The run's profile; CheckpointError naming the file when it is absent, too large or damaged."""
    path = Path(run_dir) / REFERENCE_PROFILE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no reference profile; this run was calibrated before chestxr made one: run chestxr calibrate "
            "again (then chestxr approve) to monitor it"
        )
    return ReferenceProfile.from_json(read_run_json(path), str(path))


def subsample_patients(
    patients: Sequence[str] | np.ndarray, limit: int = MAX_PROFILE_IMAGES, seed: int = 0
) -> np.ndarray:
    """Row indices (sorted) keeping whole patients, chosen at random (seeded), until ``limit`` images."""
    p = np.asarray(patients, dtype=object)
    if p.size <= limit:
        return np.arange(p.size)
    import pandas as pd

    codes, uniques = pd.factorize(p, use_na_sentinel=False)
    order = np.random.default_rng(seed).permutation(len(uniques))
    counts = np.bincount(codes, minlength=len(uniques))
    keep_patients = order[np.cumsum(counts[order]) <= limit]
    return np.flatnonzero(np.isin(codes, keep_patients))


def build_reference_profile(
    *,
    findings: Sequence[str],
    thresholds: np.ndarray,
    model_sha256: str,
    observations: Observations,
    scores: np.ndarray,
    calls: np.ndarray,
    labels: np.ndarray,
    split: str = "",
    seed: int = 0,
) -> ReferenceProfile:
    """The profile of the calibration images: ``scores`` (n, F) calibrated probabilities, ``calls`` (n, F)
    1 / 0 / -1 at the signed ``thresholds``, ``labels`` (n, F) 1 / 0 / NaN, ``observations`` of the same n
    images. At most :data:`MAX_PROFILE_IMAGES` images (whole patients, seeded); the sketch PCA is fitted on
    the kept images' features."""
    from datetime import datetime, timezone

    keep = subsample_patients(observations.patient, MAX_PROFILE_IMAGES, seed)
    feats = observations.features
    projection = None
    sketch = np.zeros((keep.size, 0))
    if feats is not None and feats.ndim == 2 and feats.shape[1] and keep.size >= 2:
        projection = SketchProjection.fit(feats[keep])
        sketch = projection.apply(feats[keep])
    return ReferenceProfile(
        findings=tuple(findings),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        model_sha256=model_sha256,
        patients=observations.patient[keep],
        scores=np.asarray(scores, dtype=np.float64)[keep],
        calls=np.asarray(calls, dtype=np.int8)[keep],
        labels=np.asarray(labels, dtype=np.float64)[keep],
        sketch=sketch,
        projection=projection,
        fields={k: v[keep] for k, v in observations.fields.items()},
        numeric={k: v[keep] for k, v in observations.numeric.items()},
        n_images_split=len(observations),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        split=split,
    )
