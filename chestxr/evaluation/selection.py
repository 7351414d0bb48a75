"""Choosing a threshold on one finding's calibration data: the guaranteed (fixed-sequence,
Clopper-Pearson) rules and the point-estimate rules. See :mod:`chestxr.evaluation.thresholds` for
the statistics; this module works on integer counts at every candidate threshold.

Arrays: y (n,) bool labels, s (n,) float scores, g (n,) patient ids or None.
"""

from __future__ import annotations

import math

import numpy as np

from chestxr.core.errors import CalibrationError
from chestxr.evaluation.intervals import effective_counts, lower_bound, n_needed
from chestxr.evaluation.methods import Method


def _candidates(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Integer counts at every candidate threshold, highest first.

    Index 0 is a finite threshold above every score (calls nothing), then the distinct scores in
    descending order. Returns thr (k,), tp (k,), fp (k,) int64 with calls = score >= thr."""
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    last = np.flatnonzero(np.append(ss[1:] != ss[:-1], True))  # last index of each distinct value
    tp_cum = np.cumsum(yy, dtype=np.int64)
    top = float(np.nextafter(ss[0], np.inf)) if ss.size else 0.0
    return {
        "thr": np.concatenate([[top], ss[last]]),
        "tp": np.concatenate([[0], tp_cum[last]]),
        "fp": np.concatenate([[0], (last + 1) - tp_cum[last]]),
    }


def _cp_lower(x: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Vectorised one-sided Clopper-Pearson lower bound; 0 at x = 0, NaN at n = 0."""
    from scipy.stats import beta

    x, n = np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lb = beta.ppf(1.0 - confidence, np.maximum(x, 1e-300), n - x + 1.0)
    return np.where(n <= 0, np.nan, np.where(x <= 0, 0.0, lb))


def _rate_counts(kind: str, c: dict[str, np.ndarray], n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """(successes, denominator) per candidate for the rule's metric."""
    tp, fp = c["tp"], c["fp"]
    if kind == "sensitivity":
        return tp, np.full(tp.shape, n_pos)
    if kind == "specificity":
        return n_neg - fp, np.full(tp.shape, n_neg)
    if kind == "ppv":
        return tp, tp + fp
    tn, fn = n_neg - fp, n_pos - tp  # npv
    return tn, tn + fn


def _clustered_lb(kind: str, thr: float, y: np.ndarray, s: np.ndarray, g: np.ndarray, conf: float) -> float:
    pred = s >= thr
    rows, ok = {
        "sensitivity": (y, pred),
        "specificity": (~y, ~pred),
        "ppv": (pred, y),
        "npv": (~pred, ~y),
    }[kind]
    x_eff, n_eff, _ = effective_counts(ok[rows], g[rows])
    return lower_bound(x_eff, n_eff, conf) if n_eff > 0 else math.nan


def guaranteed_threshold(
    m: Method, y: np.ndarray, s: np.ndarray, g: np.ndarray | None, conf: float
) -> tuple[float, str, float, int, str]:
    """(threshold, status, lower bound, n_needed, note) by fixed-sequence testing (module docstring)."""
    if m.target is None:
        raise CalibrationError(f"{m.kind} rule without a target value")
    target = float(m.target)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    need = n_needed(target, conf)
    have, cls = (n_pos, "positives") if m.kind in ("sensitivity", "ppv") else (n_neg, "negatives")
    level = f"{m.kind} >= {m.target:g} at {conf:.0%} confidence"
    what = "with no misses" if m.kind in ("sensitivity", "specificity") else "all correctly called"
    if have < need:
        return math.nan, "insufficient_data", math.nan, need, f"{level} needs at least {need} {cls} {what}; has {have}"
    clustered = g is not None and np.unique(g.astype(str)).size < g.size
    if g is not None and clustered:  # several images per patient: the patients of that class bound the count
        rows = y if m.kind in ("sensitivity", "ppv") else ~y
        n_pat = int(np.unique(g[rows].astype(str)).size)
        if n_pat < need:
            note = f"{level} needs at least {need} {cls} {what}; has {have} images from {n_pat} patients"
            return math.nan, "insufficient_data", math.nan, need, note + " (images of one patient are not independent)"
    c = _candidates(y, s)
    x, n = _rate_counts(m.kind, c, n_pos, n_neg)
    lb = _cp_lower(x, n, conf)
    k = c["thr"].size
    # sensitivity / NPV: walk up from the lowest threshold; specificity / PPV: down from "call nothing"
    order = range(k - 1, -1, -1) if m.kind in ("sensitivity", "npv") else range(k)
    best, best_lb = None, math.nan
    for i in order:
        if n[i] < need:  # cannot pass whatever its count: skipped, decided by the scores alone
            continue
        if not lb[i] >= target - 1e-12:
            break
        b = _clustered_lb(m.kind, float(c["thr"][i]), y, s, g, conf) if g is not None and clustered else float(lb[i])
        if not b >= target - 1e-12:
            break
        best, best_lb = i, b
    if best is None:
        return math.nan, "unreachable", math.nan, need, f"no threshold reaches {level}"
    return float(c["thr"][best]), "guaranteed", best_lb, need, ""


def point_threshold(m: Method, y: np.ndarray, s: np.ndarray) -> tuple[float, str]:
    """(threshold, reason it is NaN or "") for the point-estimate rules, with both classes present."""
    c = _candidates(y, s)
    thr, tp, fp = c["thr"], c["tp"], c["fp"]
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    fn = n_pos - tp
    if m.kind == "youden":  # J * n_pos * n_neg = tp * n_neg - fp * n_pos: exact integers, first = highest
        return float(thr[1 + int(np.argmax((tp * n_neg - fp * n_pos)[1:]))]), ""
    if m.kind == "f1":  # maximise 2tp / (2tp + fp + fn): compare fractions by cross-multiplication
        best = 1
        for i in range(2, thr.size):
            a, b = 2 * tp[i], 2 * tp[i] + fp[i] + fn[i]
            a0, b0 = 2 * tp[best], 2 * tp[best] + fp[best] + fn[best]
            if a * b0 > a0 * b:
                best = i
        return float(thr[best]), ""
    if m.kind == "cost":
        cost = m.cost_fp * fp + m.cost_fn * fn
        best = int(np.argmin(cost))
        return float(thr[best]), ""
    x, n = _rate_counts(m.kind, c, n_pos, n_neg)
    target = float(m.target) if m.target is not None else math.nan  # parse_method sets it for these kinds
    ok = np.flatnonzero((n > 0) & (x >= (target - 1e-12) * n))
    if m.kind == "sensitivity":
        ok = ok[ok > 0]  # the old rule never used "call nothing"
    if not ok.size:
        return (
            math.nan,
            f"no threshold reaches {m.kind.upper() if m.kind in ('ppv', 'npv') else m.kind} >= {m.target:g}",
        )
    # sensitivity / NPV: the highest threshold meeting X; specificity / PPV: the lowest
    return float(thr[ok[0]] if m.kind in ("sensitivity", "npv") else thr[ok[-1]]), ""
