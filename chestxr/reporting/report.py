"""Evaluation report: HTML (self-contained) + metrics.csv + metrics.json + predictions.csv.

``write_evaluation_report`` turns the output of :func:`chestxr.metrics.evaluate_predictions` and
the arrays it was computed from into files a clinician or auditor can read:

    report.html       per finding: counts, prevalence, AUROC (bootstrap + DeLong CIs), AP, and at
                      the stored threshold sensitivity/specificity/PPV/NPV/F1 with CIs, confusion
                      counts, the calibration promise (flagged when broken), ROC/PR/reliability
                      panels; macro/micro means; subgroup tables; optional multiclass confusion.
    metrics.csv       one row per finding + "macro" + "micro"
    metrics.json      the evaluation dict + model_info + subgroups (+ multiclass)
    predictions.csv   ids, then per finding label_<f> (blank when masked), prob_<f>, pred_<f> (0/1)

The per-study review worklist lives in :mod:`chestxr.review` (re-exported here). Calls are
``score >= threshold`` everywhere. Reports show only what the caller passes: never pass names,
birth dates or other DICOM identifiers in ``predictions``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from chestxr.core.csvsafe import escape_frame
from chestxr.core.fileio import to_jsonable, write_json_atomic, write_text_atomic, write_with_atomic
from chestxr.reporting.plots import plot_finding_panels, plot_reliability_overview, render_template
from chestxr.reporting.review import write_review_report

__all__ = [
    "write_evaluation_report",
    "write_review_report",
    "compute_subgroup_metrics",
    "age_band",
    "build_metrics_table",
    "build_predictions_table",
    "ID_COLUMNS",
]

ID_COLUMNS = ("image_id", "id", "path", "patient_id", "study_id")
DEFAULT_SUBGROUPS = ("view", "sex", "age", "site")
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, math.inf, "80+"))
_CI_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def age_band(ages: Any) -> np.ndarray:
    """Ages in years -> band labels ("0-17", "18-39", "40-59", "60-79", "80+"; "unknown" if missing).

    ages: (n,) numbers or numeric strings. Returns (n,) object array of str.
    """
    import pandas as pd

    values = pd.to_numeric(pd.Series(ages), errors="coerce").to_numpy(dtype=float)
    out = np.full(values.shape, "unknown", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(values >= lo) & (values < hi)] = name
    return out


def _subgroup_values(predictions: Any, column: str) -> tuple[str, np.ndarray] | None:
    """(display name, (n,) str labels) for a subgroup column, or None when the frame lacks it."""
    if column in ("age", "age_band"):
        if "age_band" in predictions.columns:
            raw = predictions["age_band"]
        elif "age" in predictions.columns:
            return "age band", age_band(predictions["age"])
        else:
            return None
    elif column in predictions.columns:
        raw = predictions[column]
    else:
        return None
    labels = np.array(["unknown" if _is_missing(v) else str(v) for v in raw], dtype=object)
    return column, labels


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value) or str(value).strip() == ""
    except (TypeError, ValueError):
        return False


def compute_subgroup_metrics(
    *,
    findings: Sequence[str],
    predictions: Any,
    y_true: np.ndarray,
    mask: np.ndarray,
    y_score: np.ndarray,
    thresholds: np.ndarray,
    subgroup_columns: Sequence[str] = DEFAULT_SUBGROUPS,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per subgroup value: AUROC, sensitivity and specificity with intervals, and the difference from
    the rest of the images with its interval (:func:`chestxr.evaluation.subgroups.subgroup_metrics`;
    patient bootstrap by ``groups``).

    y_true, mask, y_score: (n, f); predictions: DataFrame with n rows holding the subgroup columns
    ("age" is banded, see :func:`age_band`). Returns ``{column: {value: {"n_images", "n_patients",
    "findings": {finding: {n, n_pos, n_neg, auroc(_ci), sensitivity(_ci), specificity(_ci),
    vs_rest}}}}}``; columns absent from the frame are left out.
    """
    from chestxr.evaluation.subgroups import subgroup_metrics

    out: dict[str, dict[str, Any]] = {}
    for column in subgroup_columns:
        got = _subgroup_values(predictions, column)
        if got is None:
            continue
        name, labels = got
        out[name] = subgroup_metrics(
            labels, y_true, y_score, mask, thresholds, groups=groups, findings=findings, n_boot=n_boot,
            level=level, seed=seed,
        )  # fmt: skip
    return out


