"""``calibrate_run``: fit per-finding thresholds (and optionally probability calibration) on a held-out split of a run.

The new thresholds become a new version of model.json, written with thresholds.json in one transaction under the
run folder's lock; stored thresholds are kept where the split cannot replace them (chestxr/runs/threshold_history.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from chestxr.core.patient_ids import normalize_id
from chestxr.modeling.run_metadata import ThresholdRecord
from chestxr.runs.calibration_plan import plan_calibration
from chestxr.runs.threshold_history import keep_previous_thresholds
from chestxr.runs.workflow_common import (
    RunLike,
    as_run,
    bad_image_policy,
    check_not_training_patients,
    labeled_predictions,
)


def calibrate_run(
    run_dir: RunLike,
    manifest: str | Path,
    *,
    split: Optional[str] = None,
    method: Optional[str] = None,
    per_finding: Optional[dict[str, str]] = None,
    probability: Optional[str] = None,
    n_boot: Optional[int] = None,
    level: Optional[float] = None,
    confidence: float = 0.95,
    seed: int = 0,
    force: bool = False,
    batch_size: int = 32,
    num_workers: int = 2,
    cache_dir: Optional[str] = None,
    on_bad_image: str = "error",
) -> dict[str, Any]:
    """Fit per-finding thresholds (and optionally probability calibration) on a held-out split,
    store them as a new version of model.json and in thresholds.json. Returns the thresholds.json data.

    The rules are the run's own ``calibration`` config (the preset it was trained with: method,
    per_finding, probability, n_bootstrap, ci_level) unless given here; None = not given
    (:func:`chestxr.runs.calibration_plan.plan_calibration`; ``probability="none"`` switches a
    configured calibrator off). thresholds.json records them under ``rules`` with their source.

    thresholds.json: {run, manifest, split, manifest_hash, n_images, n_patients, ci_level,
    confidence, interval_method, n_boot, ..., "thresholds": [record per finding]}. Each record is
    :meth:`chestxr.evaluation.thresholds.ThresholdFit.to_dict` plus auroc_ci / f1_ci (bootstrap by
    patient, with ``*_ci_n_valid``). The fields other tools read:
    ``finding``, ``method`` (e.g. "sensitivity:0.9", "youden", "sensitivity:0.9@point"),
    ``threshold`` (null when refused), ``status`` ("guaranteed" | "not_a_guarantee" |
    "insufficient_data" | "unreachable" | "undefined"), ``guarantee`` (bool), ``target`` (X),
    ``confidence``, ``lower_bound`` (one-sided Clopper-Pearson bound at the threshold),
    ``n_pos``, ``n_neg``, ``n_needed`` (samples needed for the guarantee), ``note`` (why refused),
    ``<rate>`` and ``<rate>_ci`` (two-sided exact, ``level``).

    A stored threshold is never lost silently: where the split has no usable labels for a finding,
    its previous record is kept (``kept_from_version``, ``kept_note``; listed in ``kept_previous``);
    any other null replacing a stored threshold is a CalibrationError unless ``force``."""
    from chestxr.evaluation.bootstrap import bootstrap_intervals
    from chestxr.evaluation.thresholds import fit_thresholds
    from chestxr.modeling.checkpoint import update_metadata

    run = as_run(run_dir)
    plan = plan_calibration(
        run.metadata,
        run.run_dir / "model.json",
        method=method,
        per_finding=per_finding,
        probability=probability,
        n_boot=n_boot,
        level=level,
    )
    probability, n_boot, level = plan.probability, plan.n_boot, plan.level
    labeled, logits, kept, skipped = labeled_predictions(
        run,
        manifest,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        on_bad_image=bad_image_policy(on_bad_image),
    )
    n_overlap = check_not_training_patients(run, labeled.patient_ids[kept], force=force, what="calibration")
    findings = run.findings
    y_true, mask = labeled.eval_true[kept], labeled.eval_mask[kept]
    groups = np.array([normalize_id(p) for p in labeled.patient_ids[kept]], dtype=object)  # bootstrap clusters
    prob_record, ece = None, {}
    if probability:
        from chestxr.evaluation.probability import compare_ece, fit_probability_calibrator

        cal = fit_probability_calibrator(logits, y_true, mask, method=probability)
        calibrated = cal.apply(logits)
        prob_record = cal.to_dict()
        for row, j in zip(compare_ece(logits, y_true, mask, cal, findings=findings), range(len(findings))):
            m = mask[:, j]
            if m.sum() and 0 < y_true[m, j].sum() < m.sum():  # both classes: ECE is informative
                ece[row["finding"]] = {"before": row["ece_before"], "after": row["ece_after"]}
        scores = np.asarray(calibrated, dtype=np.float64)
    else:
        scores = run.scores_from_logits(logits, calibrated=False)
    fits = fit_thresholds(
        y_true, scores, mask, plan.spec(), findings=findings, confidence=confidence, groups=groups, level=level
    )
    thresholds = np.array([f.threshold for f in fits], dtype=np.float64)
    boot = bootstrap_intervals(
        y_true,
        scores,
        mask,
        thresholds,
        groups=groups,
        n_boot=n_boot,
        level=level,
        seed=seed,
        findings=findings,
        keys=("auroc", "f1"),
    )
    records = []
    for j, fit in enumerate(fits):
        rec = fit.to_dict()
        for key in ("auroc", "f1"):
            rec[f"{key}_ci"] = [float(x) for x in boot[key]["ci"][j]]
            rec[f"{key}_ci_n_valid"] = int(boot[key]["n_valid"][j])
        if fit.finding in ece:
            rec["ece"] = ece[fit.finding]
        records.append(rec)
    kept_previous = keep_previous_thresholds(run, records, prob_record, manifest=manifest, split=split, force=force)
    data = {
        "run": str(run.run_dir),
        "manifest": str(manifest),
        "split": split,
        "manifest_hash": labeled.manifest_hash,
        "n_images": int(len(kept)),
        "n_skipped": len(skipped),
        "n_patients": int(len(set(groups.tolist()))),
        "ci_level": level,
        "confidence": confidence,
        "interval_method": "clopper-pearson (effective counts by patient)",
        "n_boot": n_boot,
        "training_patient_overlap": n_overlap.count,
        "training_patient_overlap_text": n_overlap.describe(),
        "forced": bool(force and n_overlap.count),
        "probability_calibration": prob_record["method"] if prob_record else None,
        "kept_previous": kept_previous,
        "rules": plan.to_dict(),
        "thresholds": records,
    }
    # thresholds.json and model.json: one transaction under the run folder's lock, version taken there
    new = update_metadata(
        run.run_dir,
        {
            "thresholds": [ThresholdRecord.from_dict(r) for r in records],
            "probability_calibration": prob_record,
            "calibration": {k: v for k, v in data.items() if k != "thresholds"},
        },
        reason=f"calibrate on {Path(manifest).name}" + (f" split={split}" if split else ""),
        companions=lambda version: {"thresholds.json": {**data, "model_version": version}},
    )
    data["model_version"] = new.version
    return data
