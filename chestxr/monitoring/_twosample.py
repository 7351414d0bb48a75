"""Two-sample tests of "this window is drawn like the reference": numeric (KS), categorical (chi-squared,
exact by Monte Carlo when counts are small) and rates of positive calls (exact conditional test).

Every function here takes one image per patient on each side (see ``Sample.one_per_patient``): the
tests assume independent rows.

- Kolmogorov-Smirnov (two-sided): the largest gap between the two empirical CDFs. p-value exact
  (scipy's ``ks_2samp(method="exact")``) when n_ref * n_window <= 10,000, else Smirnov's asymptotic
  distribution with the effective size round(n m / (n + m)) (scipy's ``method="asymp"``). Ties
  (discrete fields) make it conservative, never anti-conservative.
- Chi-squared test of homogeneity of a 2 x K table (reference vs window counts per category;
  missing values are a category). With every expected count >= 5 (Cochran's rule) the p-value is
  the chi-squared(K - 1) tail; otherwise (rare or new categories: a new manufacturer appears) it is
  exact: the same statistic under the conditional null (margins fixed: the window's counts are
  multivariate hypergeometric), by sequential Monte Carlo (:mod:`._montecarlo`).
- Positive-call rate: Fisher's exact test of the 2 x 2 table (reference calls vs window calls),
  two-sided (the p-value sums the hypergeometric probabilities no larger than the observed one, as
  scipy's ``fisher_exact``). It is the exact binomial test of the window's rate against the
  reference rate, conditioned on the total, which also accounts for the reference rate being
  estimated: a binomial test against the reference rate taken as known alarms more often than its
  stated rate when the reference has a few hundred patients (measured in experiments/monitor_power.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from chestxr.monitoring._montecarlo import sequential_mc_pvalue

#: n_ref * n_window up to which the KS p-value is exact.
KS_EXACT_MAX = 10_000
#: the smallest expected count for the asymptotic chi-squared p-value (Cochran 1954).
MIN_EXPECTED = 5.0


def ks_statistic(sorted_reference: np.ndarray, window: np.ndarray) -> float:
    """max |F_ref(x) - F_window(x)| over x; ``sorted_reference`` (n,) sorted without NaN, ``window``
    (m,) without NaN. NaN if either is empty."""
    n, m = sorted_reference.size, window.size
    if n == 0 or m == 0:
        return math.nan
    w = np.sort(window)
    grid = np.concatenate([sorted_reference, w])
    cdf_r = np.searchsorted(sorted_reference, grid, side="right") / n
    cdf_w = np.searchsorted(w, grid, side="right") / m
    return float(np.max(np.abs(cdf_r - cdf_w)))


def ks_pvalue(d: float, n: int, m: int, reference: np.ndarray | None = None, window: np.ndarray | None = None) -> float:
    """Two-sided p-value of the KS statistic ``d`` for sizes n, m (exact when n m <= KS_EXACT_MAX and
    the data are given, else asymptotic). NaN when d is NaN."""
    if not math.isfinite(d):
        return math.nan
    if n * m <= KS_EXACT_MAX and reference is not None and window is not None:
        return float(stats.ks_2samp(reference, window, method="exact").pvalue)
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    return float(min(1.0, stats.kstwo.sf(d, round(en))))


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(D, p) of the two-sample KS test; NaN values are left out (the callers count them)."""
    r = np.sort(np.asarray(reference, dtype=np.float64))
    r = r[~np.isnan(r)]
    w = np.asarray(window, dtype=np.float64)
    w = w[~np.isnan(w)]
    d = ks_statistic(r, w)
    return d, ks_pvalue(d, r.size, w.size, r, w)


