"""Metrics: hand-checked point values, DeLong against a brute-force variance, the vectorised
bootstrap against scikit-learn on the same resamples, patient-level resampling, coverage."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from chestxr.core import ChestXRError, to_jsonable
from chestxr.evaluation import (
    MetricInputError,
    UndefinedMetricWarning,
    auroc,
    average_precision,
    binary_metrics_at,
    bootstrap_metrics,
    bootstrap_replicates,
    delong_ci,
    draw_resample_counts,
    evaluate_predictions,
    expected_calibration_error,
    multiclass_metrics,
    reliability_bins,
    weighted_auroc,
)

# positives score 0.35 and 0.8, negatives 0.1 and 0.4
S4 = np.array([0.1, 0.4, 0.35, 0.8])
Y4 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    "thr, tp, fp, tn, fn, sens, spec, ppv, npv, f1",
    [
        (0.35, 2, 1, 1, 0, 1.0, 0.5, 2 / 3, 1.0, 0.8),  # 0.35 itself counts as positive
        (0.8, 1, 0, 2, 1, 0.5, 1.0, 1.0, 2 / 3, 2 / 3),
        (0.05, 2, 2, 0, 0, 1.0, 0.0, 0.5, math.nan, 2 / 3),  # nothing called negative: NPV undefined
        (0.9, 0, 0, 2, 2, 0.0, 1.0, math.nan, 0.5, 0.0),  # nothing called positive: PPV undefined
    ],
)
def test_binary_metrics_at_hand_values(thr, tp, fp, tn, fn, sens, spec, ppv, npv, f1):
    r = binary_metrics_at(Y4, S4, thr)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (tp, fp, tn, fn)
    assert (r["n"], r["n_pos"], r["n_neg"], r["prevalence"]) == (4, 2, 2, 0.5)
    got = [r["sensitivity"], r["specificity"], r["ppv"], r["npv"], r["f1"]]
    np.testing.assert_allclose(got, [sens, spec, ppv, npv, f1], equal_nan=True)
    assert r["accuracy"] == pytest.approx((tp + tn) / 4)


def test_binary_metrics_soft_labels_and_nan_threshold():
    r = binary_metrics_at([0.2, 0.5, 0.9, 0.49], [0.1, 0.6, 0.7, 0.8], 0.65)
    assert (r["n_pos"], r["tp"], r["fp"]) == (2, 1, 1)  # 0.5 and 0.9 are positive, 0.49 is not
    r = binary_metrics_at(Y4, S4, math.nan)
    assert math.isnan(r["tp"]) and math.isnan(r["sensitivity"]) and r["n_pos"] == 2


def test_auroc_and_ap_hand_values_with_ties():
    assert auroc(Y4, S4) == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered
    # tie between a positive and a negative at 0.5 counts one half: (0.5 + 1 + 1 + 1) / 4
    assert auroc([1, 0, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # AP = mean over positives of precision at their rank: (1/1 + 2/3) / 2
    assert average_precision(Y4, S4) == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize(
    "fn",
    [
        auroc,
        average_precision,
        lambda y, s: delong_ci(y, s)[0],
        lambda y, s: binary_metrics_at(y, s, 0.5)["specificity"],
    ],
)
def test_single_class_gives_nan_and_warning(fn):
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(fn([1, 1, 1], [0.2, 0.5, 0.9]))


def test_bad_input_raises_chestxr_error():
    with pytest.raises(MetricInputError):
        auroc([0, 1], [0.5, math.nan])
    with pytest.raises(ChestXRError):
        binary_metrics_at([0, 1, 1], [0.5, 0.2], 0.5)
    with pytest.raises(MetricInputError, match="probabilities"):
        expected_calibration_error([0, 1], [-2.0, 3.0])


def _brute_force_delong(y, s):
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return auc, math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_brute_force_variance(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(120) < 0.4).astype(int)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: plenty of ties
    auc, lo, hi = delong_ci(y, s, level=0.9)
    ref_auc, ref_se = _brute_force_delong(y, s)
    z = norm.ppf(0.95)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12) and auc == pytest.approx(ref_auc, abs=1e-12)
    assert lo == pytest.approx(ref_auc - z * ref_se, abs=1e-12)
    assert hi == pytest.approx(ref_auc + z * ref_se, abs=1e-12)


def test_ece_and_reliability_bins_hand_values():
    y, s = [0, 1, 1, 0], [0.05, 0.15, 0.95, 0.85]
    # bins 0, 1, 9, 8 hold one sample each: gaps 0.05, 0.85, 0.05, 0.85
    assert expected_calibration_error(y, s) == pytest.approx(0.45)
    bins = reliability_bins(y, s, n_bins=10)
    np.testing.assert_allclose(bins.edges, np.linspace(0, 1, 11))
    assert bins.count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    frac, mean = bins.frac_pos, bins.mean_score
    assert frac[0] == 0 and frac[1] == 1 and frac[8] == 0 and frac[9] == 1 and np.isnan(frac[2])
    assert mean[0] == 0.05 and mean[1] == 0.15 and np.isnan(mean[2])  # x = mean score, not the bin midpoint
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # score 1.0 falls in the last bin


def test_multiclass_metrics_hand_values():
    y = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    s = np.eye(3)[[0, 1, 1, 2, 2, 0]] * 0.8 + 0.05
    r = multiclass_metrics(y, s)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(r["per_class_recall"], [0.5, 1.0, 2 / 3])


# ----------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_auroc_equals_sklearn_on_repeated_samples(seed):
    rng = np.random.default_rng(seed)
    n = 200
    y = rng.random(n) < 0.3
    s = np.round(rng.random(n) + 0.3 * y, 1)  # ties within and across classes
    w = rng.multinomial(n, np.full(n, 1 / n), size=8).T
    got = weighted_auroc(y, s, w)
    ref = [roc_auc_score(np.repeat(y, w[:, b]), np.repeat(s, w[:, b])) for b in range(8)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def _clustered(seed, n_patients=40, per_patient=10):
    """Labels and scores shared within a patient: images of one patient are not independent."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient)
    y_pat = rng.random(n_patients) < 0.4
    s_pat = rng.normal(y_pat * 1.0, 1.0)
    y = np.repeat(y_pat, per_patient).astype(float)
    s = norm.cdf(np.repeat(s_pat, per_patient) + rng.normal(0, 0.2, groups.size))
    return y[:, None], s[:, None], groups


