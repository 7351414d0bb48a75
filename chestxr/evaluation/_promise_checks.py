"""The statistics behind ``evaluate``'s honest checks: what a test split can and cannot say about an
operating point chosen on a calibration split.

* A guaranteed promise ("metric >= X") is tested one-sided (H0: metric >= X): exact binomial with one
  image per patient, the patient-level Bentkus bound otherwise
  (``promise_p_value`` in chestxr/evaluation/_patient_bounds.py). Not rejected means "not contradicted",
  never "holds": :func:`promise_power` says how likely the test was to notice a real drop (0.1 by default)
  with the patients it had. Across the findings checked, rejections use Holm's step-down (:func:`holm`),
  so the chance of flagging any promise that is in fact met is <= alpha.
* A point rule (youden, f1, cost, ``@point``) promised nothing; the question is only whether its
  operating point moved between calibration and test. :func:`two_sample_test` compares the two splits'
  counts with an exact test: Boschloo's exact unconditional test (one image per patient, both splits not
  too large), Fisher's exact test when the tables are large (Boschloo's cost grows with n1 * n2), or a
  seeded Monte-Carlo permutation test of the per-patient fractions when patients have several images (a
  patient's images move together). The calibration value was chosen on the calibration data (it is
  optimistic), so a moved point is shown neutrally, not as a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from chestxr.evaluation._patient_bounds import critical_failures

#: Boschloo's test up to this many cells (n1 * n2); Fisher's exact test above it
BOSCHLOO_MAX_CELLS = 40_000
DEFAULT_DROP = 0.1


def promise_power(
    k: int, target: float, *, drop: float = DEFAULT_DROP, alpha: float = 0.05, single: bool = True
) -> float:
    """Probability that the one-sided promise test at ``alpha`` rejects "metric >= target" when the truth is
    target - drop, with k patients counted once each (each patient's images agreeing: the exact binomial
    case). NaN when k = 0 or the drop leaves no room (target - drop <= 0 gives 1)."""
    from scipy.stats import binom

    if k <= 0:
        return math.nan
    truth = target - drop
    if truth <= 0.0:
        return 1.0
    # reject when the success sum is <= the critical value for a success rate of `target`
    crit = critical_failures(k, target, alpha, single)
    if not math.isfinite(crit):
        return 0.0
    return float(binom.cdf(math.floor(crit + 1e-9), k, truth))


def patients_for_power(
    target: float, *, drop: float = DEFAULT_DROP, alpha: float = 0.05, power: float = 0.8, limit: int = 100_000
) -> int:
    """Smallest k from which the promise test's power to see ``drop`` stays >= ``power`` (checked over the
    next k values: the exact test's power saw-tooths with k). -1 when not reached below ``limit``."""
    k = 1
    while k <= limit:
        if promise_power(k, target, drop=drop, alpha=alpha) >= power:
            window = range(k + 1, min(limit, 2 * k) + 1)
            if all(promise_power(j, target, drop=drop, alpha=alpha) >= power for j in window):
                return k
        k = k + 1 if k < 200 else int(k * 1.01) + 1
    return -1


@dataclass(frozen=True)
class HolmResult:
    """rejected (m,) bool, adjusted (m,) float (Holm-adjusted p-values; NaN where p was NaN)."""

    rejected: np.ndarray
    adjusted: np.ndarray
    alpha: float
    m: int


def holm(p_values: Sequence[float], alpha: float = 0.05) -> HolmResult:
    """Holm's step-down procedure over the finite p-values (NaN ones are not tests and are left out of m).

    Rejects H_(1..r) where r is the first i (sorted ascending) with p_(i) > alpha / (m - i + 1); the
    family-wise error rate is <= alpha under any dependence (Holm 1979)."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    rejected = np.zeros(p.size, dtype=bool)
    adjusted = np.full(p.size, np.nan)
    if m == 0:
        return HolmResult(rejected, adjusted, alpha, 0)
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted[order] = adj
    rejected[order] = adj <= alpha
    return HolmResult(rejected, adjusted, alpha, m)


@dataclass(frozen=True)
class TwoSample:
    """p_value (two-sided), method ("boschloo" | "fisher" | "permutation"), the two rates compared."""

    p_value: float
    method: str
    rate_1: float
    rate_2: float
    n_1: int
    n_2: int


def two_sample_test(
    x1: int,
    n1: int,
    x2: int,
    n2: int,
    *,
    fractions_1: Any = None,
    fractions_2: Any = None,
    seed: int = 0,
    n_perm: int = 9_999,
) -> TwoSample:
    """Exact two-sided test of "same rate" between two splits: x successes of n in each.

    With ``fractions_1`` / ``fractions_2`` (per-patient success fractions, for patients with several
    images) a Monte-Carlo permutation test of the difference of the patients' mean fractions (``n_perm``
    permutations, 9,999 by default, seeded: p = (1 + #{|T*| >= |T|}) / (n_perm + 1), valid at every level
    for any ``n_perm`` when the patients of both splits are exchangeable). Otherwise Boschloo
    (n1 * n2 <= BOSCHLOO_MAX_CELLS) or Fisher. NaN p when a split has no case."""
    if fractions_1 is not None and fractions_2 is not None:
        return _permutation(np.asarray(fractions_1, float), np.asarray(fractions_2, float), seed, n_perm)
    if n1 <= 0 or n2 <= 0:
        return TwoSample(math.nan, "none", _rate(x1, n1), _rate(x2, n2), n1, n2)
    table = [[int(x1), int(x2)], [int(n1 - x1), int(n2 - x2)]]
    from scipy.stats import boschloo_exact, fisher_exact

    if (x1 == 0 and x2 == 0) or (x1 == n1 and x2 == n2):
        return TwoSample(1.0, "boschloo", _rate(x1, n1), _rate(x2, n2), n1, n2)
    if n1 * n2 <= BOSCHLOO_MAX_CELLS:
        p = float(boschloo_exact(table, alternative="two-sided").pvalue)
        method = "boschloo"
    else:
        p = float(fisher_exact(table, alternative="two-sided")[1])
        method = "fisher"
    return TwoSample(min(1.0, p), method, _rate(x1, n1), _rate(x2, n2), n1, n2)


def _rate(x: float, n: float) -> float:
    return x / n if n else math.nan


def _permutation(f1: np.ndarray, f2: np.ndarray, seed: int, n_perm: int = 9_999) -> TwoSample:
    k1, k2 = f1.size, f2.size
    if k1 == 0 or k2 == 0:
        return TwoSample(math.nan, "permutation", _mean(f1), _mean(f2), k1, k2)
    pooled = np.concatenate([f1, f2])
    observed = abs(f1.mean() - f2.mean())
    rng = np.random.default_rng(seed)
    total, hits, done = pooled.sum(), 0, 0
    chunk = max(1, min(n_perm, 2_000_000 // pooled.size))
    while done < n_perm:
        b = min(chunk, n_perm - done)
        keys = rng.random((b, pooled.size))
        first = np.argpartition(keys, k1 - 1, axis=1)[:, :k1] if k1 < pooled.size else np.arange(k1)[None, :]
        s1 = pooled[first].sum(axis=1)
        diff = np.abs(s1 / k1 - (total - s1) / k2)
        hits += int(np.sum(diff >= observed - 1e-12))
        done += b
    return TwoSample((1 + hits) / (n_perm + 1), "permutation", _mean(f1), _mean(f2), k1, k2)


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else math.nan
