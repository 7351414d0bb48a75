"""The monitor's two-sample tests against scipy (formulas computed independently) and their false-alarm
rates under simulated nulls with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from chestxr.monitoring import chi2_homogeneity, fisher_exact_two_sided, ks_test, mmd_test, prepare_embedding_reference
from chestxr.monitoring._montecarlo import sequential_mc_pvalue


def binom_limit(n: int, p: float, q: float = 0.999) -> int:
    """The count a Binomial(n, p) stays at or below with probability q: the most a valid test may show."""
    return int(stats.binom.ppf(q, n, p))


@pytest.mark.parametrize("n,m", [(40, 50), (300, 500), (2000, 500)])
def test_ks_matches_scipy(n, m):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(0.2, 1.1, size=m)
    d, p = ks_test(a, b)
    ref = stats.ks_2samp(a, b, method="exact" if n * m <= 10_000 else "asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)


def test_ks_leaves_out_missing_values_and_is_undefined_when_empty():
    d, p = ks_test(np.array([0.1, np.nan, 0.3, 0.5]), np.array([0.2, 0.4, np.nan]))
    assert d == pytest.approx(stats.ks_2samp([0.1, 0.3, 0.5], [0.2, 0.4]).statistic)
    d, p = ks_test(np.array([np.nan]), np.array([0.2]))
    assert np.isnan(d) and np.isnan(p)


def test_fisher_matches_scipy_on_random_tables():
    rng = np.random.default_rng(3)
    n_ref = rng.integers(1, 400, size=200)
    n_win = rng.integers(1, 400, size=200)
    k_ref = rng.integers(0, n_ref + 1)
    k_win = rng.integers(0, n_win + 1)
    k_ref[:3], k_win[:3] = 0, 0  # no positives anywhere: p = 1
    k_ref[3], k_win[3] = n_ref[3], n_win[3]
    got = fisher_exact_two_sided(k_ref, n_ref, k_win, n_win)
    want = [stats.fisher_exact([[a, n - a], [b, m - b]]).pvalue for a, n, b, m in zip(k_ref, n_ref, k_win, n_win)]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)
    assert np.isnan(fisher_exact_two_sided([1], [0], [1], [5])[0])


def test_chi2_asymptotic_matches_scipy_and_small_counts_go_exact():
    rng = np.random.default_rng(0)
    ref, win = np.array([200, 150, 100]), np.array([90, 80, 30])
    x2, p, method = chi2_homogeneity(ref, win, rng, b_max=999)
    res = stats.chi2_contingency(np.vstack([ref, win]), correction=False)
    assert method == "chi-squared"
    assert x2 == pytest.approx(res.statistic) and p == pytest.approx(res.pvalue)
    # a new category with 3 images: expected counts < 5, the p-value is Monte Carlo exact
    x2, p, method = chi2_homogeneity(np.array([300, 200, 0]), np.array([150, 97, 3]), rng, b_max=9999)
    assert method.startswith("chi-squared, exact")
    # the exact conditional probability of >= 3 of the 3 new-category images landing in the window,
    # given the margins: C(250, 3)/C(750, 3) ~ 0.037, with the other categories adding a little
    assert 0.02 < p < 0.08
    assert chi2_homogeneity(np.array([10]), np.array([5]), rng, b_max=99)[1] == 1.0
    assert np.isnan(chi2_homogeneity(np.array([10, 3]), np.array([0, 0]), rng, b_max=99)[1])


def test_sequential_monte_carlo_pvalue_is_valid_and_resolves_to_b_max():
    rng = np.random.default_rng(1)

    def draw(b, g):
        return g.random(b)

    # observed statistic drawn from the null itself: P(p <= u) <= u
    ps = np.array([sequential_mc_pvalue(rng.random(), draw, rng, b_max=999)[0] for _ in range(3000)])
    for u in (0.01, 0.05, 0.2):
        assert (ps <= u).sum() <= binom_limit(3000, u)
    # a statistic beyond every draw: the smallest p the budget allows
    p, used = sequential_mc_pvalue(2.0, draw, rng, b_max=1999)
    assert (p, used) == (1 / 2000, 1999)
    # a clearly unremarkable statistic stops early, after exactly h exceedances
    p, used = sequential_mc_pvalue(0.0, draw, rng, b_max=10_000, h=10)
    assert used == 10 and p == 1.0


def test_chi2_small_counts_false_alarm_rate():
    """A rare category (expected < 5, the Monte Carlo branch): rejections at 0.05 stay within the binomial limit."""
    rng = np.random.default_rng(2)
    probs = [0.6, 0.37, 0.03]
    reps = 800
    rejected = 0
    for _ in range(reps):
        ref = rng.multinomial(150, probs)
        win = rng.multinomial(60, probs)
        rejected += chi2_homogeneity(ref, win, rng, b_max=999)[1] <= 0.05
    assert rejected <= binom_limit(reps, 0.05)


def test_mmd_false_alarm_rate_and_power():
    rng = np.random.default_rng(5)
    reps, rejected, detected = 200, 0, 0
    for r in range(reps):
        ref = prepare_embedding_reference(rng.normal(size=(300, 8)), rng)
        assert ref is not None
        p_null = mmd_test(ref, rng.normal(size=(150, 8)), rng, b_max=999)[1]
        rejected += p_null <= 0.05
        if r < 40:
            shifted = rng.normal(size=(150, 8))
            shifted[:, 0] += 0.5  # half a standard deviation in one of 8 dimensions
            detected += mmd_test(ref, shifted, rng, b_max=999)[1] <= 0.05
    assert rejected <= binom_limit(reps, 0.05)
    assert detected >= 36  # power ~1 at this shift and size


def test_mmd_undefined_with_too_few_rows():
    rng = np.random.default_rng(0)
    assert prepare_embedding_reference(np.ones((1, 4)), rng) is None
    ref = prepare_embedding_reference(rng.normal(size=(50, 4)), rng)
    assert ref is not None
    stat, p, n, used = mmd_test(ref, np.full((3, 4), np.nan), rng, b_max=99)
    assert np.isnan(p) and n == 0 and used == 0