def test_patient_bootstrap_resamples_whole_patients_and_matches_sklearn():
    y, s, groups = _clustered(0)
    thr = np.array([0.5])
    reps = bootstrap_replicates(y, s, None, thr, groups=groups, n_boot=30, seed=7, chunk_size=7)
    # redo the resampling by hand: same generator, one patient draw per resample
    _, g = np.unique(groups, return_inverse=True)
    counts = draw_resample_counts(40, 30, np.random.default_rng(7))
    assert (counts.sum(axis=0) == 40).all()
    for b in range(30):
        w = counts[g, b].astype(int)  # each image weighted by how often its patient was drawn
        yy, ss = np.repeat(y[:, 0], w), np.repeat(s[:, 0], w)
        assert reps["auroc"][b, 0] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
        r = binary_metrics_at(yy, ss, 0.5)
        for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            assert reps[key][b, 0] == pytest.approx(r[key], abs=1e-12, nan_ok=True)
        # whole patients: an image appears exactly as often as every other image of its patient
        per_patient = w.reshape(40, 10)
        assert (per_patient == per_patient[:, :1]).all()


def test_patient_interval_is_wider_than_image_interval_for_clustered_data():
    y, s, groups = _clustered(1)
    thr = np.array([0.5])
    by_patient = bootstrap_metrics(y, s, None, thr, groups=groups, n_boot=400, seed=0)
    by_image = bootstrap_metrics(y, s, None, thr, n_boot=400, seed=0)
    width = lambda ci: ci[0, 1] - ci[0, 0]  # noqa: E731
    assert width(by_patient["auroc"]) > 1.8 * width(by_image["auroc"])
    assert width(by_patient["sensitivity"]) > 1.8 * width(by_image["sensitivity"])


