"""``evaluate_run``: score a labelled split with a run and write report.html, metrics.csv/json and predictions.csv.

Intervals are bootstrapped by patient; each stored operating point is checked against its promise
(chestxr/evaluation/promise.py). The output folder is staged and swapped in only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np

from chestxr.core.fileio import rebase_paths, staged_output_dir
from chestxr.core.patient_ids import normalize_id
from chestxr.runs.run import Run
from chestxr.runs.workflow_common import (
    BadImagePolicy,
    RunLike,
    as_run,
    bad_image_policy,
    check_not_training_patients,
    labeled_predictions,
    prediction_frame,
    relative_path,
)


def evaluate_run(
    run_dir: RunLike,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    split: Optional[str] = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    overwrite: bool = False,
    batch_size: int = 32,
    num_workers: int = 2,
    cache_dir: Optional[str] = None,
    on_bad_image: str = "error",
    title: Optional[str] = None,
    promise_alpha: float = 0.05,
    reliability_bins: Literal["uniform", "quantile"] = "uniform",
) -> dict[str, Path]:
    """Evaluate on a labeled split and write report.html, metrics.csv/json, predictions.csv.

    ``reliability_bins``: equal-width or quantile bins for the report's reliability diagrams.

    Each stored operating point is checked with a one-sided exact binomial test at false-alarm
    rate ``promise_alpha`` (:mod:`chestxr.evaluation.promise`).

    The folder is built under a temporary name and swapped in only when complete (staged_output_dir);
    a run folder is refused as ``out_dir``."""
    run = as_run(run_dir)
    with staged_output_dir(out_dir, overwrite=overwrite) as staged:
        written = _evaluate_into(
            staged,
            run,
            manifest,
            split=split,
            n_boot=n_boot,
            level=level,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            on_bad_image=bad_image_policy(on_bad_image),
            title=title,
            promise_alpha=promise_alpha,
            reliability_bins=reliability_bins,
        )
    return rebase_paths(written, staged, Path(out_dir))


def _evaluate_into(
    out: Path,
    run: Run,
    manifest: str | Path,
    *,
    split: Optional[str],
    n_boot: int,
    level: float,
    seed: int,
    batch_size: int,
    num_workers: int,
    cache_dir: Optional[str],
    on_bad_image: BadImagePolicy,
    title: Optional[str],
    promise_alpha: float = 0.05,
    reliability_bins: Literal["uniform", "quantile"] = "uniform",
) -> dict[str, Path]:
    """evaluate_run's work, written into the (staged) folder ``out``."""
    from chestxr.evaluation.evaluate import evaluate_predictions
    from chestxr.evaluation.metrics import multiclass_metrics
    from chestxr.reporting.report import write_evaluation_report
    from chestxr.runs.approval import approval_status

    labeled, logits, kept, skipped = labeled_predictions(
        run,
        manifest,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        on_bad_image=on_bad_image,
    )
    overlap = check_not_training_patients(run, labeled.patient_ids[kept], force=True, what="evaluation")
    findings = run.findings
    scores = run.scores_from_logits(logits)
    thresholds = run.thresholds
    y_true, mask = labeled.eval_true[kept], labeled.eval_mask[kept]
    groups = np.array([normalize_id(p) for p in labeled.patient_ids[kept]], dtype=object)  # bootstrap clusters
    promised = {r.finding: r.to_dict() for r in (run.metadata.thresholds or [])} or None
    evaluation = evaluate_predictions(
        y_true,
        scores,
        mask,
        thresholds,
        findings,
        groups=groups,
        n_boot=n_boot,
        level=level,
        seed=seed,
        promised=promised,
        promise_alpha=promise_alpha,
    )
    for name, status in zip(findings, run.metadata.threshold_status()):
        evaluation["findings"][name]["threshold_status"] = status  # shown beside the finding, metrics.csv/json
    multiclass = None
    if run.task == "multiclass":
        rows = mask.all(axis=1) & (y_true.sum(axis=1) == 1)
        multiclass = multiclass_metrics(y_true[rows], scores[rows])
    frame = labeled.frame.iloc[kept].reset_index(drop=True)
    predictions = prediction_frame(frame, findings, scores, Path(manifest).parent)
    model_info = {
        "run": str(run.run_dir),
        "backbone": run.metadata.backbone,
        "mode": run.metadata.mode,
        "task": run.metadata.task,
        "findings": findings,
        "calibrated": run.calibrated,
        "model_version": run.metadata.version,
        "manifest": str(manifest),
        "split": split,
        "manifest_hash": labeled.manifest_hash,
        "training_patient_overlap": overlap.count,
        "training_patient_overlap_text": overlap.describe(),
        "n_patients_scored": overlap.n_patients,
        "n_skipped": len(skipped),
        "skipped": [{"path": relative_path(labeled.paths[i], Path(manifest).parent), "reason": r} for i, r in skipped],
    }
    return write_evaluation_report(
        out,
        findings=findings,
        predictions=predictions,
        y_true=y_true,
        mask=mask,
        y_score=scores,
        thresholds=thresholds,
        groups=groups,
        evaluation=evaluation,
        model_info=model_info,
        title=title or f"chestxr evaluation: {Path(manifest).name}",
        multiclass=multiclass,
        reliability_strategy=reliability_bins,
        approval=approval_status(run.run_dir, run.metadata),
    )
