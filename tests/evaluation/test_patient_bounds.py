"""Patient-level bounds (chestxr/evaluation/_patient_bounds.py) against exact truth: scipy's exact binomial
with one image per patient, and exact enumeration of the sum of per-patient fractions for patients with
several images under every kind of within-patient dependence (independent, beta-binomial, all-or-nothing,
and the two-point laws that beat the binomial's tail)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import betabinom, binom, binomtest

from chestxr.evaluation import lower_bound
from chestxr.evaluation._patient_bounds import (
    BoundError,
    PatientCounts,
    critical_failures,
    failure_tail,
    patient_counts,
    patients_needed,
    promise_p_value,
    success_lower_bound,
    success_upper_bound,
    two_sided_interval,
)


def test_one_image_per_patient_is_exact_clopper_pearson():
    for x, n in [(29, 29), (28, 28), (45, 50), (7, 20), (0, 10), (1, 1), (180, 200)]:
        c = PatientCounts(n, n, float(x), x, True)
        ci = binomtest(x, n).proportion_ci(0.90, method="exact")  # one-sided 95 % = two-sided 90 %
        assert success_lower_bound(c, 0.95) == pytest.approx(ci.low, abs=1e-12)
        assert success_upper_bound(c, 0.95) == pytest.approx(ci.high, abs=1e-12)
        assert success_lower_bound(c, 0.95) == pytest.approx(lower_bound(x, n, 0.95), abs=1e-12)
        assert two_sided_interval(c, 0.90) == pytest.approx((ci.low, ci.high), abs=1e-12)
        if 0 < x:
            p = binomtest(x, n, 0.8, alternative="less").pvalue
            assert promise_p_value(c, 0.8) == pytest.approx(p, rel=1e-9)


def test_zero_failures_need_the_same_patients_whatever_the_images():
    assert (patients_needed(0.9, 0.95), patients_needed(0.8, 0.95), patients_needed(0.95, 0.95)) == (29, 14, 59)
    assert 0.9**29 <= 0.05 < 0.9**28
    for single in (True, False):
        assert critical_failures(28, 0.1, 0.05, single) == -math.inf
        assert critical_failures(29, 0.1, 0.05, single) >= 0.0
        c = PatientCounts(29, 29 if single else 120, 29.0, 29 if single else 120, single)
        assert success_lower_bound(c, 0.95) == pytest.approx(0.05 ** (1 / 29))
        assert success_lower_bound(PatientCounts(28, 100, 28.0, 100, single), 0.95) < 0.9


def _fraction_law(m: int, law: str, gamma: float) -> dict[Fraction, float]:
    """Distribution of one patient's failure fraction W/m with mean gamma under a dependence ``law``."""
    if law == "independent":
        pmf = binom.pmf(range(m + 1), m, gamma)
    elif law.startswith("betabinom"):
        rho = float(law.split(":")[1])  # intra-patient correlation of the failure indicators
        a = gamma * (1 - rho) / rho
        b = (1 - gamma) * (1 - rho) / rho
        pmf = betabinom.pmf(range(m + 1), m, a, b)
    elif law == "together":  # every image of the patient fails or none: the worst correlation
        pmf = np.zeros(m + 1)
        pmf[0], pmf[m] = 1 - gamma, gamma
    else:  # "one-or-all": W in {1, m}: an interior support point, which beats the binomial tail
        if m == 1 or gamma < 1 / m:
            pmf = np.zeros(m + 1)
            pmf[0], pmf[m] = 1 - gamma, gamma
        else:
            q = (gamma * m - 1) / (m - 1)  # P(W = m); P(W = 1) = 1 - q; mean (1 - q) / m + q = gamma
            pmf = np.zeros(m + 1)
            pmf[1], pmf[m] = 1 - q, q
    return {Fraction(w, m): float(p) for w, p in enumerate(pmf) if p > 0}


def _sum_law(laws: list[dict[Fraction, float]]) -> dict[Fraction, float]:
    out = {Fraction(0): 1.0}
    for law in laws:
        nxt: dict[Fraction, float] = {}
        for (a, pa), (b, pb) in itertools.product(out.items(), law.items()):
            nxt[a + b] = nxt.get(a + b, 0.0) + pa * pb
        out = nxt
    return out


@pytest.mark.parametrize("law", ["independent", "betabinom:0.3", "betabinom:0.7", "together", "one-or-all"])
@pytest.mark.parametrize("sizes", [(1, 2, 3, 4, 5, 6), (1, 1, 1, 2, 8, 3, 1, 4)])
def test_bentkus_bound_dominates_the_exact_tail_for_every_dependence(law, sizes):
    """Analytic truth: the exact law of S = sum of per-patient failure fractions, by enumeration. The bound
    must be >= P(S <= y) at every y, for every within-patient dependence and failure rate."""
    for gamma in (0.05, 0.1, 0.3):
        law_s = _sum_law([_fraction_law(m, law, gamma) for m in sizes])
        values = sorted(law_s)
        cdf = np.cumsum([law_s[v] for v in values])
        for v, p in zip(values, cdf):
            assert failure_tail(float(v), len(sizes), gamma, single=False) >= p - 1e-12, (law, gamma, float(v))


def test_the_one_or_all_law_is_why_the_exact_binomial_tail_is_not_enough():
    """A patient with W in {1, m} has a failure fraction whose sum has a heavier lower tail than the
    all-or-nothing (binomial) case: the binomial CDF would understate it; the Bentkus bound does not."""
    sizes, gamma = (4, 4), 0.5
    law_s = _sum_law([_fraction_law(m, "one-or-all", gamma) for m in sizes])
    p_exact = sum(p for v, p in law_s.items() if v <= Fraction(1, 2))
    assert p_exact > binom.cdf(0, 2, gamma)  # 4/9 > 1/4
    assert failure_tail(0.5, 2, gamma, single=False) >= p_exact


def test_critical_value_and_lower_bound_are_consistent():
    for k, gamma, alpha in [(30, 0.1, 0.05), (120, 0.1, 0.05), (240, 0.2, 0.01), (150, 0.05, 0.0036)]:
        y = critical_failures(k, gamma, alpha, single=False)
        assert failure_tail(y, k, gamma, single=False) <= alpha + 1e-12
        assert failure_tail(y + 0.05, k, gamma, single=False) > alpha
        # the lower bound at the critical sum is the target itself
        c = PatientCounts(k, 3 * k, k - y, 3 * k, False)
        assert success_lower_bound(c, 1 - alpha) == pytest.approx(1 - gamma, abs=1e-6)
        assert success_lower_bound(c, 1 - alpha) <= 1 - y / k  # never above the estimate
    for k, gamma, alpha in [(40, 0.1, 0.05), (100, 0.1, 0.05)]:  # exact: the largest count with cdf <= alpha
        c = critical_failures(k, gamma, alpha, single=True)
        assert binom.cdf(c, k, gamma) <= alpha < binom.cdf(c + 1, k, gamma)


def test_patient_counts_take_each_patients_fraction():
    #           patient a: 3 of 4 detected, b: 1 of 1, c: 0 of 2
    ok = np.array([1, 1, 1, 0, 1, 0, 0], dtype=bool)
    g = np.array(["a", "a", "a", "a", "b", "c", "c"])
    c = patient_counts(ok, g)
    assert (c.k, c.images, c.image_successes, c.single) == (3, 7, 4, False)
    assert c.successes == pytest.approx(0.75 + 1 + 0) and c.patient_rate == pytest.approx(1.75 / 3)
    assert patient_counts(ok).single and patient_counts(ok).k == 7
    with pytest.raises(BoundError, match="one patient id per image"):
        patient_counts(ok, g[:3])
    with pytest.raises(BoundError, match="confidence"):
        success_lower_bound(c, 1.5)


def test_lower_bound_covers_on_clustered_binormal_counts():
    """Monte-Carlo with analytic truth at a FIXED threshold: 120 patients with 1-40 images, image-level
    detection 0.85 with within-patient correlation 0.7 (latent normal); the 95 % lower bound must be
    <= 0.85 in >= 95 % of 1,000 replications (minus 2 Monte-Carlo s.e.)."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    t, truth, reps = norm.ppf(0.15), 0.85, 1000  # score N(0, 1) per image; detected when score >= t
    below = 0
    for _ in range(reps):
        m = np.minimum(np.floor(1 / rng.random(120)), 40).astype(int)
        g = np.repeat(np.arange(120), m)
        z = np.sqrt(0.7) * np.repeat(rng.standard_normal(120), m) + np.sqrt(0.3) * rng.standard_normal(g.size)
        below += success_lower_bound(patient_counts(z >= t, g), 0.95) <= truth
    assert below / reps >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / reps)
