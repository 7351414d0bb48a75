"""Probability calibration: each method repairs a deliberately over-confident model, recovers the
known distortion, round-trips through JSON, and handles small or one-class findings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from chestxr.core import CalibrationError
from chestxr.evaluation import (
    ProbabilityCalibrator,
    SmallSampleWarning,
    UndefinedMetricWarning,
    compare_ece,
    expected_calibration_error,
    fit_probability_calibrator,
)


def _miscalibrated(seed, n=4000):
    """True P(y=1) = sigmoid(z); the model reports logits 3 z (finding 0, over-confident) and
    0.5 z - 1 (finding 1, under-confident and shifted)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, 2))
    y = (rng.random((n, 2)) < expit(z)).astype(float)
    logits = np.stack([3.0 * z[:, 0], 0.5 * z[:, 1] - 1.0], axis=1)
    return logits, y


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibrators_improve_ece_on_held_out_data(method):
    fit_logits, fit_y = _miscalibrated(0)
    test_logits, test_y = _miscalibrated(1)
    cal = fit_probability_calibrator(fit_logits, fit_y, None, method, findings=["over", "under"])
    rows = compare_ece(test_logits, test_y, None, cal)
    assert [r["finding"] for r in rows] == ["over", "under"] and rows[0]["n"] == 4000
    for r in rows:
        assert r["ece_before"] > 0.05
        if method == "temperature" and r["finding"] == "under":
            continue  # a temperature cannot remove a shift; checked below
        assert r["ece_after"] < 0.3 * r["ece_before"], r
    if method == "temperature":  # still improves the shifted one, and finds T = 3 for the over-confident one
        assert rows[1]["ece_after"] < rows[1]["ece_before"]
        assert cal.params[0]["temperature"] == pytest.approx(3.0, rel=0.1)
    probs = cal.apply(test_logits)
    assert probs.shape == (4000, 2) and (probs >= 0).all() and (probs <= 1).all()


def test_platt_recovers_the_known_map():
    logits, y = _miscalibrated(2, n=20000)
    cal = fit_probability_calibrator(logits, y, None, "platt")
    a0, b0 = cal.params[0]["a"], cal.params[0]["b"]
    a1, b1 = cal.params[1]["a"], cal.params[1]["b"]
    assert (a0, b0) == pytest.approx((1 / 3, 0.0), abs=0.05)  # z = logit / 3
    assert (a1, b1) == pytest.approx((2.0, 2.0), abs=0.15)  # z = 2 (logit + 1)


def test_temperature_and_platt_keep_ranking():
    logits, y = _miscalibrated(3, n=500)
    for method in ("temperature", "platt"):
        p = fit_probability_calibrator(logits, y, None, method).apply(logits)
        assert (np.argsort(p[:, 0], kind="stable") == np.argsort(logits[:, 0], kind="stable")).all()


def test_isotonic_matches_sklearn_and_interpolates_breakpoints():
    logits, y = _miscalibrated(4, n=3000)
    cal = fit_probability_calibrator(logits, y, None, "isotonic")
    new = np.linspace(-12, 12, 301)[:, None].repeat(2, axis=1)  # beyond the fitted range too (clipped)
    for j in range(2):
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(logits[:, j], y[:, j])
        np.testing.assert_allclose(cal.apply(new)[:, j], iso.predict(new[:, j]), atol=1e-12)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_round_trip_through_json(method):
    logits, y = _miscalibrated(5, n=1500)
    mask = np.random.default_rng(0).random(y.shape) < 0.9
    cal = fit_probability_calibrator(logits, y, mask, method, findings=["a", "b"])
    d = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    back = ProbabilityCalibrator.from_dict(d)
    assert back.findings == ["a", "b"] and back.n_samples == mask.sum(axis=0).tolist()
    np.testing.assert_array_equal(back.apply(logits), cal.apply(logits))


