"""The honest checks' statistics (chestxr/evaluation/_promise_checks.py): the promise test's power against
the exact binomial and a simulation, Holm against hand values and its family-wise error by simulation,
the two-sample exact tests' false-alarm rate under no change."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, boschloo_exact, fisher_exact

from chestxr.evaluation._promise_checks import (
    BOSCHLOO_MAX_CELLS,
    holm,
    patients_for_power,
    promise_power,
    two_sample_test,
)


def test_power_of_the_promise_check_matches_the_exact_binomial_and_a_simulation():
    # the case: 10 test positives, promise 0.9, truth 0.8: reject when x <= 6 (P(<= 6 | 0.9) = 0.0128)
    assert binom.cdf(6, 10, 0.9) <= 0.05 < binom.cdf(7, 10, 0.9)
    assert promise_power(10, 0.9) == pytest.approx(binom.cdf(6, 10, 0.8))
    assert 0.11 < promise_power(10, 0.9) < 0.13
    rng = np.random.default_rng(0)
    x = rng.binomial(60, 0.8, size=20000)
    crit = max(c for c in range(61) if binom.cdf(c, 60, 0.9) <= 0.05)
    assert promise_power(60, 0.9) == pytest.approx(np.mean(x <= crit), abs=0.01)
    assert math.isnan(promise_power(0, 0.9)) and promise_power(5, 0.05) == 1.0
    n = patients_for_power(0.9)
    assert promise_power(n, 0.9) >= 0.8 and promise_power(n - 1, 0.9) < 0.8 or n == 1
    assert all(promise_power(j, 0.9) >= 0.8 for j in range(n, 2 * n))


def test_holm_against_hand_values():
    r = holm([0.01, 0.04, 0.03, 0.2, float("nan")], alpha=0.05)
    # sorted 0.01 (x4 = 0.04 <= 0.05: reject), 0.03 (x3 = 0.09: stop)
    assert r.m == 4 and r.rejected.tolist() == [True, False, False, False, False]
    assert np.allclose(r.adjusted[:4], [0.04, 0.09, 0.09, 0.2]) and math.isnan(r.adjusted[4])
    assert holm([0.001, 0.002], 0.05).rejected.all() and not holm([], 0.05).rejected.size


def test_holm_keeps_the_family_wise_error_at_alpha():
    """14 findings, 10 with the promise exactly met (p ~ uniform), 4 clearly broken: P(any met promise
    flagged) <= 0.05 over 4,000 simulated evaluations (2 Monte-Carlo s.e.), and the broken ones are found."""
    rng = np.random.default_rng(1)
    reps, false, found = 4000, 0, 0
    for _ in range(reps):
        p = np.r_[rng.random(10), rng.random(4) * 1e-4]
        r = holm(p, 0.05)
        false += r.rejected[:10].any()
        found += r.rejected[10:].all()
    assert false / reps <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)
    assert found / reps > 0.99


def test_two_sample_exact_tests_match_scipy_and_hold_their_false_alarm_rate():
    r = two_sample_test(90, 100, 80, 100)
    assert r.method == "boschloo" and r.p_value == pytest.approx(
        boschloo_exact([[90, 80], [10, 20]], alternative="two-sided").pvalue
    )
    big = two_sample_test(900, 1000, 850, 1000)
    assert 1000 * 1000 > BOSCHLOO_MAX_CELLS and big.method == "fisher"
    assert big.p_value == pytest.approx(fisher_exact([[900, 850], [100, 150]])[1])
    assert two_sample_test(10, 10, 20, 20).p_value == 1.0 and math.isnan(two_sample_test(1, 0, 1, 2).p_value)
    # no change: calibration and test draw the same rate 0.9; the exact test flags <= 5 % (Monte-Carlo)
    rng = np.random.default_rng(2)
    reps = 150
    flags = sum(
        two_sample_test(int(rng.binomial(40, 0.9)), 40, int(rng.binomial(30, 0.9)), 30).p_value < 0.05
        for _ in range(reps)
    )
    assert flags / reps <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)
    assert two_sample_test(58, 60, 25, 40).p_value < 0.001  # a real move is seen


def test_permutation_test_for_patients_with_several_images():
    rng = np.random.default_rng(4)

    def fractions(k, rate):  # per-patient detected fractions, images of a patient agreeing strongly
        m = np.minimum(np.floor(1 / rng.random(k)), 40).astype(int)
        p = np.clip(rate + 0.2 * rng.standard_normal(k), 0, 1)
        return rng.binomial(m, p) / m

    a, b = fractions(80, 0.85), fractions(60, 0.85)
    r1, r2 = (
        two_sample_test(0, 0, 0, 0, fractions_1=a, fractions_2=b, seed=0),
        two_sample_test(0, 0, 0, 0, fractions_1=a, fractions_2=b, seed=0),
    )
    assert r1.method == "permutation" and r1.p_value == r2.p_value and 1e-4 <= r1.p_value <= 1  # seeded
    reps, flags = 100, 0
    for _ in range(reps):
        r = two_sample_test(0, 0, 0, 0, fractions_1=fractions(40, 0.85), fractions_2=fractions(30, 0.85))
        flags += r.p_value < 0.05
    assert flags / reps <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)
    moved = two_sample_test(0, 0, 0, 0, fractions_1=fractions(80, 0.9), fractions_2=fractions(80, 0.5))
    assert moved.p_value < 0.01
