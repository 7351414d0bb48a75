"""``predict_run``: predict a manifest or image files/folders with a run and write the review worklist.

review.html (per-image and per-study cards, thumbnails, optional Grad-CAM maps), predictions.csv,
study_predictions.csv and skipped.csv; the output folder is staged and swapped in only when complete. The PACS
floor (chestxr.pacs) calls it per study. Inputs without a manifest (files, folders, their study keys) are read by
:func:`chestxr.imaging.walk_inputs` and :func:`chestxr.imaging.study_keys_for_files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core import (
    ConfigError,
    ManifestError,
    escape_frame,
    rebase_paths,
    staged_output_dir,
    write_text_atomic,
)
from chestxr.data import read_manifest, relative_paths
from chestxr.evaluation import decide
from chestxr.imaging import (
    LoaderOptions,
    build_image_loader,
    build_transform,
    resize_to,
    study_keys_for_files,
    walk_inputs,
)
from chestxr.reporting import grad_cam, image_table, write_review_report
from chestxr.runs._approval import ApprovalStatus, approval_status
from chestxr.runs._approval import require_approval as refuse_unapproved
from chestxr.runs._output_guard import guard_run_output, refuse_run_folder
from chestxr.runs._run import Run, RunLike, as_run


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict_run` wrote into ``out_dir``: review.html, predictions.csv (per image),
    study_predictions.csv (per study) and skipped.csv (None when nothing was left out)."""

    out_dir: Path
    html: Path
    predictions_csv: Path
    study_predictions_csv: Path
    skipped: Optional[Path] = None

    def files(self) -> dict[str, Path]:
        """{"html", "predictions_csv", "study_predictions_csv"[, "skipped"]} -> paths."""
        out = {"html": self.html, "predictions_csv": self.predictions_csv}
        out["study_predictions_csv"] = self.study_predictions_csv
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


def predict_run(
    run: RunLike,
    out_dir: str | Path,
    *,
    manifest: Optional[str | Path] = None,
    inputs: Sequence[str] = (),
    study_reduce: str = "max",
    explain: bool = False,
    overwrite: bool = False,
    loading: LoaderOptions = LoaderOptions(),
    max_thumbnails: int = 500,
    require_approval: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
) -> PredictionResult:
    """Predict a manifest or files/folders (DICOM folders need no manifest) and write the review worklist.

    skipped: (path, reason) of files the caller already left out (a PACS study's non-image instances),
    added to skipped.csv. heatmaps_out: with ``explain``, filled with the Grad-CAM maps
    {(image_id, finding): (h, w) [0, 1]} (the PACS floor turns them into Secondary Captures).

    A run with ``task: multiclass`` gets one class per image and per study: the argmax of the
    calibrated scores, ties to the first class (predicted_class / predicted_score columns); the
    per-class thresholds are used only with ``abstain`` (no class when the top score is below its
    class's threshold). ``abstain`` on any other task is a ConfigError.

    review.html carries the run's approval status (:func:`chestxr.runs.approval_status`); with
    ``require_approval`` a run that is not approved is refused (ApprovalError) before any work.

    ``run``: a :class:`~chestxr.runs.Run` or a run folder (always its current operating points). The folder is
    built under a temporary name and swapped in only when complete (:func:`chestxr.core.staged_output_dir`);
    a run folder is refused as ``out_dir``."""
    run = as_run(run)
    if study_reduce not in ("max", "mean"):
        raise ConfigError(f"study_reduce must be one of ['max', 'mean'], got {study_reduce!r}")
    if abstain and run.task != "multiclass":
        raise ConfigError(
            f"{run.run_dir}: --abstain applies to mutually exclusive classes (task: multiclass); this run's "
            f"task is {run.task}: its findings are called at their thresholds"
        )
    approval = refuse_unapproved(run) if require_approval else approval_status(run)
    guard_run_output(out_dir, run.run_dir, manifests=[manifest], inputs=inputs)
    with staged_output_dir(out_dir, overwrite=overwrite, refuse=refuse_run_folder) as staged:
        written = _predict_into(
            staged,
            run,
            manifest=manifest,
            inputs=inputs,
            study_reduce="max" if study_reduce == "max" else "mean",
            explain=explain,
            loading=loading,
            max_thumbnails=max_thumbnails,
            approval=approval,
            skipped=skipped,
            heatmaps_out=heatmaps_out,
            abstain=abstain,
        )
    return PredictionResult(Path(out_dir), **rebase_paths(written, staged, Path(out_dir)))


