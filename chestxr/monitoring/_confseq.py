"""Anytime-valid upper confidence bounds for a proportion (sensitivity, specificity, PPV, NPV) as labels
arrive, and the sequential test of a promise "metric >= X".

Method: Robbins' beta-binomial mixture martingale (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon
2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2)), in
its one-sided form. After t outcomes with s successes (e.g. t labelled positives of which s were
called positive), against a candidate value p:

    M_t(p) = integral over q in [0, p] of  q^s (1 - q)^(t - s) / (p^s (1 - p)^(t - s))  Beta(q; a, b) dq / I_p(a, b)
           = B(a + s, b + t - s) I_p(a + s, b + t - s) / (B(a, b) I_p(a, b) p^s (1 - p)^(t - s))

a mixture of likelihood ratios over alternatives q below p (uniform prior, a = b = 1, truncated to
[0, p]). Under any true value r >= p every factor has mean r q / p + (1 - r)(1 - q) / (1 - p) <= 1,
so M_t(p) is a nonnegative supermartingale with M_0 = 1, and by Ville's inequality
P(M_t(p) >= 1 / alpha for some t) <= alpha. Hence:

- the upper confidence sequence U_t = sup {p : M_t(p) < 1 / alpha} satisfies P(r <= U_t for all t)
  >= 1 - alpha: it may be looked at after every label, forever, without inflating the error (its
  running minimum is valid too);
- the promise "metric >= X" is contradicted, at false-alarm rate alpha over the whole stream, as soon
  as M_t(X) >= 1 / alpha, i.e. U_t < X; the anytime-valid p-value is min(1, 1 / max_{s <= t} M_s(X)).

Observations must be independent: the callers use one labelled image per patient.
"""

from __future__ import annotations

import numpy as np
from scipy import special

PRIOR_A = 1.0
PRIOR_B = 1.0


def log_mixture(successes: np.ndarray, trials: np.ndarray, p: np.ndarray | float) -> np.ndarray:
    """log M_t(p) (module docstring), elementwise over broadcast ``successes``, ``trials``, ``p``
    (0 < p < 1). 0 where trials = 0."""
    s = np.asarray(successes, np.float64)
    t = np.asarray(trials, np.float64)
    p = np.asarray(p, np.float64)
    a, b = PRIOR_A + s, PRIOR_B + t - s
    with np.errstate(divide="ignore", invalid="ignore"):
        num = special.betaln(a, b) + np.log(special.betainc(a, b, p))
        den = special.betaln(PRIOR_A, PRIOR_B) + np.log(special.betainc(PRIOR_A, PRIOR_B, p))
        lr = s * np.log(p) + (t - s) * np.log1p(-p)
        out = num - den - lr
    return np.where(t > 0, out, 0.0)


def anytime_pvalues(outcomes: np.ndarray, level: float) -> np.ndarray:
    """(t,) anytime-valid p-values of H0: proportion >= ``level`` after each of ``outcomes`` (t,) 0/1,
    in arrival order: min(1, 1 / max_{s <= t} M_s(level)), non-increasing."""
    x = np.asarray(outcomes, np.float64)
    if x.size == 0:
        return np.zeros(0)
    s = np.cumsum(x)
    t = np.arange(1, x.size + 1, dtype=np.float64)
    running = np.maximum.accumulate(log_mixture(s, t, level))
    return np.minimum(1.0, np.exp(-running))


def upper_bound(successes: np.ndarray, trials: np.ndarray, alpha: float, *, iterations: int = 60) -> np.ndarray:
    """U_t = sup {p : M_t(p) < 1 / alpha} (module docstring), elementwise over (successes, trials);
    1 where trials = 0 or no p < 1 reaches 1 / alpha; found by bisection above s / t."""
    s = np.asarray(successes, np.float64)
    t = np.asarray(trials, np.float64)
    s, t = np.broadcast_arrays(s, t)
    if not (t > 0).any():
        return np.ones(s.shape)
    target = np.log(1.0 / alpha)
    lo = np.where(t > 0, s / np.maximum(t, 1.0), 0.0)
    top = 1.0 - 1e-12
    crosses = log_mixture(s, t, top) >= target
    hi = np.full(s.shape, top)
    lo = np.minimum(lo, top)
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        above = log_mixture(s, t, mid) >= target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return np.where((t > 0) & crosses, hi, 1.0)