def test_masked_entries_are_left_out():
    logits, y = _miscalibrated(6, n=1200)
    mask = np.random.default_rng(1).random(y.shape) < 0.8
    junk_logits, junk_y = logits.copy(), y.copy()
    junk_logits[~mask], junk_y[~mask] = np.nan, 1 - y[~mask]
    a = fit_probability_calibrator(logits, y, mask, "platt")
    b = fit_probability_calibrator(junk_logits, junk_y, mask, "platt")
    assert a.params == b.params


def test_isotonic_warns_on_small_samples():
    logits, y = _miscalibrated(7, n=300)
    with pytest.warns(SmallSampleWarning, match="300 samples"):
        fit_probability_calibrator(logits, y, None, "isotonic")


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_single_class_finding_keeps_identity_and_warns(method):
    logits, y = _miscalibrated(8, n=1000)
    y[:, 1] = 0.0
    with pytest.warns(UndefinedMetricWarning, match="b: "):
        cal = fit_probability_calibrator(logits, y, None, method, findings=["a", "b"])
    assert cal.params[1] == {"identity": True}
    np.testing.assert_allclose(cal.apply(logits)[:, 1], expit(logits[:, 1]))


def test_errors():
    logits, y = _miscalibrated(9, n=100)
    with pytest.raises(CalibrationError, match="temperature, platt, isotonic"):
        fit_probability_calibrator(logits, y, None, "beta")
    cal = fit_probability_calibrator(logits, y, None, "temperature")
    with pytest.raises(CalibrationError, match="2 findings"):
        cal.apply(np.zeros((4, 3)))
    d = cal.to_dict()
    for bad in (
        {**d, "format": "pickle"},
        {**d, "method": "beta"},
        {**d, "params": [{"temperature": -1.0}] * 2},
        {**d, "params": [{}] * 2},
        {**d, "findings": ["only-one"]},
    ):
        with pytest.raises(CalibrationError):
            ProbabilityCalibrator.from_dict(bad)
    iso = fit_probability_calibrator(*_miscalibrated(9, n=1000), None, "isotonic").to_dict()
    iso["params"][0]["x"] = iso["params"][0]["x"][::-1]
    with pytest.raises(CalibrationError, match="sorted"):
        ProbabilityCalibrator.from_dict(iso)


def test_ece_before_uses_sigmoid_of_logits():
    logits, y = _miscalibrated(10, n=800)
    cal = fit_probability_calibrator(logits, y, None, "temperature")
    row = compare_ece(logits, y, None, cal)[0]
    assert row["ece_before"] == pytest.approx(expected_calibration_error(y[:, 0], expit(logits[:, 0])))
    assert math.isfinite(row["ece_after"])


def test_platt_refuses_a_negative_slope_instead_of_inverting_the_ranking():
    """Anti-informative scores (AUROC ~0.15): an unconstrained Platt fit has a < 0 and would turn
    the AUROC into ~0.85 silently. The finding keeps sigmoid(logit) and a warning names it."""
    from sklearn.metrics import roc_auc_score

    from chestxr.evaluation import ProbabilityCalibrator, RefusedCalibrationWarning

    rng = np.random.default_rng(3)
    y = (rng.random((400, 2)) < 0.4).astype(float)
    z = np.stack([rng.normal(-1.5 * y[:, 0], 1.0), rng.normal(1.5 * y[:, 1], 1.0)], axis=1)  # col 0 inverted
    assert roc_auc_score(y[:, 0], z[:, 0]) < 0.2
    with pytest.warns(RefusedCalibrationWarning, match="Pneumothorax: Platt scaling refused: fitted slope a = -"):
        cal = fit_probability_calibrator(z, y, None, "platt", findings=["Pneumothorax", "Effusion"])
    assert cal.params[0]["identity"] and "slope" in cal.params[0]["refused"] and cal.params[1]["a"] > 0
    p = cal.apply(z)
    assert roc_auc_score(y[:, 0], p[:, 0]) == pytest.approx(roc_auc_score(y[:, 0], z[:, 0]))  # ranking kept
    d = cal.to_dict()
    d["params"][1] = {"a": -0.5, "b": 0.0}
    with pytest.raises(CalibrationError, match="slope a must be > 0"):
        ProbabilityCalibrator.from_dict(d)