def _predict_into(
    out: Path,
    run: Run,
    *,
    manifest: Optional[str | Path],
    inputs: Sequence[str],
    study_reduce: Literal["max", "mean"],
    explain: bool,
    loading: LoaderOptions,
    max_thumbnails: int,
    approval: Optional[ApprovalStatus] = None,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
) -> dict[str, Path]:
    """predict_run's work, written into the (staged) folder ``out``."""
    not_images: list[tuple[str, str]] = []
    if manifest is not None:
        frame = read_manifest(manifest).frame
        base = Path(manifest).parent
    elif inputs:
        files, passed_over = walk_inputs(inputs)
        base = Path(inputs[0]) if Path(inputs[0]).is_dir() else Path(inputs[0]).parent
        not_images = [(os.path.abspath(p), reason) for p, reason in passed_over]
        if not files:
            listed = "; ".join(f"{p}: {r}" for p, r in passed_over[:3])
            raise ManifestError(
                ",".join(inputs),
                [
                    f"no image files found{' (skipped ' + listed + ')' if listed else ''}; pass DICOM/PNG/JPEG files or folders"
                ],
            )
        patients, studies = study_keys_for_files(files)
        frame = pd.DataFrame({"path": [os.path.abspath(f) for f in files], "patient_id": patients, "study_id": studies})
    else:
        raise ManifestError("<predict>", ["give --manifest M or image files/folders to predict"])
    paths = frame["path"].astype(str).tolist()
    preds = run.logits(paths, loading=loading)
    kept = preds.indices
    scores = run.scores_from_logits(preds.logits)
    table = image_table(frame.iloc[kept].reset_index(drop=True), run.findings, scores, base)
    thresholds = run.thresholds
    multiclass = run.task == "multiclass"
    calls = decide(scores, thresholds, multiclass=multiclass, abstain=abstain).positive  # Grad-CAM: called ones
    thumbs, heat = _thumbnails_and_cams(
        run, [paths[i] for i in kept], table, calls, explain=explain, limit=max_thumbnails
    )
    if heatmaps_out is not None and heat:
        heatmaps_out.update(heat)
    written = write_review_report(
        out,
        findings=run.findings,
        predictions=table,
        thresholds=thresholds,
        thumbnails=thumbs,
        heatmaps=heat,
        study_reduce=study_reduce,
        approval=approval.to_dict() if approval is not None else None,
        multiclass=multiclass,
        abstain=abstain,
    )
    passed = not_images + [(paths[i], r) for i, r in preds.skipped]
    rel = relative_paths([p for p, _ in passed], base, outside="absolute")
    left_out = [(str(p), r) for p, r in skipped] + [(q, r) for q, (_, r) in zip(rel, passed)]
    if left_out:
        frame_skipped = pd.DataFrame({"path": [p for p, _ in left_out], "reason": [r for _, r in left_out]})
        write_text_atomic(out / "skipped.csv", escape_frame(frame_skipped).to_csv(index=False))
        written["skipped"] = out / "skipped.csv"
    return written


def _thumbnails_and_cams(
    run: Run,
    paths: list[str],
    table: pd.DataFrame,
    calls: np.ndarray,
    *,
    explain: bool,
    limit: int,
) -> tuple[dict[str, np.ndarray], Optional[dict[tuple[str, str], np.ndarray]]]:
    """Small thumbnails for the review cards and, with ``explain``, a Grad-CAM map per called finding
    (``calls`` (n, f) bool: the decision rule's calls, the predicted class only for multiclass)."""
    import torch

    pre = run.preprocessing
    loader = build_image_loader(pre, cache_dir=None)
    transform = build_transform(pre, None, train=False)
    thumbs: dict[str, np.ndarray] = {}
    heat: dict[tuple[str, str], np.ndarray] = {}
    for i, path in enumerate(paths[:limit]):
        image_id = str(table["image_id"].iloc[i])
        img = loader(path)
        thumbs[image_id] = resize_to(img, 160, "long") if max(img.shape) > 160 else img
        if explain:
            x = transform(img).unsqueeze(0).to(run.device)
            for j, f in enumerate(run.findings):
                if calls[i, j]:
                    with torch.enable_grad():
                        heat[(image_id, f)] = grad_cam(run.model, x, j)
    return thumbs, (heat or None)
