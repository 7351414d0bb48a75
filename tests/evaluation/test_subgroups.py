"""Subgroup metrics (chestxr/evaluation/_subgroups.py): point values equal scikit-learn's; the
difference-vs-rest interval, from a joint patient bootstrap, covers the analytic binormal truth at
about its nominal rate and excludes 0 when the groups really differ; the report shows both."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import recall_score, roc_auc_score

from chestxr.evaluation import subgroup_metrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _case(rng: np.random.Generator, n_patients: int, d_ap: float, d_pa: float):
    """Binormal scores (negatives N(0, 1), positives N(d, 1), AUROC = Phi(d / sqrt 2)) for patients
    with 1-2 films each; a patient effect shared by a patient's films; view drawn per film."""
    k = rng.integers(1, 3, size=n_patients)
    patient = np.repeat(np.arange(n_patients), k)
    n = patient.size
    view = np.where(rng.uniform(size=n) < 0.4, "AP", "PA")
    y = rng.uniform(size=n) < 0.3
    effect = rng.normal(0, 0.3, size=n_patients)[patient]
    d = np.where(view == "AP", d_ap, d_pa)
    z = rng.normal(size=n) * math.sqrt(1 - 0.09) + effect + y * d  # total variance 1 per film
    s = 1 / (1 + np.exp(-z))
    return view, y.astype(float)[:, None], s[:, None], patient


def test_point_values_equal_sklearn_and_intervals_are_stated():
    rng = np.random.default_rng(0)
    view, y, s, patient = _case(rng, 300, 1.0, 2.0)
    thr = np.array([0.6])
    out = subgroup_metrics(view, y, s, np.ones_like(y, bool), thr, groups=patient, findings=["X"], n_boot=300)
    assert list(out) == ["AP", "PA"]
    for v in ("AP", "PA"):
        rows = view == v
        cell = out[v]["findings"]["X"]
        assert out[v]["n_images"] == rows.sum() and out[v]["n_patients"] == len(set(patient[rows]))
        assert cell["auroc"] == pytest.approx(roc_auc_score(y[rows, 0], s[rows, 0]), abs=1e-9)
        assert cell["sensitivity"] == pytest.approx(recall_score(y[rows, 0], s[rows, 0] >= 0.6))
        assert cell["auroc_ci"][0] <= cell["auroc"] <= cell["auroc_ci"][1]
        assert cell["sensitivity_ci"][0] <= cell["sensitivity"] <= cell["sensitivity_ci"][1]
        rest = ~rows
        diff = roc_auc_score(y[rows, 0], s[rows, 0]) - roc_auc_score(y[rest, 0], s[rest, 0])
        assert cell["vs_rest"]["auroc"]["difference"] == pytest.approx(diff, abs=1e-9)
        assert cell["vs_rest"]["auroc"]["n_valid"] == 300
    # the two groups are each other's rest: differences mirror
    ap, pa = out["AP"]["findings"]["X"]["vs_rest"]["auroc"], out["PA"]["findings"]["X"]["vs_rest"]["auroc"]
    assert ap["difference"] == pytest.approx(-pa["difference"])


def test_difference_interval_covers_the_binormal_truth():
    d_ap, d_pa = 1.2, 2.0
    truth = norm.cdf(d_ap / math.sqrt(2)) - norm.cdf(d_pa / math.sqrt(2))  # -0.118
    rng = np.random.default_rng(1)
    reps, covered, excludes_zero = 120, 0, 0
    for _ in range(reps):
        view, y, s, patient = _case(rng, 400, d_ap, d_pa)
        cell = subgroup_metrics(
            view, y, s, np.ones_like(y, bool), np.array([0.5]), groups=patient, n_boot=200, seed=int(rng.integers(1e9))
        )["AP"]["findings"]["0"]["vs_rest"]["auroc"]
        lo, hi = cell["ci"]
        covered += lo <= truth <= hi
        excludes_zero += hi < 0
    # nominal 95%: a coverage this low would happen < 1% of the time if the interval were right
    assert binomtest(covered, reps, 0.95, alternative="less").pvalue > 0.01, covered
    assert excludes_zero / reps > 0.5  # the lower AUROC for AP films is usually detected


def test_same_distribution_interval_covers_zero_at_nominal_rate():
    rng = np.random.default_rng(2)
    reps, covered = 100, 0
    for _ in range(reps):
        view, y, s, patient = _case(rng, 300, 1.5, 1.5)
        lo, hi = subgroup_metrics(view, y, s, np.ones_like(y, bool), np.array([0.5]), groups=patient, n_boot=200)["AP"][
            "findings"
        ]["0"]["vs_rest"]["auroc"]["ci"]
        covered += lo <= 0 <= hi
    assert binomtest(covered, reps, 0.95, alternative="less").pvalue > 0.01, covered


def test_undefined_subgroup_is_counted_not_dropped():
    labels = np.array(["a"] * 6 + ["b"] * 6)
    y = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1], float)[:, None]  # group a: positives only
    s = np.linspace(0.1, 0.9, 12)[:, None]
    out = subgroup_metrics(labels, y, s, np.ones_like(y, bool), np.array([0.5]), n_boot=50)
    a = out["a"]["findings"]["0"]
    assert math.isnan(a["auroc"]) and a["n_neg"] == 0
    assert math.isnan(a["auroc_ci"][0]) and a["auroc_ci_n_valid"] == 0
    assert a["vs_rest"]["auroc"]["n_valid"] == 0 and math.isnan(a["vs_rest"]["auroc"]["ci"][0])
    assert not math.isnan(a["sensitivity"])  # sensitivity is defined without negatives
