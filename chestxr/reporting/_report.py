"""Evaluation report: HTML (self-contained) + metrics.csv + metrics.json + predictions.csv.

``write_evaluation_report`` turns the output of :func:`chestxr.evaluation.evaluate_predictions` and
the arrays it was computed from into files a clinician or auditor can read:

    report.html       per finding: counts, prevalence, AUROC (bootstrap + DeLong CIs), AP, and at
                      the stored threshold sensitivity/specificity/PPV/NPV/F1 with CIs, confusion
                      counts, the check of the stored operating point (a guaranteed promise: one-sided
                      test by patient, Holm across findings, red only when contradicted, "not
                      contradicted" with the test's power otherwise; a point rule: calibration estimate
                      beside the test value, "moved" in a neutral colour when a two-sample test by patient
                      rejects after Holm), ROC/PR/reliability
                      panels; macro/micro means; subgroup tables; optional multiclass confusion.
    metrics.csv       one row per finding + "macro" + "micro"
    metrics.json      the evaluation dict + model_info + subgroups (+ multiclass)
    predictions.csv   ids, then per finding label_<f> (blank when masked), prob_<f>, call_<f> ("positive",
                      "negative", "not calibrated"), as the review worklist writes it

Calls are made by the one decision rule (:func:`chestxr.evaluation.decide`) everywhere. Reports show only
what the caller passes: never pass names, birth dates or other DICOM identifiers in ``predictions``.
The tables (metrics.csv, predictions.csv, subgroup metrics) are built in chestxr/reporting/_tables.py.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from chestxr.core import escape_frame, to_jsonable, write_json_atomic, write_text_atomic, write_with_atomic
from chestxr.reporting._plots import plot_finding_panels, plot_reliability_overview, render_template
from chestxr.reporting._tables import (
    DEFAULT_SUBGROUPS,
    build_metrics_table,
    build_predictions_table,
    compute_subgroup_metrics,
)

_CI_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _finding_rows(findings: Sequence[str], evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-finding dicts for the template (metrics + promise state + warnings)."""
    rows = []
    for finding in findings:
        m = dict(evaluation["findings"][finding])
        promise = m.get("promise")
        m["name"] = finding
        m["promise_state"] = promise.get("state", "none") if promise else "none"
        m["undefined"] = not (m.get("n_pos") and m.get("n_neg"))
        for key in ("auroc", "auroc_delong", *_CI_KEYS):
            ci = m.get(f"{key}_ci") or (None, None)
            m[f"{key}_lo"], m[f"{key}_hi"] = ci[0], ci[1]
        rows.append(m)
    return rows


def _model_info_rows(model_info: dict[str, Any]) -> list[tuple[str, str]]:
    """Flat (key, text) pairs; nested values shown as compact JSON."""
    rows = []
    for key, value in model_info.items():
        if isinstance(value, (dict, list, tuple)):
            text = json.dumps(to_jsonable(value), sort_keys=True)
            text = text if len(text) <= 400 else text[:400] + " ..."
        else:
            text = str(value)
        rows.append((str(key), text))
    return rows