def build_metrics_table(findings: Sequence[str], evaluation: dict[str, Any]) -> Any:
    """metrics.csv as a DataFrame: one row per finding, then "macro" and "micro".

    Interval keys ``x_ci`` become ``x_lo``/``x_hi`` columns; the promise becomes
    ``promise_sensitivity``, ``promise_specificity``, ``promise_holds`` (blank when none).
    """
    import pandas as pd

    rows = []
    for finding in findings:
        m = evaluation["findings"][finding]
        row: dict[str, Any] = {"finding": finding}
        for key, value in m.items():
            if key == "promise":
                p = value or {}
                row["promise_sensitivity"] = p.get("sensitivity")
                row["promise_specificity"] = p.get("specificity")
                row["promise_holds"] = p.get("holds")
                row["promise_guarantee"] = p.get("guarantee")
                tests = p.get("tests") or []
                row["promise_p_value"] = tests[0].get("p_value") if len(tests) == 1 else None
            elif isinstance(value, (list, tuple, np.ndarray)) and len(value) == 2:
                base = key[:-3] if key.endswith("_ci") else key
                row[f"{base}_lo"], row[f"{base}_hi"] = value[0], value[1]
            elif isinstance(value, dict):
                continue
            else:
                row[key] = value
        rows.append(row)
    for avg in ("macro", "micro"):
        if avg in evaluation:
            rows.append({"finding": avg, **{k: v for k, v in evaluation[avg].items() if not isinstance(v, dict)}})
    frame = pd.DataFrame(rows)
    for col in ("n", "n_pos", "n_neg", "tp", "fp", "tn", "fn"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int64")
    return frame


def build_predictions_table(
    *,
    findings: Sequence[str],
    predictions: Any,
    y_true: np.ndarray,
    mask: np.ndarray,
    y_score: np.ndarray,
    thresholds: np.ndarray,
    groups: np.ndarray | None = None,
    argmax: bool = False,
) -> Any:
    """predictions.csv as a DataFrame: the id columns present in ``predictions`` (image_id, id, path,
    patient_id, study_id; patient_id from ``groups`` when the frame lacks it), then per finding
    ``label_<f>`` (blank where masked), ``prob_<f>`` (score), ``pred_<f>`` (1 if score >= threshold).

    ``argmax`` (mutually exclusive classes, task multiclass): ``predicted_class`` = the argmax of the
    scores (ties to the first class) and ``pred_<c>`` 1 for that class only; thresholds unused."""
    import pandas as pd

    out = pd.DataFrame(index=range(len(y_score)))
    for col in ID_COLUMNS:
        if col in predictions.columns:
            out[col] = predictions[col].to_numpy()
    if "patient_id" not in out.columns and groups is not None:
        out["patient_id"] = np.asarray(groups)
    for j, finding in enumerate(findings):
        label = np.where(mask[:, j], y_true[:, j].astype(float), np.nan)
        finite = label[np.isfinite(label)]
        if np.all(np.isin(finite, (0.0, 1.0))):
            cells = label.astype(object)
            cells[np.isnan(label)] = None
            out[f"label_{finding}"] = pd.array(cells, dtype="Int64")
        else:
            out[f"label_{finding}"] = label
        out[f"prob_{finding}"] = y_score[:, j].astype(float)
        if argmax:
            out[f"pred_{finding}"] = (np.argmax(y_score, axis=1) == j).astype(int)
        elif np.isfinite(thresholds[j]):
            out[f"pred_{finding}"] = (y_score[:, j] >= thresholds[j]).astype(int)
        else:  # no threshold: calls nothing (chestxr.runs.inference.thresholds_from_meta)
            out[f"pred_{finding}"] = "not calibrated"
    return out


def _finding_rows(findings: Sequence[str], evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-finding dicts for the template (metrics + promise state + warnings)."""
    rows = []
    for finding in findings:
        m = dict(evaluation["findings"][finding])
        promise = m.get("promise")
        m["name"] = finding
        if not promise:
            m["promise_state"] = "none"
        elif promise.get("holds") is None:
            m["promise_state"] = "refused"
        else:
            m["promise_state"] = "holds" if promise.get("holds") else "broken"
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
    :func:`chestxr.metrics.evaluate_predictions` on the same arrays; multiclass: the dict from
    :func:`chestxr.metrics.multiclass_metrics` (accuracy + confusion matrix) or None.
    ``n_bins``/``reliability_strategy`` ("uniform" | "quantile"): the reliability diagrams' bins
    (:func:`chestxr.evaluation.reliability.reliability_bins`).
    Returns ``{"html", "metrics_csv", "metrics_json", "predictions_csv"}`` -> paths.
    """
    from chestxr import __version__
    from chestxr.evaluation.reliability import reliability_bins
    from chestxr.evaluation.subgroups import interval_methods

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
        argmax=multiclass is not None,
    )
    if multiclass is not None and len(findings):
        pred_table.insert(len(pred_table.columns) - 3 * len(findings), "predicted_class",
                          np.asarray(findings, dtype=object)[np.argmax(y_score, axis=1)] if len(y_score) else [])  # fmt: skip
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
        broken=[r["name"] for r in rows if r["promise_state"] == "broken"],
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
