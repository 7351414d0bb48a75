"""The tables of the reports: the per-image prediction table the workflows hand to the reports
(:func:`image_table`: ids, paths relative to the manifest, metadata, prob_<finding>), and the evaluation
report's metrics.csv (one row per finding, then macro/micro), predictions.csv (ids, labels, scores, calls) and
per-subgroup metrics (view, sex, age band, site) with patient-bootstrap intervals.

Arrays are (n, f): n images, f findings.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from chestxr.data import relative_paths
from chestxr.evaluation import decide, subgroup_metrics

ID_COLUMNS = ("image_id", "id", "path", "patient_id", "study_id")
DEFAULT_SUBGROUPS = ("view", "sex", "age", "site")
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, math.inf, "80+"))


def age_band(ages: Any) -> np.ndarray:
    """Ages in years -> band labels ("0-17", "18-39", "40-59", "60-79", "80+"; "unknown" if missing).

    ages: (n,) numbers or numeric strings. Returns (n,) object array of str.
    """
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
    the rest of the images with its interval (:func:`chestxr.evaluation.subgroup_metrics`;
    patient bootstrap by ``groups``).

    y_true, mask, y_score: (n, f); predictions: DataFrame with n rows holding the subgroup columns
    ("age" is banded, see :func:`age_band`). Returns ``{column: {value: {"n_images", "n_patients",
    "findings": {finding: {n, n_pos, n_neg, auroc(_ci), sensitivity(_ci), specificity(_ci),
    vs_rest}}}}}``; columns absent from the frame are left out.
    """
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
    ``promise_sensitivity``, ``promise_specificity`` (the promised or point values), ``promise_state`` (not_contradicted,
    contradicted, moved, not_moved, not_tested, not_checked, refused), ``promise_guarantee``, ``promise_p_value``,
    ``promise_p_holm`` and ``promise_power`` (guaranteed promises; blank otherwise), blank when none.
    """
    rows = []
    for finding in findings:
        m = evaluation["findings"][finding]
        row: dict[str, Any] = {"finding": finding}
        for key, value in m.items():
            if key == "promise":
                p = value or {}
                row["promise_sensitivity"] = p.get("sensitivity")
                row["promise_specificity"] = p.get("specificity")
                row["promise_state"] = p.get("state")
                row["promise_guarantee"] = p.get("guarantee")
                row["promise_p_value"] = p.get("p_value")
                row["promise_p_holm"] = p.get("p_holm")
                row["promise_power"] = p.get("power")
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
    multiclass: bool = False,
) -> Any:
    """predictions.csv as a DataFrame: the id columns present in ``predictions`` (image_id, id, path,
    patient_id, study_id; patient_id from ``groups`` when the frame lacks it), then per finding
    ``label_<f>`` (blank where masked), ``prob_<f>`` (score) and ``call_<f>`` ("positive", "negative" or
    "not calibrated": :func:`chestxr.evaluation.decide`, the rule predict and the worklist use).

    ``multiclass`` (mutually exclusive classes, task multiclass): ``predicted_class`` = the argmax of the
    scores (ties to the first class) before the finding columns, and ``call_<c>`` positive for that class only."""
    out = pd.DataFrame(index=range(len(y_score)))
    for col in ID_COLUMNS:
        if col in predictions.columns:
            out[col] = predictions[col].to_numpy()
    if "patient_id" not in out.columns and groups is not None:
        out["patient_id"] = np.asarray(groups)
    decisions = decide(y_score, thresholds, multiclass=multiclass) if len(findings) else None
    if multiclass and decisions is not None:
        out["predicted_class"] = decisions.class_names(findings)
    calls = decisions.labels() if decisions is not None else np.zeros((len(out), 0), dtype=object)
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
        out[f"call_{finding}"] = calls[:, j]
    return out


def image_table(frame: pd.DataFrame, findings: Sequence[str], scores: np.ndarray, base: Any) -> pd.DataFrame:
    """The per-image table the reports start from: image_id and path (relative to ``base``, the manifest's
    folder or the predicted folder; an image outside it keeps its absolute path: see
    :func:`chestxr.data.relative_paths`), patient_id, study_id (the image_id where there is none: one study
    per image), view/sex/age/site when present, then prob_<finding>. frame: n manifest-like rows (absolute
    ``path``); scores: (n, f)."""
    rel = relative_paths(frame["path"].astype(str).tolist(), base, outside="absolute")
    out = pd.DataFrame(
        {
            "image_id": rel,
            "path": rel,
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