def write_evaluation_report(
    out_dir: str | Path,
    *,
    findings: Sequence[str],
    predictions: Any,
    y_true: np.ndarray,
    mask: np.ndarray,
    y_score: np.ndarray,
    thresholds: np.ndarray,
    groups: np.ndarray | None,
    evaluation: dict[str, Any],
    subgroup_columns: Sequence[str] = DEFAULT_SUBGROUPS,
    model_info: dict[str, Any] | None = None,
    title: str = "chestxr evaluation",
    multiclass: dict[str, Any] | None = None,
    n_bins: int = 10,
    reliability_strategy: Literal["uniform", "quantile"] = "uniform",
    approval: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.html, metrics.csv, metrics.json and predictions.csv into ``out_dir`` (atomically).

    findings: f names; predictions: DataFrame with n rows (id columns, optional view/sex/age/site);
    y_true (n, f) labels in {0, 1}; mask (n, f) bool, True where the label counts; y_score (n, f)
    probabilities; thresholds (f,); groups (n,) patient ids or None; evaluation: the dict from
    :func:`chestxr.evaluation.evaluate_predictions` on the same arrays; multiclass: the dict from
    :func:`chestxr.evaluation.multiclass_metrics` (accuracy + confusion matrix) or None.
    ``n_bins``/``reliability_strategy`` ("uniform" | "quantile"): the reliability diagrams' bins
    (:func:`chestxr.evaluation.reliability_bins`).
    Returns ``{"html", "metrics_csv", "metrics_json", "predictions_csv"}`` -> paths.
    """
    from chestxr import __version__
    from chestxr.evaluation import interval_methods, reliability_bins

    findings = list(findings)
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=float).reshape(-1)
    n, f = y_score.shape if y_score.ndim == 2 else (len(y_score), -1)
    if y_score.ndim != 2 or f != len(findings) or y_true.shape != (n, f) or mask.shape != (n, f):
        raise ValueError(
            f"y_true {y_true.shape}, mask {mask.shape} and y_score {y_score.shape} must all be "
            f"(n, {len(findings)}) for findings {findings}"
        )
    if thresholds.shape != (f,) or len(predictions) != n:
        raise ValueError(
            f"thresholds {thresholds.shape} must be ({f},) and predictions must have {n} rows (got {len(predictions)})"
        )
    missing = [x for x in findings if x not in evaluation.get("findings", {})]
    if missing:
        raise ValueError(f"evaluation has no metrics for {missing}; pass evaluate_predictions(...) for these findings")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_info = dict(model_info or {})

    subgroups = compute_subgroup_metrics(
        findings=findings,
        predictions=predictions,
        y_true=y_true,
        mask=mask,
        y_score=y_score,
        thresholds=thresholds,
        subgroup_columns=subgroup_columns,
        groups=groups,
        n_boot=int(evaluation.get("n_boot", 1000)),
        level=float(evaluation.get("level", 0.95)),
    )
    subgroup_methods = interval_methods(float(evaluation.get("level", 0.95)), int(evaluation.get("n_boot", 1000)))
    panels, curves = {}, {}
    for j, finding in enumerate(findings):
        keep = mask[:, j]
        yt, ys = (y_true[keep, j] >= 0.5).astype(int), y_score[keep, j]
        curve = reliability_bins(yt, ys, n_bins=n_bins, strategy=reliability_strategy) if yt.size else None
        if curve is not None:
            curves[finding] = curve
        panels[finding] = plot_finding_panels(
            finding=finding, y_true=yt, y_score=ys, threshold=float(thresholds[j]), reliability=curve
        )

    paths = {
        "html": out / "report.html",
        "metrics_csv": out / "metrics.csv",
        "metrics_json": out / "metrics.json",
        "predictions_csv": out / "predictions.csv",
    }
    metrics_table = build_metrics_table(findings, evaluation)
    write_with_atomic(paths["metrics_csv"], lambda tmp: escape_frame(metrics_table).to_csv(tmp, index=False))
    pred_table = build_predictions_table(
        findings=findings,
        predictions=predictions,
        y_true=y_true,
        mask=mask,
        y_score=y_score,
        thresholds=thresholds,
        groups=groups,
        multiclass=multiclass is not None,
    )
    write_with_atomic(paths["predictions_csv"], lambda tmp: escape_frame(pred_table).to_csv(tmp, index=False))
    doc = {
        **evaluation,
        "title": title,
        "model_info": model_info,
        "subgroups": subgroups,
        "subgroup_intervals": subgroup_methods,
        "thresholds": dict(zip(findings, thresholds.tolist())),
        "chestxr_version": __version__,
        "approval": approval,
    }
    if multiclass is not None:
        doc["multiclass"] = multiclass
    write_json_atomic(paths["metrics_json"], doc)

    rows = _finding_rows(findings, evaluation)
    n_patients = evaluation.get("n_patients")
    if n_patients is None and groups is not None:
        n_patients = len(set(np.asarray(groups).tolist()))
    html = render_template(
        "report.html",
        title=title,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        model_info=_model_info_rows(model_info),
        n_images=evaluation.get("n_images", n),
        n_patients=n_patients,
        level=evaluation.get("level", 0.95),
        n_boot=evaluation.get("n_boot"),
        promise_alpha=evaluation.get("promise_alpha", 0.05),
        approval=approval,
        findings=rows,
        contradicted=[r["name"] for r in rows if r["promise_state"] == "contradicted"],
        moved=[r["name"] for r in rows if r["promise_state"] == "moved"],
        promise_summary=evaluation.get("promise_summary"),
        averages=[(name, evaluation[name]) for name in ("macro", "micro") if name in evaluation],
        panels=panels,
        calibration_overview=plot_reliability_overview(curves),
        subgroups=subgroups,
        subgroup_intervals=subgroup_methods,
        multiclass=_multiclass_context(multiclass, findings),
        overlap=_overlap_context(model_info),
    )
    write_text_atomic(paths["html"], html)
    return paths


def _overlap_context(model_info: dict[str, Any]) -> dict[str, Any] | None:
    """{"count", "n_patients", "text"} from model_info's training_patient_overlap* keys, or None."""
    if "training_patient_overlap" not in model_info:
        return None
    count = model_info.get("training_patient_overlap")
    n = model_info.get("n_patients_scored")
    text = model_info.get("training_patient_overlap_text") or (
        f"{count} of {n} patients" if count is not None else "unknown"
    )
    return {"count": count, "n_patients": n, "text": text}


def _multiclass_context(multiclass: dict[str, Any] | None, classes: Sequence[str]) -> dict[str, Any] | None:
    """Accuracy, per-class recall and the confusion matrix (rows: true class, columns: predicted)."""
    if multiclass is None:
        return None
    cm = np.asarray(multiclass.get("confusion_matrix", []), dtype=int)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"multiclass confusion_matrix has shape {cm.shape}, expected {(len(classes),) * 2}")
    recall = multiclass.get("per_class_recall")
    if isinstance(recall, dict):
        recall = [recall.get(c) for c in classes]
    recall = list(recall) if recall is not None else [None] * len(classes)
    return {
        "accuracy": multiclass.get("accuracy"),
        "classes": list(classes),
        "rows": [(c, cm[i].tolist(), recall[i]) for i, c in enumerate(classes)],
    }
