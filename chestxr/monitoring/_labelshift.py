"""Prevalence in use, estimated without labels, and the PPV/NPV it implies at the signed thresholds.

Label shift (Saerens et al. 2002; Lipton et al. 2018): the prevalence pi of a finding changes while
what the images of a positive (or a negative) look like does not. Then the signed threshold's true
positive rate t and false positive rate f (from the labelled reference) stay, and the window's
positive-call rate is q = pi t + (1 - pi) f, so

    pi = (q - f) / (t - f)                                   (black-box shift estimation, BBSE:
                                                              Lipton et al. 2018, binary case)
    PPV = pi t / (pi t + (1 - pi) f) = t (q - f) / (q (t - f))
    NPV = (1 - pi)(1 - f) / ((1 - pi)(1 - f) + pi (1 - t)) = (t - q)(1 - f) / ((t - f)(1 - q))

(pi clipped to [0, 1]). Intervals (method "exact box"): q from the window, t from the reference's
positives and f from its negatives, each a Clopper-Pearson interval at level 1 - (1 - c) / 3
(Bonferroni over the three), one image per patient; pi, PPV and NPV are monotone in each of q, t,
f (pi and PPV increase with q and decrease with t and f, NPV the reverse), so their extremes
over the box are at two of its corners. With probability >= c all three intervals
cover, and then the interval covers too: exact and conservative, valid at every sample size (not
an asymptotic delta-method interval). Where t's and f's intervals overlap the call rate does not
identify the prevalence and the interval is [0, 1].

A PPV promise "PPV >= X" is tested by the same construction, one-sided: its p-value is the smallest
alpha at which the upper bound PPV(q_hi, t_lo, f_lo) (each one-sided at 1 - alpha / 3) falls below
X; NPV likewise with NPV(q_lo, t_hi, f_hi).

EM (Saerens et al. 2002) is reported beside it as a second point estimate: it re-weights the
model's calibrated probabilities until the mean posterior equals the prior; it needs probabilities
that are calibrated on the reference, so it is a check on BBSE, not the interval's source.

Both assume label shift only; a scanner change (covariate shift) biases them, which is why the
input tests run beside them.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def cp_lower(k: np.ndarray, n: np.ndarray, confidence: float | np.ndarray) -> np.ndarray:
    """One-sided Clopper-Pearson lower bounds, vectorised; 0 where k = 0, NaN where n = 0."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    with np.errstate(invalid="ignore"):
        out = special.betaincinv(np.maximum(k, 1e-300), n - k + 1.0, 1.0 - np.asarray(confidence))
    out = np.where(k <= 0, 0.0, out)
    return np.where(n <= 0, np.nan, out)


def cp_upper(k: np.ndarray, n: np.ndarray, confidence: float | np.ndarray) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds, vectorised; 1 where k = n, NaN where n = 0."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    return 1.0 - cp_lower(n - k, n, confidence)


