"""Exact intervals for proportions (sensitivity, specificity, PPV, NPV, accuracy) and one-sided bounds.

Methods (see data_manifests/README.md, "Intervals and guarantees", for why):

* ``clopper-pearson`` (default): the exact binomial interval, from beta quantiles. Its coverage is
  never below the nominal level for any true proportion and sample size, which is what a clinical
  promise needs; it is conservative (wider than needed) for small n. Its one-sided lower bound at
  confidence c is the guarantee behind ``sensitivity:X`` (see chestxr/evaluation/_thresholds.py).
* ``wilson``: the score interval. Coverage close to nominal on average (it can dip a little below
  it for some p), narrower than Clopper-Pearson; offered for descriptive reporting.

Neither is ever degenerate while n > 0: with x = n successes the interval is [l, 1] with l < 1.
With n = 0 the interval is [NaN, NaN] (undefined, never dropped silently: callers report n).

Clustering (several images per patient): :func:`effective_counts` shrinks (x, n) by the design
effect of the patient-level ratio estimator, deff = var_cluster(p) / (p(1-p)/n) (Kish 1965; the
variance is the linearisation / sandwich estimator of sum(x_g) / sum(n_g) over patients), clamped
so the effective n lies between the number of patients and the number of images. The exact
interval is then computed on (p * n_eff, n_eff), with real-valued beta parameters. With one image
per patient the counts are unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chestxr.core import ChestXRError

INTERVAL_METHODS = ("clopper-pearson", "wilson")


class IntervalError(ChestXRError, ValueError):
    """Counts or a level given to an interval are not valid (negative, x > n, level outside (0, 1))."""


def _check(x: float, n: float, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise IntervalError(f"confidence level must be in (0, 1), got {level!r}")
    if not (math.isfinite(x) and math.isfinite(n)) or x < 0 or n < 0 or x > n + 1e-9:
        raise IntervalError(f"counts must satisfy 0 <= x <= n, got x={x!r}, n={n!r}")


def clopper_pearson(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval (lo, hi) for x successes in n trials at ``level``.

    lo = Beta(alpha/2; x, n - x + 1), hi = Beta(1 - alpha/2; x + 1, n - x); lo = 0 when x = 0 and
    hi = 1 when x = n. Real-valued x, n (effective counts) are allowed. (NaN, NaN) when n = 0."""
    _check(x, n, level)
    if n <= 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    return lower_bound(x, n, 1.0 - a), upper_bound(x, n, 1.0 - a)


def lower_bound(x: float, n: float, confidence: float = 0.95, method: str = "clopper-pearson") -> float:
    """One-sided lower confidence bound at ``confidence`` for x successes in n trials.

    Clopper-Pearson: the p at which P(Binomial(n, p) >= x) = 1 - confidence, i.e. the (1 -
    confidence) quantile of Beta(x, n - x + 1); 0 when x = 0; NaN when n = 0. With x = n it is
    (1 - confidence) ** (1 / n): 0.9 at 95 % needs n >= 29. Wilson: the lower end of the
    two-sided Wilson interval at level 2 * confidence - 1."""
    _check(x, n, confidence)
    if n <= 0:
        return math.nan
    if method == "wilson":
        return wilson(x, n, 2.0 * confidence - 1.0)[0]
    if method != "clopper-pearson":
        raise IntervalError(f"interval method {method!r} is not one of {INTERVAL_METHODS}")
    from scipy.stats import beta

    if x <= 0:
        return 0.0
    x = min(x, n)
    return float(beta.ppf(1.0 - confidence, x, n - x + 1.0))


def upper_bound(x: float, n: float, confidence: float = 0.95, method: str = "clopper-pearson") -> float:
    """One-sided upper confidence bound (1 - the lower bound of the failures); 1 when x = n."""
    _check(x, n, confidence)
    if n <= 0:
        return math.nan
    return 1.0 - lower_bound(n - min(x, n), n, confidence, method)


