"""Prevalence under label shift: the identities, the exact box's coverage and the PPV/NPV test's error rate
in simulation (truth known analytically), and the EM estimate on a calibrated model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from chestxr.monitoring import bbse_intervals, em_prevalence, predictive_value_pvalue
from chestxr.monitoring._labelshift import npv_from_rates, ppv_from_rates, prevalence_from_rates


def test_identities():
    pi, t, f = np.array([0.05, 0.1, 0.3]), np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.05, 0.2])
    q = pi * t + (1 - pi) * f
    np.testing.assert_allclose(prevalence_from_rates(q, t, f), pi)
    np.testing.assert_allclose(ppv_from_rates(q, t, f), pi * t / (pi * t + (1 - pi) * f))
    np.testing.assert_allclose(npv_from_rates(q, t, f), (1 - pi) * (1 - f) / ((1 - pi) * (1 - f) + pi * (1 - t)))
    assert np.isnan(prevalence_from_rates(0.3, 0.2, 0.2))  # a classifier at chance identifies nothing
    assert prevalence_from_rates(0.01, 0.9, 0.1) == 0.0  # below the false-positive rate: clipped


@pytest.mark.parametrize("pi,n_window,n_pos,n_neg", [(0.05, 300, 40, 400), (0.2, 500, 60, 300), (0.1, 100, 25, 200)])
def test_exact_box_covers_prevalence_ppv_and_npv(pi, n_window, n_pos, n_neg):
    rng = np.random.default_rng(int(pi * 1000) + n_window)
    reps, t, f = 4000, 0.9, 0.12
    q = pi * t + (1 - pi) * f
    counts = (rng.binomial(n_window, q, reps), np.full(reps, n_window))
    out = bbse_intervals(
        counts,
        (rng.binomial(n_pos, t, reps), np.full(reps, n_pos)),
        (rng.binomial(n_neg, f, reps), np.full(reps, n_neg)),
        0.95,
    )
    truth = {
        "prevalence": pi,
        "ppv": pi * t / (pi * t + (1 - pi) * f),
        "npv": (1 - pi) * (1 - f) / ((1 - pi) * (1 - f) + pi * (1 - t)),
    }
    limit = stats.binom.ppf(0.999, reps, 0.05)
    for name, value in truth.items():
        missed = ~((out[f"{name}_lo"] <= value + 1e-12) & (value - 1e-12 <= out[f"{name}_hi"]))
        assert missed.sum() <= limit, name
        assert (out[f"{name}_lo"] <= out[name] + 1e-12).all() and (out[name] <= out[f"{name}_hi"] + 1e-12).all()


def test_ppv_promise_test_error_rate_at_the_boundary_and_its_power():
    rng = np.random.default_rng(7)
    reps, t, f, level = 1500, 0.9, 0.1, 0.40
    # the prevalence at which PPV is exactly the promised 0.40: pi t / (pi t + (1 - pi) f) = 0.4
    pi0 = level * f / (t * (1 - level) + level * f)
    ref_t = (rng.binomial(200, t, reps), np.full(reps, 200))
    ref_f = (rng.binomial(2000, f, reps), np.full(reps, 2000))

    def pvalues(pi: float) -> np.ndarray:
        q = pi * t + (1 - pi) * f
        return predictive_value_pvalue("ppv", level, (rng.binomial(2000, q, reps), np.full(reps, 2000)), ref_t, ref_f)

    p0 = pvalues(pi0)
    assert (p0 <= 0.05).sum() <= stats.binom.ppf(0.999, reps, 0.05)
    # the exact box is conservative (measured: 0.07 % rejections at the boundary for a stated 5 %), and
    # so not powerful: rejections 12 % at PPV 0.27, 59 % at PPV 0.16, 83 % at PPV 0.08 (2,000 patients)
    assert (pvalues(0.01) <= 0.05).mean() > 0.7
    # NPV likewise: NPV falls as the prevalence rises
    npv_level = 0.95
    pi_npv = (1 - npv_level) * (1 - f) / ((1 - npv_level) * (1 - f) + npv_level * (1 - t))
    q = pi_npv * t + (1 - pi_npv) * f
    pn = predictive_value_pvalue("npv", npv_level, (rng.binomial(2000, q, reps), np.full(reps, 2000)), ref_t, ref_f)
    assert (pn <= 0.05).sum() <= stats.binom.ppf(0.999, reps, 0.05)


def test_ppv_pvalue_is_one_when_the_window_matches_and_nan_without_counts():
    p = predictive_value_pvalue(
        "ppv",
        0.3,
        (np.array([100]), np.array([500])),
        (np.array([90]), np.array([100])),
        (np.array([50]), np.array([500])),
    )
    assert p[0] == 1.0
    p = predictive_value_pvalue(
        "ppv", 0.3, (np.array([0]), np.array([0])), (np.array([90]), np.array([100])), (np.array([50]), np.array([500]))
    )
    assert np.isnan(p[0])
    with pytest.raises(ValueError):
        predictive_value_pvalue("sensitivity", 0.3, (1, 2), (1, 2), (1, 2))


def test_em_recovers_a_shifted_prevalence_on_a_calibrated_model():
    rng = np.random.default_rng(11)
    delta, pi_ref = 2.0, np.array([0.1, 0.3])
    pi_new = np.array([0.25, 0.1])
    n = 100_000
    y = rng.random((n, 2)) < pi_new
    z = delta * y + rng.normal(size=(n, 2))
    # the exact posterior at the reference prevalence: calibrated there
    probs = 1 / (1 + np.exp(-(np.log(pi_ref / (1 - pi_ref)) + delta * z - delta**2 / 2)))
    est = em_prevalence(probs, pi_ref)
    np.testing.assert_allclose(est, pi_new, atol=0.01)
    assert np.isnan(em_prevalence(probs[:, :1], np.array([0.0]))[0])
