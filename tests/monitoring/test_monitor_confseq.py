"""The anytime-valid bound: its closed form against the defining integral, its time-uniform error rate in
simulation, and how fast it sees a drop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from chestxr.monitoring import anytime_pvalues, log_mixture, upper_bound


@pytest.mark.parametrize("s,t,p", [(0, 1, 0.9), (7, 10, 0.9), (45, 60, 0.85), (180, 200, 0.95), (3, 40, 0.2)])
def test_closed_form_equals_the_mixture_integral(s, t, p):
    """M_t(p) = int_0^p q^s (1-q)^(t-s) dq / p / (p^s (1-p)^(t-s)) for the uniform prior truncated to [0, p]."""
    num, _ = integrate.quad(lambda q: q**s * (1 - q) ** (t - s), 0, p, epsabs=0, epsrel=1e-12, limit=200)
    want = np.log(num / p) - (s * np.log(p) + (t - s) * np.log1p(-p))
    assert float(log_mixture(s, t, p)) == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_time_uniform_error_rate_at_the_boundary():
    """True rate exactly at the promised level: P(ever alarm over 3,000 observations) <= alpha (Ville)."""
    rng = np.random.default_rng(0)
    reps, n, level, alpha = 600, 3000, 0.9, 0.05
    x = (rng.random((reps, n)) < level).astype(float)
    s = np.cumsum(x, axis=1)
    t = np.arange(1, n + 1)
    ever = (log_mixture(s, t, level) >= np.log(1 / alpha)).any(axis=1)
    assert ever.sum() <= stats.binom.ppf(0.999, reps, alpha)
    # the confidence sequence, looked at every 50 observations, misses the truth only in runs that alarmed
    u = upper_bound(s[:, 49::50], t[49::50], alpha)
    missed = (u < level).any(axis=1)
    assert not (missed & ~ever).any()


def test_upper_bound_is_the_crossing_point_and_above_the_estimate():
    s = np.array([0, 5, 40, 90, 180, 1000])
    t = np.array([10, 10, 50, 100, 200, 1000])
    u = upper_bound(s, t, 0.05)
    assert (u >= s / t).all()
    inner = u < 1
    np.testing.assert_allclose(log_mixture(s[inner], t[inner], u[inner]), np.log(20), atol=1e-6)
    # M_t(p) increases with p above the estimate: the set of p not rejected is an interval below U
    for si, ti in zip(s[s < t], t[s < t]):
        grid = np.linspace(si / ti + 1e-6, 1 - 1e-9, 400)
        assert (np.diff(log_mixture(si, ti, grid)) > -1e-9).all()
    assert upper_bound(np.array([0]), np.array([0]), 0.05)[0] == 1.0
    # all successes: M_t(p) = 1 / (t + 1) for every p, never rejected, U = 1
    assert u[-1] == 1.0 and float(log_mixture(1000, 1000, 0.99)) == pytest.approx(-np.log(1001))


def test_pvalues_are_non_increasing_and_detect_a_drop():
    rng = np.random.default_rng(1)
    delays = []
    for _ in range(200):
        x = (rng.random(2000) < 0.70).astype(float)  # true 0.70 against a promise of 0.85
        p = anytime_pvalues(x, 0.85)
        assert (np.diff(p) <= 1e-15).all()
        hit = np.flatnonzero(p <= 0.01)
        delays.append(hit[0] + 1 if hit.size else np.inf)
    delays = np.array(delays)
    assert np.isfinite(delays).all()
    # measured: median ~90 labelled positives at alpha 0.01 (0.70 vs 0.85)
    assert 40 <= np.median(delays) <= 160
