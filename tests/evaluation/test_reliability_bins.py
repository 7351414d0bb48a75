"""Reliability bins and ECE: one implementation (chestxr/evaluation/_reliability.py), binned as sklearn's
calibration_curve (x = mean predicted probability in the bin), uniform or quantile bins; the report's
reliability diagram plots exactly those points, sparse bins lighter; ECE converges to its analytic value."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from chestxr.evaluation import MIN_BIN_COUNT, MetricInputError, expected_calibration_error, reliability_bins


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.beta(0.7, 1.6, size=n)  # skewed: the bin midpoint and the bin mean differ
    y = (rng.uniform(size=n) < s**0.8).astype(int)
    return y, s


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_bins_equal_sklearn_calibration_curve(strategy, n_bins):
    y, s = _data(700, seed=n_bins)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy=strategy)
    x, frac, count = reliability_bins(y, s, n_bins=n_bins, strategy=strategy).points()
    np.testing.assert_allclose(x, prob_pred, rtol=0, atol=1e-12)
    np.testing.assert_allclose(frac, prob_true, rtol=0, atol=1e-12)
    assert count.sum() == y.size


def test_ece_converges_to_its_analytic_value():
    # scores q ~ U(0, 1), true probability 0.5 + (q - 0.5) / 2 (overconfident): the calibration gap is
    # |q - 0.5| / 2, linear within each bin, so the 10-bin ECE tends to 0.1 * sum |c_b - 0.5| / 2 = 0.125
    rng = np.random.default_rng(0)
    q = rng.uniform(size=200_000)
    y = rng.uniform(size=q.size) < 0.5 + (q - 0.5) / 2
    assert expected_calibration_error(y, q, n_bins=10) == pytest.approx(0.125, abs=0.005)
    # a calibrated model: ECE only from sampling noise
    y_cal = rng.uniform(size=q.size) < q
    assert expected_calibration_error(y_cal, q, n_bins=10) < 0.005
    assert expected_calibration_error(y_cal, q, n_bins=10, strategy="quantile") < 0.005


def test_ece_hand_value_and_bad_input():
    bins = reliability_bins([0, 1, 1], [0.1, 0.5, 0.9], n_bins=2)
    # 0.5 sits on the inner edge: it belongs to the lower bin, as in sklearn
    assert bins.count.tolist() == [2, 1]
    assert bins.mean_score.tolist() == pytest.approx([0.3, 0.9])
    assert bins.ece() == pytest.approx(2 / 3 * abs(0.5 - 0.3) + 1 / 3 * abs(1 - 0.9))
    assert np.isnan(expected_calibration_error([], []))
    with pytest.raises(MetricInputError, match="strategy"):
        reliability_bins([0, 1], [0.2, 0.8], strategy="kmeans")
    with pytest.raises(MetricInputError, match="n_bins"):
        reliability_bins([0, 1], [0.2, 0.8], n_bins=0)


def _offsets(collection) -> np.ndarray:
    return np.asarray(collection.get_offsets(), dtype=float)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_plotted_points_are_calibration_curve_points_sparse_bins_lighter(strategy):
    from matplotlib.figure import Figure

    from chestxr.reporting._plots import _plot_reliability

    y, s = _data(120, seed=3)
    bins = reliability_bins(y, s, n_bins=10, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy=strategy)
    ax = Figure().subplots()
    _plot_reliability(ax, bins)
    line = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"][0]
    np.testing.assert_allclose(line.get_xdata(), prob_pred, atol=1e-12)
    np.testing.assert_allclose(line.get_ydata(), prob_true, atol=1e-12)
    drawn = np.concatenate([_offsets(c) for c in ax.collections])
    expected = np.column_stack([prob_pred, prob_true])
    assert sorted(map(tuple, drawn.round(12))) == sorted(map(tuple, expected.round(12)))
    _, _, count = bins.points()
    sparse = count < MIN_BIN_COUNT
    if strategy == "uniform":
        assert sparse.any()  # few high scores: the top bins are sparse
    solid = ax.collections[0]
    np.testing.assert_allclose(_offsets(solid), expected[~sparse], atol=1e-12)
    if sparse.any():
        light = ax.collections[1]
        np.testing.assert_allclose(_offsets(light), expected[sparse], atol=1e-12)
        assert light.get_alpha() < 0.5
        assert len(light.get_facecolors()) == 0 or light.get_facecolors()[0][3] == 0  # hollow


def test_bin_midpoints_are_not_what_is_plotted():
    # the old diagram put each bin's fraction at its midpoint; a calibrated model then looked off
    from matplotlib.figure import Figure

    from chestxr.reporting._plots import _plot_reliability

    rng = np.random.default_rng(1)
    s = rng.uniform(size=4000) ** 4  # piled up at the low end of the first bins
    y = rng.uniform(size=s.size) < s
    ax = Figure().subplots()
    _plot_reliability(ax, reliability_bins(y, s, n_bins=10))
    line = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"][0]
    x, frac = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    heavy = x < 0.1  # the first bin: thousands of samples
    assert abs(frac[heavy][0] - x[heavy][0]) < 0.02  # calibrated: on the diagonal at the bin mean
    assert abs(frac[heavy][0] - 0.05) > 0.02  # but not at the bin midpoint


def test_overview_omits_sparse_bins(monkeypatch):
    import chestxr.reporting._plots as plots

    y, s = _data(120, seed=3)
    bins = reliability_bins(y, s, n_bins=10)
    x, frac, _ = bins.points(MIN_BIN_COUNT)
    figures = []
    monkeypatch.setattr(plots, "figure_to_data_uri", lambda fig: figures.append(fig) or "data:")
    assert plots.plot_reliability_overview({"Nodule": bins}) == "data:"
    (line,) = [ln for ln in figures[0].axes[0].get_lines() if ln.get_label() == "Nodule"]
    np.testing.assert_allclose(line.get_xdata(), x)
    np.testing.assert_allclose(line.get_ydata(), frac)
    assert len(x) < bins.nonempty.sum()
