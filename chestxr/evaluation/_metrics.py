"""Per-finding point metrics: AUROC, AP, sensitivity/specificity/PPV/NPV/F1 at a threshold, DeLong
(image-level) intervals. Calibration error and reliability bins: :mod:`.reliability`. Intervals for proportions: :mod:`.intervals`; the
patient bootstrap: :mod:`.bootstrap`; ``evaluate_predictions`` (the one call the report uses):
:mod:`.evaluate`.

Conventions (shared with thresholds.py): ``y_true`` (n_samples, n_findings) 0/1 (soft labels are
binarised at >= 0.5), ``y_score`` (n_samples, n_findings) probabilities, ``mask`` (n_samples,
n_findings) bool, True = label known (masked entries are left out of everything), ``groups``
(n_samples,) patient ids. A sample is called positive when ``score >= threshold``. Undefined
metrics are NaN; a finding with one class only also warns with :class:`UndefinedMetricWarning`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from chestxr.core import ChestXRError

METRIC_NAMES = ("sensitivity", "specificity", "ppv", "npv", "f1")


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data given (e.g. one class only) and was set to NaN."""


class MetricInputError(ChestXRError, ValueError):
    """Arrays given to a metric have the wrong shape or hold NaN/inf where numbers are needed."""


# ----------------------------------------------------------------------------- input checks
def as_binary_pair(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """(y bool (n,), s float64 (n,)) from 1-D inputs; labels binarised at >= 0.5."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise MetricInputError(f"y_true and y_score must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise MetricInputError("y_true/y_score hold NaN or inf; mask unknown labels instead")
    return y >= 0.5, s


def as_matrices(y_true: Any, y_score: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y bool (n, f), S float64 (n, f), M bool (n, f)); 1-D inputs become one finding.

    Masked entries may hold anything (NaN included); they are zeroed and never read."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    s = s[:, None] if s.ndim == 1 else s
    if y.ndim != 2 or s.shape != y.shape:
        raise MetricInputError(f"y_true and y_score must both be (n_samples, n_findings), got {y.shape} and {s.shape}")
    if mask is None:
        m = np.ones(y.shape, dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)
        m = m[:, None] if m.ndim == 1 else m
        if m.shape != y.shape:
            raise MetricInputError(f"mask shape {m.shape} does not match y_true {y.shape}")
    bad = m & ~(np.isfinite(y) & np.isfinite(s))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise MetricInputError(f"{int(bad.sum())} unmasked entries hold NaN/inf (first: row {i}, finding {j})")
    return np.where(m, y, 0.0) >= 0.5, np.where(m, s, 0.0), m


def warn_one_class(n_pos: int, n_neg: int, what: str, name: str | None, stacklevel: int = 3) -> None:
    where = f"{name}: " if name else ""
    warnings.warn(
        f"{where}{what} undefined with {n_pos} positive and {n_neg} negative samples; set to NaN",
        UndefinedMetricWarning,
        stacklevel=stacklevel,
    )


def ratio(num: Any, den: Any) -> Any:
    """num / den, NaN where den == 0 (scalars or arrays)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def rates_from_counts(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, F1 from confusion counts (scalars or equal-shape arrays)."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


# ----------------------------------------------------------------------------- point metrics
def binary_metrics_at(
    y_true: Any, y_score: Any, threshold: float, *, name: str | None = None, warn: bool = True
) -> dict[str, Any]:
    """Confusion counts and rates at ``threshold`` (positive when score >= threshold).

    y_true, y_score: (n_samples,). Returns n, n_pos, n_neg, prevalence, tp, fp, tn, fn (NaN when
    the threshold is NaN), sensitivity, specificity, ppv, npv, f1, accuracy (NaN where undefined).
    """
    y, s = as_binary_pair(y_true, y_score)
    n, n_pos = int(y.size), int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "prevalence": ratio(n_pos, n)}
    if warn and (n_pos == 0 or n_pos == n):
        warn_one_class(n_pos, n - n_pos, "sensitivity/specificity", name)
    if threshold is None or not math.isfinite(float(threshold)):
        out.update(tp=math.nan, fp=math.nan, tn=math.nan, fn=math.nan)
        out.update({k: math.nan for k in METRIC_NAMES}, accuracy=math.nan)
        return out
    pred = s >= float(threshold)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = n_pos - tp, n - n_pos - fp
    out.update(tp=tp, fp=fp, tn=tn, fn=fn, **rates_from_counts(tp, fp, tn, fn), accuracy=ratio(tp + tn, n))
    return out


def auroc(y_true: Any, y_score: Any, *, name: str | None = None) -> float:
    """Area under the ROC curve of (n_samples,) labels and scores; NaN + warning with one class."""
    from sklearn.metrics import roc_auc_score

    y, s = as_binary_pair(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        warn_one_class(n_pos, y.size - n_pos, "AUROC", name)
        return math.nan
    return float(roc_auc_score(y, s))


def average_precision(y_true: Any, y_score: Any, *, name: str | None = None) -> float:
    """Average precision (area under the PR curve, sklearn's step rule); NaN + warning with one class."""
    from sklearn.metrics import average_precision_score

    y, s = as_binary_pair(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        warn_one_class(n_pos, y.size - n_pos, "average precision", name)
        return math.nan
    return float(average_precision_score(y, s))


def delong_ci(y_true: Any, y_score: Any, *, level: float = 0.95, name: str | None = None) -> tuple[float, float, float]:
    """(auc, lo, hi): AUROC with DeLong's normal-approximation interval, clipped to [0, 1].

    IMAGE-LEVEL: every image counts as independent; with several images per patient the interval
    is too narrow (use the patient bootstrap, chestxr/evaluation/_bootstrap.py).

    Fast DeLong (Sun & Xu 2014): midranks of the positives, the negatives and both pooled give the
    structural components V10 (per positive) and V01 (per negative) in O(n log n);
    var(AUC) = s2(V10)/m + s2(V01)/n. y_true, y_score: (n_samples,). The interval is NaN when a
    class has fewer than two samples (the AUC too when one class is missing, with a warning).
    """
    from scipy.stats import norm, rankdata

    y, s = as_binary_pair(y_true, y_score)
    pos, neg = s[y], s[~y]
    m, k = pos.size, neg.size
    if m == 0 or k == 0:
        warn_one_class(m, k, "AUROC", name)
        return math.nan, math.nan, math.nan
    tz = rankdata(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * k))
    if m < 2 or k < 2:
        return auc, math.nan, math.nan
    v10 = (tz[:m] - rankdata(pos)) / k  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m  # share of positives above each negative
    se = math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / k)
    z = float(norm.ppf(0.5 + level / 2.0))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def multiclass_metrics(y_true: Any, y_score: Any) -> dict[str, Any]:
    """Accuracy, confusion matrix and per-class recall for mutually exclusive classes.

    y_true: (n_samples, n_classes) one-hot (argmax taken); y_score: (n_samples, n_classes);
    prediction = argmax of the scores. confusion_matrix[i][j] counts true class i predicted as j.
    per_class_recall is NaN for a class absent from y_true.
    """
    yt, ys = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    if yt.ndim != 2 or ys.shape != yt.shape:
        raise MetricInputError(f"y_true and y_score must both be (n_samples, n_classes), got {yt.shape} and {ys.shape}")
    if not np.isfinite(ys).all():
        raise MetricInputError("y_score holds NaN or inf")
    f = yt.shape[1]
    true, pred = yt.argmax(axis=1), ys.argmax(axis=1)
    cm = np.bincount(true * f + pred, minlength=f * f).reshape(f, f)
    recall = ratio(np.diag(cm), cm.sum(axis=1))
    recall = np.atleast_1d(recall)
    return {
        "n": int(true.size),
        "accuracy": ratio(int(np.trace(cm)), int(true.size)),
        "balanced_accuracy": nanmean(recall),
        "confusion_matrix": cm.tolist(),
        "per_class_recall": [float(r) for r in recall],
    }


def nanmean(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan
