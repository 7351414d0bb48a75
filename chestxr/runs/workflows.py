"""The clinical-review workflows on a run folder: calibrate thresholds, evaluate on a split,
predict new studies into a review worklist. Each returns what it wrote; the CLI only parses.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core.errors import CalibrationError, ConfigError, ManifestError
from chestxr.core.fileio import rebase_paths, staged_output_dir
from chestxr.core.patient_ids import Overlap, normalize_id, training_overlap
from chestxr.data.labels import LabeledSet, load_labeled_set
from chestxr.modeling.run_metadata import ThresholdRecord
from chestxr.runs.calibration_plan import plan_calibration
from chestxr.runs.run import Run
from chestxr.runs.threshold_history import keep_previous_thresholds

RunLike = Run | str | Path
BadImagePolicy = Literal["error", "skip"]


def _choice(value: str, allowed: tuple[str, ...], name: str) -> Any:
    """``value`` if it is one of ``allowed`` (typed as the matching Literal), else a ConfigError."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _bad_image_policy(value: str) -> BadImagePolicy:
    return _choice(value, ("error", "skip"), "on_bad_image")


def _as_run(run: RunLike) -> Run:
    """A loaded Run (``run`` itself, or the run folder it names)."""
    return run if isinstance(run, Run) else Run.load(run)


def _labeled_predictions(
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


def _check_not_training_patients(run: Run, patients: np.ndarray, *, force: bool, what: str) -> Overlap:
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

    run = _as_run(run_dir)
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
    labeled, logits, kept, skipped = _labeled_predictions(
        run,
        manifest,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        on_bad_image=_bad_image_policy(on_bad_image),
    )
    n_overlap = _check_not_training_patients(run, labeled.patient_ids[kept], force=force, what="calibration")
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
    run = _as_run(run_dir)
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
            on_bad_image=_bad_image_policy(on_bad_image),
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

    labeled, logits, kept, skipped = _labeled_predictions(
        run,
        manifest,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
        on_bad_image=on_bad_image,
    )
    overlap = _check_not_training_patients(run, labeled.patient_ids[kept], force=True, what="evaluation")
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
    predictions = _prediction_frame(frame, findings, scores, Path(manifest).parent)
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
        "skipped": [{"path": _relative(labeled.paths[i], Path(manifest).parent), "reason": r} for i, r in skipped],
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


def _relative(path: str, base: Path) -> str:
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


def _prediction_frame(frame: pd.DataFrame, findings: list[str], scores: np.ndarray, base: Path) -> pd.DataFrame:
    """image_id, path (relative to the manifest folder), patient_id, study_id, metadata, prob_<finding>."""
    out = pd.DataFrame(
        {
            "image_id": [_relative(p, base) for p in frame["path"].astype(str)],
            "path": [_relative(p, base) for p in frame["path"].astype(str)],
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

    run = _as_run(run_dir)
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
            study_reduce=_choice(study_reduce, ("max", "mean"), "study_reduce"),
            explain=explain,
            batch_size=batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            on_bad_image=_bad_image_policy(on_bad_image),
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
    table = _prediction_frame(frame.iloc[kept].reset_index(drop=True), run.findings, scores, base)
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
    left_out = [(str(p), r) for p, r in skipped] + [(_relative(p, base), r) for p, r in passed]
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
