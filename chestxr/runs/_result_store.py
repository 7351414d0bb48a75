"""The keyed, append-only result store of ``chestxr predict --engine ray``: what makes a job resumable.

Every scored image is one row keyed by three hashes:

- ``image_sha256``: the SHA-256 of the file's bytes (a renamed or copied file is the same image; a changed
  file is a new one);
- ``model_sha256``: what turns pixels into probabilities: the weights' sha256, findings, task, backbone,
  preprocessing (read options, size, normalisation), the probability calibration, and the decode-cache
  format version (bumped whenever decoded pixels change);
- ``thresholds_sha256``: what turns probabilities into calls: the run's decision thresholds (NaN = not
  calibrated), the task and ``abstain``.

Layout (Hive-style partitions, readable by pandas/pyarrow, Spark and ``ray.data.read_parquet``)::

    STORE/model=<model_sha256[:16]>/thresholds=<thresholds_sha256[:16]>/part-<utc>-<uuid>.parquet

A part is written to a temp file, fsynced and renamed into place, so a job killed at any moment leaves
only whole parts; rows of a part that never got its rename are simply computed again. One writer (the
job's driver, under the output folder's lock) appends parts and drops any key it already holds, so no
key is ever written twice. Rows carry no path and no identifier: only hashes, probabilities, calls
(``call_<finding>``) and, for images that could not be scored, ``status = "skipped"`` with the reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from chestxr.core import write_with_atomic

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
#: model.json fields that change the probabilities (everything else: names, dates, approval, history)
_MODEL_FIELDS = (
    "weights_sha256",
    "findings",
    "task",
    "mode",
    "backbone",
    "in_channels",
    "dropout",
    "preprocessing",
    "probability_calibration",
)


def _sha(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_sha256(metadata: Any, *, weights_sha256: str) -> str:
    """Hash of what maps an image to probabilities (see the module doc).

    metadata: the run's RunMetadata; weights_sha256: the SHA-256 of its model.safetensors."""
    from chestxr.core import to_jsonable
    from chestxr.imaging import CACHE_VERSION

    doc = metadata.to_json()
    payload = {k: doc.get(k) for k in _MODEL_FIELDS}
    payload["weights_sha256"] = weights_sha256
    payload["decode_version"] = CACHE_VERSION
    return _sha(to_jsonable(payload))


def thresholds_sha256(metadata: Any, *, abstain: bool = False) -> str:
    """Hash of what maps probabilities to calls: the decision thresholds (NaN -> null), task, abstain."""
    thr = [None if not math.isfinite(t) else float(t) for t in metadata.decision_thresholds()]
    return _sha(
        {"thresholds": thr, "task": metadata.task, "abstain": bool(abstain), "findings": list(metadata.findings)}
    )


def result_key(image_sha: str, model_sha: str, thresholds_sha: str) -> str:
    """The key of one stored row: SHA-256 of the three hashes."""
    return hashlib.sha256(f"{image_sha}:{model_sha}:{thresholds_sha}".encode()).hexdigest()


def hash_image_file(path: str) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks). OSError propagates."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ResultStore:
    """The partition of ``root`` that belongs to one (model, thresholds) pair; see the module doc.

    ``findings``: the run's findings (columns ``prob_<f>`` float64 and ``call_<f>`` str per finding).
    """

    def __init__(self, root: str | Path, *, model_sha: str, thresholds_sha: str, findings: Sequence[str]) -> None:
        self.root = Path(root)
        self.model_sha = model_sha
        self.thresholds_sha = thresholds_sha
        self.findings = list(findings)
        self.folder = self.root / f"model={model_sha[:16]}" / f"thresholds={thresholds_sha[:16]}"
        self._held: set[str] = set()
        self.parts_written = 0
        self.rows_written = 0

    @property
    def columns(self) -> list[str]:
        return [
            "key",
            "image_sha256",
            "model_sha256",
            "thresholds_sha256",
            "status",
            "reason",
            *(f"prob_{f}" for f in self.findings),
            *(f"call_{f}" for f in self.findings),
            "written_utc",
        ]

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def load(self) -> pd.DataFrame:
        """Every row of this partition (one per image_sha256), indexed by image_sha256.

        A part that cannot be read (damaged disk) is reported with a warning and ignored: its images are
        scored again. Rows of another model or thresholds (a 16-hex prefix collision) are ignored too."""
        import pyarrow.parquet as pq

        frames = []
        for part in self.parts():
            try:
                frames.append(pq.read_table(part).to_pandas())
            except Exception as exc:  # pyarrow's own errors: the part is unusable, its rows are recomputed
                warnings.warn(f"{part}: unreadable result part ignored ({type(exc).__name__}: {exc})", stacklevel=2)
        if not frames:
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in self.columns})
        else:
            frame = pd.concat(frames, ignore_index=True)
            frame = frame[
                (frame["model_sha256"] == self.model_sha) & (frame["thresholds_sha256"] == self.thresholds_sha)
            ]
            dup = frame["image_sha256"].duplicated()
            if dup.any():  # never written by chestxr; a part copied in by hand would do it
                warnings.warn(f"{self.folder}: {int(dup.sum())} duplicate row(s) ignored (first kept)", stacklevel=2)
                frame = frame[~dup]
        self._held = set(frame["image_sha256"].astype(str))
        return frame.set_index("image_sha256", drop=False)

    def append(self, rows: pd.DataFrame) -> int:
        """Write the rows whose image is not yet held as one new part; returns how many were written.

        rows: image_sha256, status, reason, prob_<f>, call_<f> (the key and hash columns are added)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = rows[~rows["image_sha256"].isin(self._held)].drop_duplicates("image_sha256")
        if rows.empty:
            return 0
        out = pd.DataFrame(
            {
                "key": [result_key(s, self.model_sha, self.thresholds_sha) for s in rows["image_sha256"]],
                "image_sha256": rows["image_sha256"].astype(str).to_numpy(),
                "model_sha256": self.model_sha,
                "thresholds_sha256": self.thresholds_sha,
                "status": rows["status"].astype(str).to_numpy(),
                "reason": rows["reason"].fillna("").astype(str).to_numpy(),
            }
        )
        for f in self.findings:
            out[f"prob_{f}"] = rows[f"prob_{f}"].to_numpy(dtype=np.float64)
        for f in self.findings:
            out[f"call_{f}"] = rows[f"call_{f}"].fillna("").astype(str).to_numpy()
        now = _dt.datetime.now(_dt.timezone.utc)
        out["written_utc"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        table = pa.Table.from_pandas(out, preserve_index=False)
        name = f"part-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
        write_with_atomic(self.folder / name, lambda tmp: pq.write_table(table, tmp))
        self._held.update(out["image_sha256"])
        self.parts_written += 1
        self.rows_written += len(out)
        return len(out)

    def holds(self, image_shas: Iterable[str]) -> np.ndarray:
        """(n,) bool: which of ``image_shas`` have a row (after :meth:`load` / :meth:`append`)."""
        return np.array([s in self._held for s in image_shas], dtype=bool)