def prevalence_from_rates(q: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """pi = (q - f) / (t - f) clipped to [0, 1]; NaN where t <= f."""
    q, t, f = np.broadcast_arrays(np.asarray(q, float), np.asarray(t, float), np.asarray(f, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.clip((q - f) / (t - f), 0.0, 1.0)
    return np.where(t > f, pi, np.nan)


def ppv_from_rates(q: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """PPV at the prevalence the rates imply (pi clipped); NaN where t <= f or nothing is called."""
    pi = prevalence_from_rates(q, t, f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pi * t / (pi * t + (1.0 - pi) * f)


def npv_from_rates(q: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """NPV at the prevalence the rates imply (pi clipped); NaN where t <= f or nothing is negative."""
    pi = prevalence_from_rates(q, t, f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 - pi) * (1.0 - f) / ((1.0 - pi) * (1.0 - f) + pi * (1.0 - t))


def _box(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1.0 - level) / 2.0
    return cp_lower(k, n, 1.0 - a), cp_upper(k, n, 1.0 - a)


def bbse_intervals(
    q_counts: tuple[np.ndarray, np.ndarray],
    t_counts: tuple[np.ndarray, np.ndarray],
    f_counts: tuple[np.ndarray, np.ndarray],
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Per finding (arrays (F,)): ``prevalence``, ``ppv``, ``npv`` point estimates and their exact-box
    intervals ``*_lo`` / ``*_hi`` at ``confidence``, and ``identified`` (t's and f's intervals apart).

    ``q_counts`` = (positive calls, patients) in the window; ``t_counts`` = (called positives,
    positives) and ``f_counts`` = (called negatives-as-positive, negatives) in the reference."""
    qk, qn = (np.asarray(v, np.float64) for v in q_counts)
    tk, tn = (np.asarray(v, np.float64) for v in t_counts)
    fk, fn = (np.asarray(v, np.float64) for v in f_counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        q, t, f = qk / qn, tk / tn, fk / fn
    out = {"prevalence": prevalence_from_rates(q, t, f), "ppv": ppv_from_rates(q, t, f), "npv": npv_from_rates(q, t, f)}
    level = 1.0 - (1.0 - confidence) / 3.0
    (q_lo, q_hi), (t_lo, t_hi), (f_lo, f_hi) = _box(qk, qn, level), _box(tk, tn, level), _box(fk, fn, level)
    identified = t_lo > f_hi
    # pi and PPV increase with q and decrease with t and f; NPV the reverse (module docstring)
    low_corner, high_corner = (q_lo, t_hi, f_hi), (q_hi, t_lo, f_lo)
    for name, fn_, lo_at, hi_at in (
        ("prevalence", prevalence_from_rates, low_corner, high_corner),
        ("ppv", ppv_from_rates, low_corner, high_corner),
        ("npv", npv_from_rates, high_corner, low_corner),
    ):
        undefined = np.isnan(out[name])
        lo, hi = fn_(*lo_at), fn_(*hi_at)
        out[f"{name}_lo"] = np.where(undefined, np.nan, np.where(identified, lo, 0.0))
        out[f"{name}_hi"] = np.where(undefined, np.nan, np.where(identified, hi, 1.0))
    out["identified"] = identified
    return out


def predictive_value_pvalue(
    metric: str,
    level: float,
    q_counts: tuple[np.ndarray, np.ndarray],
    t_counts: tuple[np.ndarray, np.ndarray],
    f_counts: tuple[np.ndarray, np.ndarray],
    *,
    iterations: int = 48,
) -> np.ndarray:
    """p-values (F,) of H0: ``metric`` ("ppv" or "npv") >= ``level`` in the window, from the one-sided
    exact box (see the module docstring): the smallest alpha whose upper bound is below ``level``,
    found by bisection on log(alpha) to a relative precision of about 1e-6. NaN where a count is 0."""
    if metric not in ("ppv", "npv"):
        raise ValueError(f"metric must be 'ppv' or 'npv', got {metric!r}")
    qk, qn = (np.asarray(v, np.float64) for v in q_counts)
    tk, tn = (np.asarray(v, np.float64) for v in t_counts)
    fk, fn = (np.asarray(v, np.float64) for v in f_counts)

    def upper(alpha: np.ndarray) -> np.ndarray:
        c = 1.0 - alpha / 3.0
        if metric == "ppv":
            q, t, f = cp_upper(qk, qn, c), cp_lower(tk, tn, c), cp_lower(fk, fn, c)
            v = ppv_from_rates(q, t, f)
        else:
            q, t, f = cp_lower(qk, qn, c), cp_upper(tk, tn, c), cp_upper(fk, fn, c)
            v = npv_from_rates(q, t, f)
        return np.where(np.isnan(v) & (t <= f), 1.0, v)  # not identified: no bound below 1

    shape = np.broadcast(qk, tk, fk).shape
    lo = np.full(shape, np.log(1e-16))
    hi = np.full(shape, np.log(1.0 - 1e-12))
    below_at_hi = upper(np.exp(hi)) < level
    below_at_lo = upper(np.exp(lo)) < level
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        below = upper(np.exp(mid)) < level
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    p = np.where(below_at_lo, np.exp(lo), np.where(below_at_hi, np.exp(hi), 1.0))
    undefined = (qn <= 0) | (tn <= 0) | (fn <= 0)
    return np.where(undefined, np.nan, p)


def em_prevalence(
    probs: np.ndarray, reference_prevalence: np.ndarray, *, max_iter: int = 200, tol: float = 1e-7
) -> np.ndarray:
    """Saerens et al. (2002) EM estimate of each finding's prevalence in a window.

    ``probs`` (n, F): the model's calibrated probabilities (NaN left out per finding);
    ``reference_prevalence`` (F,): the prevalence they are calibrated at. Returns (F,), NaN where a
    finding has no probabilities or its reference prevalence is 0 or 1."""
    p = np.asarray(probs, np.float64)
    prior = np.asarray(reference_prevalence, np.float64)
    valid = ~np.isnan(p)
    p0 = np.where(valid, p, 0.0)
    count = valid.sum(axis=0)
    ok = (count > 0) & (prior > 0) & (prior < 1)
    pi = np.where(ok, prior, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(max_iter):
            w1 = (pi / prior) * p0
            w0 = ((1.0 - pi) / (1.0 - prior)) * (1.0 - p0)
            post = np.where(valid, w1 / (w1 + w0), 0.0)
            new = post.sum(axis=0) / count
            new = np.where(ok, new, np.nan)
            if np.nanmax(np.abs(new - pi), initial=0.0) < tol:
                pi = new
                break
            pi = new
    return pi