def test_bootstrap_is_deterministic_and_chunk_invariant():
    y, s, groups = _clustered(2)
    a = bootstrap_replicates(y, s, None, [0.5], groups=groups, n_boot=50, seed=3, chunk_size=50)
    b = bootstrap_replicates(y, s, None, [0.5], groups=groups, n_boot=50, seed=3, chunk_size=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_bootstrap_masked_entries_left_out_and_nan_threshold():
    rng = np.random.default_rng(4)
    y = (rng.random((300, 2)) < 0.3).astype(float)
    s = rng.random((300, 2))
    mask = rng.random((300, 2)) < 0.8
    y_junk, s_junk = y.copy(), s.copy()
    y_junk[~mask], s_junk[~mask] = 1.0 - y[~mask], np.nan  # masked entries must never be read
    thr = np.array([0.5, np.nan])
    a = bootstrap_metrics(y, s, mask, thr, n_boot=50)
    b = bootstrap_metrics(y_junk, s_junk, mask, thr, n_boot=50)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert np.isfinite(a["auroc"]).all() and np.isnan(a["sensitivity"][1]).all()


def test_bootstrap_coverage_binormal_simulation():
    """Percentile bootstrap and DeLong intervals cover the true AUROC / sensitivity about 95% of the time."""
    mu, n = 1.0, 80
    true_auc, true_sens = norm.cdf(mu / math.sqrt(2)), norm.cdf(mu)  # threshold 0 on the latent scale
    rng = np.random.default_rng(2024)
    hit_auc = hit_sens = hit_delong = 0
    n_sim = 200
    for i in range(n_sim):
        y = np.r_[np.ones(n), np.zeros(n)]
        s = norm.cdf(np.r_[rng.normal(mu, 1, n), rng.normal(0, 1, n)])
        ci = bootstrap_metrics(y[:, None], s[:, None], None, [0.5], n_boot=300, seed=i)
        hit_auc += ci["auroc"][0, 0] <= true_auc <= ci["auroc"][0, 1]
        hit_sens += ci["sensitivity"][0, 0] <= true_sens <= ci["sensitivity"][0, 1]
        _, lo, hi = delong_ci(y, s)
        hit_delong += lo <= true_auc <= hi
    for hits in (hit_auc, hit_sens, hit_delong):
        assert 0.90 <= hits / n_sim <= 0.99, (hit_auc, hit_sens, hit_delong)


# ----------------------------------------------------------------------------- evaluate
def _dataset(seed=5, n=400, f=3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, f)) < [0.2, 0.4, 0.1]).astype(float)
    s = norm.cdf(rng.normal(y * 1.2 - 0.8, 1.0))
    mask = rng.random((n, f)) < 0.85
    groups = rng.integers(0, 150, n)
    return y, s, mask, groups


