"""What the run-folder workflows share: argument checks, loading a run, scoring a labelled split, the
training-patient overlap check, and the per-image prediction table.

Used by chestxr/runs/calibrating.py, evaluating.py and predicting.py (the facade is chestxr/runs/workflows.py).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pandas as pd

from chestxr.core.errors import CalibrationError, ConfigError
from chestxr.core.patient_ids import Overlap, training_overlap
from chestxr.data.labels import LabeledSet, load_labeled_set
from chestxr.runs.run import Run

RunLike = Run | str | Path
BadImagePolicy = Literal["error", "skip"]


def choice(value: str, allowed: tuple[str, ...], name: str) -> Any:
    """``value`` if it is one of ``allowed`` (typed as the matching Literal), else a ConfigError."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def bad_image_policy(value: str) -> BadImagePolicy:
    return choice(value, ("error", "skip"), "on_bad_image")


def as_run(run: RunLike) -> Run:
    """A loaded Run (``run`` itself, or the run folder it names)."""
    return run if isinstance(run, Run) else Run.load(run)


def labeled_predictions(
    run: Run,
    manifest: str | Path,
    *,
    split: Optional[str],
    batch_size: int,
    num_workers: int,
    cache_dir: Optional[str],
    on_bad_image: BadImagePolicy,
) -> tuple[LabeledSet, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(labeled rows that were read, logits (n, f), kept row indices, skipped (index, reason))."""
    labeled = load_labeled_set(
        manifest,
        findings=run.findings,
        policy=run.label_policy,
        split=split,
        seed=run.metadata.seed,
    )
    preds = run.logits(
        labeled.paths,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        on_bad_image=on_bad_image,
    )
    return labeled, preds.logits, preds.indices, preds.skipped


def check_not_training_patients(run: Run, patients: np.ndarray, *, force: bool, what: str) -> Overlap:
    """How many scored patients trained the model (IDs trimmed + case-folded; keyed hashes, see
    chestxr.core.patient_ids). Calibration refuses a non-zero overlap unless ``force``; every caller
    states the count."""
    overlap = training_overlap(
        run.run_dir, run.metadata.training_patients_sha, run.metadata.patient_hash, patients.tolist()
    )
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


def relative_path(path: str, base: Path) -> str:
    """``path`` relative to ``base`` as written (symlinks not resolved: a linked folder keeps its link's
    name), else resolved, else as given."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(base)))
    except ValueError:
        pass
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def prediction_frame(frame: pd.DataFrame, findings: list[str], scores: np.ndarray, base: Path) -> pd.DataFrame:
    """image_id, path (relative to the manifest folder), patient_id, study_id, metadata, prob_<finding>."""
    out = pd.DataFrame(
        {
            "image_id": [relative_path(p, base) for p in frame["path"].astype(str)],
            "path": [relative_path(p, base) for p in frame["path"].astype(str)],
            "patient_id": frame["patient_id"].astype(str).to_numpy(),
            "study_id": frame["study_id"].astype(str).to_numpy() if "study_id" in frame else "",
        }
    )
    no_study = out["study_id"].isin(["", "nan"])
    out.loc[no_study, "study_id"] = out.loc[no_study, "image_id"]  # no study information: one study per image
    for col in ("view", "sex", "age", "site"):
        if col in frame.columns:
            out[col] = frame[col].to_numpy()
    for j, f in enumerate(findings):
        out[f"prob_{f}"] = scores[:, j]
    return out