def wilson(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval (lo, hi) at ``level``; (NaN, NaN) when n = 0."""
    from scipy.stats import norm

    _check(x, n, level)
    if n <= 0:
        return math.nan, math.nan
    z = float(norm.ppf(0.5 + level / 2.0))
    p = min(x, n) / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_interval(
    x: float, n: float, level: float = 0.95, method: str = "clopper-pearson"
) -> tuple[float, float]:
    """Two-sided interval by ``method`` ("clopper-pearson" | "wilson")."""
    if method == "clopper-pearson":
        return clopper_pearson(x, n, level)
    if method == "wilson":
        return wilson(x, n, level)
    raise IntervalError(f"interval method {method!r} is not one of {INTERVAL_METHODS}")


def effective_counts(successes: Any, groups: Any) -> tuple[float, float, float]:
    """(x_eff, n_eff, deff) for 0/1 outcomes (n,) clustered by ``groups`` (n,) patient ids.

    deff is the design effect of the patient-level ratio estimator (1 when every patient has one
    image or ``groups`` is None); n_eff = n / deff clamped to [n_patients, n]; x_eff = p * n_eff.
    When p is 0 or 1 the variance gives no information and n_eff = n_patients (each patient one
    observation: the conservative choice)."""
    y = np.asarray(successes, dtype=np.float64).reshape(-1)
    n = float(y.size)
    if n == 0:
        return 0.0, 0.0, 1.0
    x = float(y.sum())
    if groups is None:
        return x, n, 1.0
    g = np.asarray(groups).reshape(-1)
    if g.size != y.size:
        raise IntervalError(f"groups must have one id per outcome ({y.size}), got {g.size}")
    _, inv = np.unique(g.astype(str), return_inverse=True)
    k = int(inv.max()) + 1
    if k == n:
        return x, n, 1.0
    p = x / n
    if p <= 0.0 or p >= 1.0:
        n_eff = float(k)
        return p * n_eff, n_eff, n / n_eff
    xg = np.bincount(inv, weights=y, minlength=k)
    ng = np.bincount(inv, minlength=k).astype(np.float64)
    var_cluster = k / (k - 1.0) * float(np.sum((xg - p * ng) ** 2)) / (n * n) if k > 1 else math.inf
    deff = var_cluster / (p * (1.0 - p) / n)
    n_eff = float(min(n, max(k, n / deff))) if math.isfinite(deff) and deff > 0 else float(k)
    return p * n_eff, n_eff, n / n_eff


def proportion_record(
    successes: Any,
    groups: Any = None,
    *,
    level: float = 0.95,
    method: str = "clopper-pearson",
) -> dict[str, Any]:
    """{value, ci: [lo, hi], x, n, n_eff, method} for 0/1 outcomes (n,), cluster-aware with groups."""
    y = np.asarray(successes, dtype=np.float64).reshape(-1)
    x_eff, n_eff, _ = effective_counts(y, groups)
    lo, hi = proportion_interval(x_eff, n_eff, level, method) if n_eff > 0 else (math.nan, math.nan)
    return {
        "value": float(y.mean()) if y.size else math.nan,
        "ci": [lo, hi],
        "x": int(y.sum()),
        "n": int(y.size),
        "n_eff": float(n_eff),
        "method": method,
    }


def n_needed(target: float, confidence: float = 0.95) -> int:
    """Smallest n such that n successes out of n give a Clopper-Pearson lower bound >= target.

    (1 - confidence) ** (1 / n) >= target  <=>  n >= log(1 - confidence) / log(target).
    target 0.9 at 0.95 -> 29. A target of 0 needs 0; a target of 1 can never be guaranteed (inf
    is returned as a very large int)."""
    if target <= 0.0:
        return 0
    if target >= 1.0:
        return 2**31 - 1
    n = math.ceil(math.log(1.0 - confidence) / math.log(target) - 1e-12)
    while lower_bound(n, n, confidence) < target:  # guard against rounding at the boundary
        n += 1
    while n > 1 and lower_bound(n - 1, n - 1, confidence) >= target:
        n -= 1
    return int(n)


def confusion_intervals(
    y: Any,
    pred: Any,
    groups: Any = None,
    *,
    level: float = 0.95,
    method: str = "clopper-pearson",
) -> dict[str, Any]:
    """Exact intervals for the rates of one finding's calls.

    y: (n,) bool labels, pred: (n,) bool calls, groups: (n,) patient ids or None. Returns
    {sensitivity, specificity, ppv, npv, accuracy: value, and ``<key>_ci`` [lo, hi], ``<key>_n``
    (denominator) and ``<key>_n_eff`` (effective denominator after clustering)}; NaN where the
    denominator is 0 (e.g. PPV when nothing is called positive)."""
    y = np.asarray(y, dtype=bool).reshape(-1)
    pred = np.asarray(pred, dtype=bool).reshape(-1)
    g = None if groups is None else np.asarray(groups).reshape(-1)
    subsets = {
        "sensitivity": (y, pred),
        "specificity": (~y, ~pred),
        "ppv": (pred, y),
        "npv": (~pred, ~y),
        "accuracy": (np.ones_like(y), pred == y),
    }
    out: dict[str, Any] = {}
    for key, (rows, success) in subsets.items():
        rec = proportion_record(success[rows], None if g is None else g[rows], level=level, method=method)
        out[key] = rec["value"]
        out[f"{key}_ci"] = rec["ci"]
        out[f"{key}_n"] = rec["n"]
        out[f"{key}_n_eff"] = rec["n_eff"]
    return out