def test_evaluate_predictions_equals_sklearn():
    y, s, mask, groups = _dataset()
    thr = np.array([0.3, 0.5, 0.4])
    names = ["Atelectasis", "Effusion", "Nodule"]
    r = evaluate_predictions(y, s, mask, thr, names, groups=groups, n_boot=200)
    assert r["n_images"] == 400 and r["n_patients"] == np.unique(groups).size and r["n_boot"] == 200
    for j, name in enumerate(names):
        rec, v = r["findings"][name], mask[:, j]
        yj, sj, pred = y[v, j], s[v, j], s[v, j] >= thr[j]
        assert rec["n"] == v.sum() and rec["n_pos"] == yj.sum()
        assert rec["auroc"] == pytest.approx(roc_auc_score(yj, sj), abs=1e-12)
        assert rec["ap"] == pytest.approx(average_precision_score(yj, sj), abs=1e-12)
        assert rec["tp"] == np.sum(pred & (yj == 1)) and rec["fp"] == np.sum(pred & (yj == 0))
        assert rec["sensitivity"] == pytest.approx(np.mean(pred[yj == 1]))
        assert rec["specificity"] == pytest.approx(np.mean(~pred[yj == 0]))
        assert rec["ece"] == pytest.approx(expected_calibration_error(yj, sj))
        for key in ("auroc", "sensitivity", "specificity", "ppv", "npv", "f1"):
            lo, hi = rec[f"{key}_ci"]
            assert lo <= rec[key] <= hi, (name, key)
        assert rec["auroc_delong_ci"][0] < rec["auroc"] < rec["auroc_delong_ci"][1]
        assert rec["promise"] is None
    assert r["macro"]["auroc"] == pytest.approx(np.mean([r["findings"][n]["auroc"] for n in names]))
    assert r["micro"]["auroc"] == pytest.approx(roc_auc_score(y[mask], s[mask]), abs=1e-12)
    pred = s >= thr
    assert r["micro"]["sensitivity"] == pytest.approx(np.sum(pred & mask & (y == 1)) / np.sum(mask & (y == 1)))
    # no mask: micro AUROC is sklearn's average="micro"
    r2 = evaluate_predictions(y, s, None, thr, names, n_boot=0)
    assert r2["micro"]["auroc"] == pytest.approx(roc_auc_score(y, s, average="micro"), abs=1e-12)
    assert r2["n_patients"] is None
    json.dumps(to_jsonable(r), allow_nan=False)


def test_evaluate_single_class_finding_warns_once_and_gives_nan():
    y, s, mask, _ = _dataset()
    y[:, 2] = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = evaluate_predictions(y, s, mask, [0.3, 0.5, 0.4], ["a", "b", "c"], n_boot=50)
    undefined = [w for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert len(undefined) == 1 and "c:" in str(undefined[0].message)
    c = r["findings"]["c"]
    assert math.isnan(c["auroc"]) and math.isnan(c["sensitivity"]) and np.isnan(c["auroc_ci"]).all()
    assert c["specificity"] == pytest.approx(np.mean(s[mask[:, 2], 2] < 0.4))
    assert r["macro"]["auroc"] == pytest.approx(np.mean([r["findings"][k]["auroc"] for k in "ab"]))


def test_evaluate_flags_a_contradicted_promise_and_never_says_holds():
    y, s, mask, _ = _dataset()
    from chestxr.evaluation import OperatingPoint

    def guaranteed(name, target):
        return OperatingPoint(name, method=f"sensitivity:{target}", status="guaranteed", target=target)

    promised = {"Effusion": guaranteed("Effusion", 0.999), "Nodule": guaranteed("Nodule", 0.05)}
    r = evaluate_predictions(
        y, s, mask, [0.3, 0.5, 0.4], ["Atelectasis", "Effusion", "Nodule"], n_boot=100, promised=promised
    )
    assert r["findings"]["Atelectasis"]["promise"] is None
    eff, nod = r["findings"]["Effusion"]["promise"], r["findings"]["Nodule"]["promise"]
    assert eff["state"] == "contradicted" and eff["family_size"] == 2 and "Holm over 2" in eff["detail"]
    assert nod["state"] == "not_contradicted" and nod["verdict"].startswith("not contradicted (p = ")
    assert "holds" not in eff["detail"] + nod["detail"] + nod["verdict"]
    summary = r["promise_summary"]
    assert summary["contradicted"] == ["Effusion"] and summary["not_contradicted"] == ["Nodule"]
    assert summary["no_record"] == ["Atelectasis"] and "Atelectasis" in summary["text"]