def chi2_statistic(ref_counts: np.ndarray, win_counts: np.ndarray) -> np.ndarray:
    """Pearson's X^2 of 2 x K tables; ``win_counts`` (K,) or (b, K) against fixed column totals
    ``ref_counts + win_counts``. Returns shape () or (b,)."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    win = np.asarray(win_counts, dtype=np.float64)
    total = ref + win
    n_r, n_w = ref.sum(axis=-1), win.sum(axis=-1)
    n = n_r + n_w
    e_w = total * (np.asarray(n_w)[..., None] / np.asarray(n)[..., None])
    e_r = total - e_w
    with np.errstate(divide="ignore", invalid="ignore"):
        x2 = (win - e_w) ** 2 / e_w + (ref - e_r) ** 2 / e_r
    return np.nansum(np.where(total > 0, x2, 0.0), axis=-1)


def chi2_homogeneity(
    ref_counts: np.ndarray, win_counts: np.ndarray, rng: np.random.Generator, *, b_max: int
) -> tuple[float, float, str]:
    """(X^2, p, method) for reference vs window category counts (K,) each (same category order).

    ``method`` is "chi-squared" (asymptotic, all expected counts >= 5) or "chi-squared, exact
    (Monte Carlo, b draws)". One category present: X^2 = 0, p = 1 (nothing can differ). NaN when
    either side is empty."""
    ref = np.asarray(ref_counts, dtype=np.int64)
    win = np.asarray(win_counts, dtype=np.int64)
    keep = (ref + win) > 0
    ref, win = ref[keep], win[keep]
    n_r, n_w = int(ref.sum()), int(win.sum())
    if n_r == 0 or n_w == 0:
        return math.nan, math.nan, "undefined"
    if ref.size <= 1:
        return 0.0, 1.0, "chi-squared"
    x2 = float(chi2_statistic(ref, win))
    total = ref + win
    expected = np.outer([n_r, n_w], total) / (n_r + n_w)
    if expected.min() >= MIN_EXPECTED:
        return x2, float(stats.chi2.sf(x2, ref.size - 1)), "chi-squared"

    def draw(b: int, g: np.random.Generator) -> np.ndarray:
        w = g.multivariate_hypergeometric(total, n_w, size=b)
        return chi2_statistic(total - w, w)

    p, used = sequential_mc_pvalue(x2, draw, rng, b_max=b_max)
    return x2, p, f"chi-squared, exact (Monte Carlo, {used} draws)"


def fisher_exact_two_sided(k_ref: np.ndarray, n_ref: np.ndarray, k_win: np.ndarray, n_win: np.ndarray) -> np.ndarray:
    """Two-sided Fisher exact p-values for F tables at once: reference k_ref of n_ref positive, window
    k_win of n_win. All (F,) integer arrays; NaN where n_ref or n_win is 0."""
    k_r, n_r = np.asarray(k_ref, np.int64), np.asarray(n_ref, np.int64)
    k_w, n_w = np.asarray(k_win, np.int64), np.asarray(n_win, np.int64)
    out = np.full(k_r.shape, np.nan)
    ok = (n_r > 0) & (n_w > 0)
    if not ok.any():
        return out
    k_r, n_r, k_w, n_w = k_r[ok], n_r[ok], k_w[ok], n_w[ok]
    total, positives = n_r + n_w, k_r + k_w
    lo = np.maximum(0, positives - n_r)
    hi = np.minimum(positives, n_w)
    width = int((hi - lo).max()) + 1
    x = lo[:, None] + np.arange(width)[None, :]
    valid = x <= hi[:, None]

    def logpmf(xx: np.ndarray) -> np.ndarray:
        # Hypergeometric(total, positives, n_w): C(K, x) C(N - K, n - x) / C(N, n)
        kk, nn, mm = positives[:, None], total[:, None], n_w[:, None]
        return _lchoose(kk, xx) + _lchoose(nn - kk, mm - xx) - _lchoose(nn, mm)

    lp = np.where(valid, logpmf(np.where(valid, x, lo[:, None])), -np.inf)
    lp_obs = logpmf(k_w[:, None])[:, 0]
    # scipy's rule: tables no more probable than the observed one (relative tolerance 1e-7)
    small = lp <= lp_obs[:, None] + np.log1p(1e-7)
    p = np.exp(lp - lp_obs[:, None], where=small, out=np.zeros_like(lp)).sum(axis=1) * np.exp(lp_obs)
    out[ok] = np.minimum(1.0, p)
    return out


def _lchoose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
