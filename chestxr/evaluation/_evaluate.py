"""``evaluate_predictions``: everything the evaluation report shows, per finding, with stated intervals.

Interval methods (also written into the result as ``interval_methods``):

* sensitivity, specificity, PPV, NPV, accuracy: Clopper-Pearson exact intervals, cluster-aware
  (effective counts by patient, :func:`chestxr.evaluation.effective_counts`); never
  degenerate while the denominator is > 0; ``<key>_n`` / ``<key>_n_eff`` give the denominator.
* AUROC and F1: percentile bootstrap by patient, with the number of resamples in which the metric
  was defined (``<key>_ci_n_valid``); not reported when fewer than half were.
* ``auroc_delong_ci``: DeLong, image-level (images treated as independent).
* the stored operating points (chestxr/evaluation/_promise.py): a guaranteed promise by a one-sided test
  with the patient as the unit (exact binomial; Bentkus bound with several images per patient), Holm across
  the findings at ``promise_alpha``, "not contradicted" with the test's power when not rejected; a point rule
  by a two-sided two-sample test of calibration vs test, patients as the unit (Holm), "moved" only when rejected.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from chestxr.evaluation._bootstrap import bootstrap_intervals, group_index
from chestxr.evaluation._intervals import confusion_intervals
from chestxr.evaluation._metrics import (
    METRIC_NAMES,
    MetricInputError,
    UndefinedMetricWarning,
    as_matrices,
    auroc,
    average_precision,
    binary_metrics_at,
    delong_ci,
    nanmean,
    rates_from_counts,
    warn_one_class,
)
from chestxr.evaluation._operating_point import OperatingPoint
from chestxr.evaluation._promise import DEFAULT_ALPHA, check_promise, check_promises, finding_counts
from chestxr.evaluation._reliability import expected_calibration_error

EXACT_KEYS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
INTERVAL_METHODS = {
    "sensitivity/specificity/ppv/npv/accuracy": "Clopper-Pearson exact, effective counts by patient",
    "auroc": "percentile bootstrap by patient",
    "auroc_delong": "DeLong, image-level",
    "f1": "percentile bootstrap by patient",
    "promise": "one-sided exact binomial test by patient (Bentkus bound with several images), Holm across findings",
    "operating_point": "two-sided two-sample test, calibration vs test, patients as the unit (permutation test of "
    "per-patient fractions with several images per patient, else exact Boschloo / Fisher), Holm",
}


def evaluate_predictions(
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    findings: Sequence[str],
    *,
    groups: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    promised: Mapping[str, OperatingPoint] | None = None,
    n_bins: int = 10,
    promise_alpha: float = DEFAULT_ALPHA,
) -> dict[str, Any]:
    """Everything the report shows, JSON-able (NaN stays float NaN; io.to_jsonable writes null).

    y_true, y_score (probabilities), mask: (n_samples, n_findings); thresholds: (n_findings,);
    groups: (n_samples,) patient ids. Returns {"findings": {name: {n, n_pos, n_neg, prevalence,
    auroc, auroc_ci, auroc_ci_n_valid, auroc_delong_ci, ap, threshold, tp, fp, tn, fn,
    sensitivity, sensitivity_ci, sensitivity_n, sensitivity_n_eff (likewise specificity, ppv, npv,
    accuracy), f1, f1_ci, f1_ci_n_valid, ece, promise}}, "macro", "micro", "n_images",
    "n_patients" (None without groups), "level", "n_boot", "interval_methods", "promise_alpha",
    "promise_summary" (chestxr.evaluation._promise.promise_summary; None when nothing was stored)}.
    ``promised`` maps finding -> its stored operating point (see :func:`chestxr.evaluation.check_promise`). One-class findings warn once each and get NaN.
    """
    y, s, m = as_matrices(y_true, y_score, mask)
    n, f = y.shape
    findings = list(findings)
    if len(findings) != f:
        raise MetricInputError(f"{len(findings)} finding names for {f} score columns")
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size != f:
        raise MetricInputError(f"thresholds must have one value per finding ({f}), got {thr.size}")
    g_all = None if groups is None else np.asarray(groups).reshape(-1)
    boot = bootstrap_intervals(
        y, s, m, thr, groups=groups, n_boot=n_boot, level=level, seed=seed, findings=findings, keys=("auroc", "f1")
    )
    per: dict[str, Any] = {}
    for j, name in enumerate(findings):
        yj, sj = y[m[:, j], j], s[m[:, j], j]
        gj = None if g_all is None else g_all[m[:, j]]
        n_pos = int(yj.sum())
        if n_pos == 0 or n_pos == yj.size:
            warn_one_class(n_pos, yj.size - n_pos, "AUROC/AP/sensitivity/specificity", name, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            rec = binary_metrics_at(yj, sj, float(thr[j]), warn=False)
            auc, d_lo, d_hi = delong_ci(yj, sj, level=level)
            rec.update(
                auroc=auc,
                auroc_ci=boot["auroc"]["ci"][j].tolist(),
                auroc_ci_n_valid=int(boot["auroc"]["n_valid"][j]),
                auroc_delong_ci=[d_lo, d_hi],
                ap=average_precision(yj, sj),
                threshold=float(thr[j]),
                f1_ci=boot["f1"]["ci"][j].tolist(),
                f1_ci_n_valid=int(boot["f1"]["n_valid"][j]),
            )
        if np.isfinite(thr[j]):
            rec.update(confusion_intervals(yj, sj >= thr[j], gj, level=level))
        else:
            for key in EXACT_KEYS:
                rec.update({f"{key}_ci": [float("nan")] * 2, f"{key}_n": 0, f"{key}_n_eff": 0.0})
        rec["ece"] = expected_calibration_error(yj, sj, n_bins=n_bins)
        if promised and promised.get(name):
            counts = finding_counts(yj, sj >= thr[j], gj) if np.isfinite(thr[j]) else None
            rec["promise"] = check_promise(
                rec, promised[name], alpha=promise_alpha, counts=counts, with_ids=gj is not None
            )
        else:
            rec["promise"] = None
        per[name] = rec
    summary = check_promises({name: per[name]["promise"] for name in findings}, alpha=promise_alpha)
    macro = {k: nanmean([per[name][k] for name in findings]) for k in ("auroc", "ap") + METRIC_NAMES}
    return {
        "findings": per,
        "macro": macro,
        "micro": _micro(y, s, m, thr),
        "n_images": int(n),
        "n_patients": None if groups is None else group_index(groups, n)[1],
        "level": float(level),
        "n_boot": int(n_boot),
        "interval_methods": dict(INTERVAL_METHODS),
        "promise_alpha": float(promise_alpha),
        "promise_summary": summary if promised else None,
    }


def _micro(y: np.ndarray, s: np.ndarray, m: np.ndarray, thr: np.ndarray) -> dict[str, float]:
    """Metrics pooled over every unmasked (sample, finding) entry, each called at its own threshold;
    findings without a finite threshold are left out of the threshold metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {"auroc": auroc(y[m], s[m]), "ap": average_precision(y[m], s[m])}
    ok = m & np.isfinite(thr)[None, :]
    pred = s >= np.where(np.isfinite(thr), thr, np.inf)[None, :]
    tp, fp = int(np.sum(ok & pred & y)), int(np.sum(ok & pred & ~y))
    fn, tn = int(np.sum(ok & ~pred & y)), int(np.sum(ok & ~pred & ~y))
    out.update(rates_from_counts(tp, fp, tn, fn))
    return out
