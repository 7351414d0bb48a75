"""From a manifest and a label policy to labeled splits: targets, masks and evaluation labels.

Two label views are kept apart on purpose:
- training ``targets``/``mask`` follow the config's label policy (uncertain -> ones/zeros/soft/masked);
- evaluation ``eval_true``/``eval_mask`` never count an uncertain (-1) label, whatever the training
  policy did with it, and treat blanks as the policy says (zeros or masked). Soft labels (values
  strictly between 0 and 1) follow ``labels.eval_bounds`` [low, high]: <= low negative, >= high
  positive, strictly between masked (default [0, 1]: every soft value is left out of the metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Optional

import numpy as np
import pandas as pd

from chestxr.core import Config, LabelPolicy, ManifestError
from chestxr.data._schema import Manifest


@dataclass
class LabeledSet:
    """Rows of one split with their labels.

    frame: the manifest rows (path absolute, patient_id, study_id, view, split, metadata, findings).
    targets: float32 (n, f) training targets; mask: bool (n, f).
    eval_true: float32 (n, f) 0/1; eval_mask: bool (n, f).
    """

    frame: pd.DataFrame
    findings: list[str]
    targets: np.ndarray
    mask: np.ndarray
    eval_true: np.ndarray
    eval_mask: np.ndarray
    source: str
    manifest_hash: str

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].astype(str).tolist()

    @property
    def patient_ids(self) -> np.ndarray:
        return self.frame["patient_id"].astype(str).to_numpy()


def evaluation_labels(labels: np.ndarray, policy: LabelPolicy, findings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(eval_true (n, f) float32 0/1, eval_mask (n, f) bool) from raw labels (NaN blank, -1 uncertain)."""
    from chestxr.data._findings import apply_label_policy

    eval_policy = replace(
        policy,
        uncertain="masked",
        per_finding={k: {kk: vv for kk, vv in v.items() if kk != "uncertain"} for k, v in policy.per_finding.items()},
    )
    targets, mask = apply_label_policy(labels, findings, eval_policy, seed=0)
    lo, hi = (float(v) for v in policy.eval_bounds)
    positive, negative = targets >= hi, targets <= lo
    mask = mask & (positive | negative)  # strictly between the bounds: not counted
    return np.where(positive, 1.0, 0.0).astype(np.float32), mask


def labeled_from_manifest(
    manifest: Manifest, findings: list[str], policy: LabelPolicy, *, seed: int, split: Optional[str] = None
) -> LabeledSet:
    """LabeledSet for ``manifest``, optionally only rows of ``split``."""
    from chestxr.data._findings import apply_label_policy, relabel
    from chestxr.data._manifest import manifest_hash

    manifest = relabel(manifest, findings)
    frame = manifest.frame
    if split is not None:
        if "split" not in frame.columns or not (frame["split"] == split).any():
            have = sorted(set(frame["split"])) if "split" in frame.columns else []
            raise ManifestError(
                manifest.source,
                [
                    f"column 'split': no rows with split == {split!r} "
                    f"(values present: {have}); run `chestxr manifest split` first"
                ],
            )
        keep = (frame["split"] == split).to_numpy()
        manifest = replace(manifest, frame=frame[keep].reset_index(drop=True))
    labels = manifest.labels()
    targets, mask = apply_label_policy(labels, findings, policy, seed=seed)
    eval_true, eval_mask = evaluation_labels(labels, policy, findings)
    return LabeledSet(
        frame=manifest.frame.reset_index(drop=True),
        findings=list(findings),
        targets=targets.astype(np.float32),
        mask=mask.astype(bool),
        eval_true=eval_true,
        eval_mask=eval_mask,
        source=str(manifest.source),
        manifest_hash=manifest_hash(manifest),
    )


def load_labeled_set(
    path: str | Path,
    *,
    findings: list[str],
    policy: LabelPolicy,
    views: Optional[list[str]] = None,
    split: Optional[str] = None,
    seed: int = 0,
) -> LabeledSet:
    """Read a manifest and label it for ``findings`` (aliases mapped; absent findings masked)."""
    from chestxr.data._manifest import read_manifest

    manifest = read_manifest(path, views=views)
    return labeled_from_manifest(manifest, findings, policy, seed=seed, split=split)


def resolve_findings(manifest_findings: list[str], config: Config) -> list[str]:
    """The model's finding list: config.data.findings, else the manifest's (No Finding per policy)."""
    from chestxr.data._findings import select_findings

    return select_findings(manifest_findings, config.labels, config.data.findings)


@dataclass
class TrainingSplits(Mapping[str, LabeledSet]):
    """The labelled splits a run trains on, by name ("train", "val", "test" when present).

    ``made``: the manifest with the split chestxr made or completed (every row's ``split``), which the run
    folder keeps as ``splits.csv`` (:func:`chestxr.runs.train`) so calibrate and evaluate can use the same
    split; None when the user's split (or separate val/test manifests) was used as given."""

    sets: dict[str, LabeledSet]
    made: Optional[Manifest] = field(default=None)

    def __getitem__(self, name: str) -> LabeledSet:
        return self.sets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __len__(self) -> int:
        return len(self.sets)


def load_training_splits(config: Config) -> TrainingSplits:
    """The LabeledSets of a training run ("train", "val", "test" when there are test rows).

    - separate val/test manifests when configured (data.val_manifest/test_manifest): refused when
      one of their patients is also in the training manifest;
    - else the manifest's split column when it has one. A row the user assigned to a split never
      moves: with train and val rows it is used as is; with train but no val rows, val is carved
      out of the train rows only (patient level, data.val_fraction of the train images) and test
      rows are untouched (one warning says so); refused when that is impossible;
    - else (no split column) a patient-level stratified split (data.val_fraction/test_fraction,
      seeded).
    Whenever chestxr made or completed the split, ``made`` holds the manifest with it (the run folder's
    splits.csv, so calibrate and evaluate can use the same split: ``--manifest RUN/splits.csv --split val``).
    Patient IDs are compared trimmed and case-folded.
    """
    from chestxr.data._manifest import read_manifest
    from chestxr.data._splits import split_manifest

    if not config.data.manifest:
        raise ManifestError("<config>", ["data.manifest is not set: pass --manifest PATH or set it in the config"])
    manifest = read_manifest(config.data.manifest, views=config.data.views)
    findings = resolve_findings(manifest.findings, config)
    policy, seed = config.labels, config.seed
    out: dict[str, LabeledSet] = {}
    if config.data.val_manifest:
        out["train"] = labeled_from_manifest(manifest, findings, policy, seed=seed)
        val = read_manifest(config.data.val_manifest, views=config.data.views)
        _refuse_shared_patients(manifest, val, "data.val_manifest")
        out["val"] = labeled_from_manifest(val, findings, policy, seed=seed)
        if config.data.test_manifest:
            test = read_manifest(config.data.test_manifest, views=config.data.views)
            _refuse_shared_patients(manifest, test, "data.test_manifest")
            out["test"] = labeled_from_manifest(test, findings, policy, seed=seed)
        return TrainingSplits(out)
    splits = set(manifest.frame["split"]) - {""} if "split" in manifest.frame.columns else set()
    made: Optional[Manifest] = None
    if not splits:
        manifest = made = split_manifest(
            manifest, val=config.data.val_fraction, test=config.data.test_fraction, seed=config.seed
        )
    elif "val" not in splits:
        manifest = made = _carve_val_from_train(manifest, config)
    for name in ("train", "val", "test"):
        if (manifest.frame["split"] == name).any():
            out[name] = labeled_from_manifest(manifest, findings, policy, seed=seed, split=name)
    return TrainingSplits(out, made)


def _carve_val_from_train(manifest: Manifest, config: Config) -> Manifest:
    """The manifest with val carved out of its train rows only (other splits untouched)."""
    import warnings

    from chestxr.core import normalize_id
    from chestxr.data._splits import split_manifest

    frame = manifest.frame
    is_train = (frame["split"] == "train").to_numpy()
    n_patients = len({normalize_id(p) for p in frame.loc[is_train, "patient_id"]})
    fraction = config.data.val_fraction
    fix = (
        "add val rows to the split column, give data.val_manifest, or drop the split column "
        "to let chestxr split by patient"
    )
    if not is_train.any():
        have = sorted(set(frame["split"]) - {""})
        raise ManifestError(manifest.source, [f"column 'split': no train rows (values present: {have}); {fix}"])
    if not 0 < fraction < 1 or n_patients < 2:
        raise ManifestError(
            manifest.source,
            [
                f"column 'split': no val rows, and val cannot be carved out of the train rows "
                f"({n_patients} train patient(s), data.val_fraction={fraction:g}; needs >= 2 patients and a "
                f"fraction in (0, 1)); {fix}"
            ],
        )
    train_part = replace(manifest, frame=frame[is_train].reset_index(drop=True))
    carved = split_manifest(train_part, val=fraction, test=0.0, seed=config.seed).frame["split"].to_numpy()
    if not (carved == "val").any() or not (carved == "train").any():
        raise ManifestError(manifest.source, [f"column 'split': val cannot be carved out of the train rows; {fix}"])
    new = frame.copy()
    new.loc[is_train, "split"] = carved
    n_val = int((carved == "val").sum())
    n_val_patients = len({normalize_id(p) for p in new.loc[new["split"] == "val", "patient_id"]})
    warnings.warn(
        f"{manifest.source}: the split column has no val rows; val = {n_val_patients} patient(s), {n_val} image(s) "
        "carved out of the train rows only (data.val_fraction); other rows keep their split",
        stacklevel=3,
    )
    return replace(manifest, frame=new)


def _refuse_shared_patients(train: Manifest, other: Manifest, what: str) -> None:
    """ManifestError when a patient of ``other`` (IDs trimmed + case-folded) is in the training manifest."""
    from chestxr.core import normalize_id

    trained = {normalize_id(p) for p in train.frame["patient_id"] if str(p) != ""}
    shared = sorted({str(p) for p in other.frame["patient_id"] if normalize_id(p) in trained})
    if shared:
        raise ManifestError(
            other.source,
            [
                f"column 'patient_id': {len(shared)} patient(s) of {what} are also in the training manifest "
                f"{train.source} (first: {shared[0]!r}); validation on training patients is optimistic. "
                "Remove them from one of the two manifests"
            ],
        )
