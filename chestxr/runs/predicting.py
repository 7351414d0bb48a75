"""``predict_run``: predict a manifest or image files/folders with a run and write the review worklist.

review.html (per-image and per-study cards, thumbnails, optional Grad-CAM maps), predictions and skipped.csv; the
output folder is staged and swapped in only when complete. The PACS floor (chestxr/pacs) calls it per study.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core.errors import ManifestError
from chestxr.core.fileio import rebase_paths, staged_output_dir
from chestxr.runs.run import Run
from chestxr.runs.workflow_common import (
    BadImagePolicy,
    RunLike,
    as_run,
    bad_image_policy,
    choice,
    prediction_frame,
    relative_path,
)


def predict_run(
    run_dir: RunLike,
    out_dir: str | Path,
    *,
    manifest: Optional[str | Path] = None,
    inputs: Sequence[str] = (),
    study_reduce: str = "max",
    explain: bool = False,
    overwrite: bool = False,
    batch_size: int = 32,
    num_workers: int = 2,
    cache_dir: Optional[str] = None,
    on_bad_image: str = "error",
    max_thumbnails: int = 500,
    require_approval: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
) -> dict[str, Path]:
    """Predict a manifest or files/folders (DICOM folders need no manifest) and write the review worklist.

    skipped: (path, reason) of files the caller already left out (a PACS study's non-image instances),
    added to skipped.csv. heatmaps_out: with ``explain``, filled with the Grad-CAM maps
    {(image_id, finding): (h, w) [0, 1]} (the PACS floor turns them into Secondary Captures).

    A run with ``task: multiclass`` gets one class per image and per study: the argmax of the
    calibrated scores, ties to the first class (predicted_class / predicted_score columns); the
    per-class thresholds are used only with ``abstain`` (no class when the top score is below its
    class's threshold). ``abstain`` on any other task is a ConfigError.

    review.html carries the run's approval status (:mod:`chestxr.runs.approval`); with
    ``require_approval`` a run that is not approved is refused (ApprovalError) before any work.

    The folder is built under a temporary name and swapped in only when complete (staged_output_dir);
    a run folder is refused as ``out_dir``."""
    from chestxr.runs.approval import approval_status
    from chestxr.runs.approval import require_approval as _require

    run = as_run(run_dir)
    if abstain and run.task != "multiclass":
        from chestxr.core.errors import ConfigError

        raise ConfigError(
            f"{run.run_dir}: --abstain applies to mutually exclusive classes (task: multiclass); this run's "
            f"task is {run.task}: its findings are called at their thresholds"
        )
    meta = run.metadata
    approval = _require(run.run_dir, meta) if require_approval else approval_status(run.run_dir, meta)
    with staged_output_dir(out_dir, overwrite=overwrite) as staged:
        written = _predict_into(
            staged,
            run,
            manifest=manifest,
            inputs=inputs,
            study_reduce=choice(study_reduce, ("max", "mean"), "study_reduce"),
            explain=explain,
            batch_size=batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            on_bad_image=bad_image_policy(on_bad_image),
            max_thumbnails=max_thumbnails,
            approval=approval,
            skipped=skipped,
            heatmaps_out=heatmaps_out,
            abstain=abstain,
        )
    return rebase_paths(written, staged, Path(out_dir))


def _predict_into(
    out: Path,
    run: Run,
    *,
    manifest: Optional[str | Path],
    inputs: Sequence[str],
    study_reduce: Literal["max", "mean"],
    explain: bool,
    batch_size: int,
    num_workers: int,
    cache_dir: Optional[str],
    on_bad_image: BadImagePolicy,
    max_thumbnails: int,
    approval: Optional[dict[str, Any]] = None,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
) -> dict[str, Path]:
    """predict_run's work, written into the (staged) folder ``out``."""
    from chestxr.imaging.inputs import study_keys_for_files, walk_inputs
    from chestxr.reporting.review import write_review_report

    not_images: list[tuple[str, str]] = []
    if manifest is not None:
        from chestxr.data.manifest import read_manifest

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
    preds = run.logits(
        paths, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, on_bad_image=on_bad_image
    )
    kept = preds.indices
    scores = run.scores_from_logits(preds.logits)
    table = prediction_frame(frame.iloc[kept].reset_index(drop=True), run.findings, scores, base)
    thresholds = run.thresholds
    multiclass = run.task == "multiclass"
    if multiclass:  # Grad-CAM for the predicted class only (a threshold of 0 marks it, +inf the rest)
        from chestxr.evaluation.decisions import argmax_decision, one_hot_calls

        idx, _ = argmax_decision(scores, thresholds, abstain=abstain)
        cam_scores = one_hot_calls(idx, len(run.findings)).astype(float)
        cam_thresholds = np.full(len(run.findings), 0.5)
    else:
        cam_scores, cam_thresholds = scores, thresholds
    thumbs, heat = _thumbnails_and_cams(
        run, [paths[i] for i in kept], table, cam_scores, cam_thresholds, explain=explain, limit=max_thumbnails
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
        approval=approval,
        multiclass=multiclass,
        abstain=abstain,
    )
    passed = not_images + [(paths[i], r) for i, r in preds.skipped]
    left_out = [(str(p), r) for p, r in skipped] + [(relative_path(p, base), r) for p, r in passed]
    if left_out:
        frame_skipped = pd.DataFrame({"path": [p for p, _ in left_out], "reason": [r for _, r in left_out]})
        from chestxr.core.csvsafe import escape_frame
        from chestxr.core.fileio import write_text_atomic

        write_text_atomic(out / "skipped.csv", escape_frame(frame_skipped).to_csv(index=False))
        written["skipped"] = out / "skipped.csv"
    return written


def _thumbnails_and_cams(
    run: Run,
    paths: list[str],
    table: pd.DataFrame,
    scores: np.ndarray,
    thresholds: np.ndarray,
    *,
    explain: bool,
    limit: int,
):
    """Small thumbnails for the review cards and, with ``explain``, a Grad-CAM map per positive finding."""
    import torch

    from chestxr.imaging.cache import build_image_loader
    from chestxr.imaging.transforms import build_transform, resize_to

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
            from chestxr.reporting.gradcam import grad_cam

            x = transform(img).unsqueeze(0).to(run.device)
            for j, f in enumerate(run.findings):
                if scores[i, j] >= thresholds[j]:
                    with torch.enable_grad():
                        heat[(image_id, f)] = grad_cam(run.model, x, j)
    return thumbs, (heat or None)
