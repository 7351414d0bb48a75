"""Threshold calibration: every method on hand-built ROC points, ties, masking, single-class
findings, spec parsing, and properties checked against brute force on random data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from chestxr.core import CalibrationError
from chestxr.evaluation import (
    Method,
    OperatingPoint,
    UndefinedMetricWarning,
    decide,
    fit_threshold,
    fit_thresholds,
    parse_method,
)

# Candidates (descending): 0.8 -> TP1 FP0 (sens .5, spec 1); 0.4 -> TP1 FP1 (.5, .5);
# 0.35 -> TP2 FP1 (1, .5); 0.1 -> TP2 FP2 (1, 0). Youden J: .5, 0, .5, 0 (tie: highest wins).
# F1: 2/3, 1/2, 4/5, 2/3. PPV: 1, 1/2, 2/3, 1/2. Cost 1:5 (FP + 5 FN): none 10, 5, 6, 1, 2.
S4 = np.array([0.1, 0.4, 0.35, 0.8])
Y4 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    "spec, thr, sens, spec_",
    [
        ("youden", 0.8, 0.5, 1.0),
        ("sensitivity:0.9@point", 0.35, 1.0, 0.5),
        ("sensitivity:0.5@point", 0.8, 0.5, 1.0),  # highest threshold reaching it
        ("specificity:0.9@point", 0.8, 0.5, 1.0),
        ("specificity:0.5@point", 0.35, 1.0, 0.5),  # lowest threshold keeping it
        ("specificity:0@point", 0.1, 1.0, 0.0),
        ("f1", 0.35, 1.0, 0.5),
        ("ppv:0.6@point", 0.35, 1.0, 0.5),
        ("ppv:0.9@point", 0.8, 0.5, 1.0),
        ("cost:1:5", 0.35, 1.0, 0.5),
        ("cost:5:1", 0.8, 0.5, 1.0),  # FP cost: none 2, 0.8 -> 1, 0.4 -> 6, 0.35 -> 5, 0.1 -> 10
        ("fixed:0.5", 0.5, 0.5, 1.0),
    ],
)
def test_methods_on_hand_built_roc(spec, thr, sens, spec_):
    fit = fit_thresholds(Y4[:, None], S4[:, None], None, spec, findings=["Effusion"])[0]
    assert fit.finding == "Effusion" and fit.method == str(parse_method(spec))
    assert fit.threshold == pytest.approx(thr)
    assert (fit.sensitivity, fit.specificity) == pytest.approx((sens, spec_))
    assert (fit.n_pos, fit.n_neg, fit.prevalence) == (2, 2, 0.5)
    assert fit.tp + fit.fn == 2 and fit.fp + fit.tn == 2


def test_unreachable_points_use_a_finite_threshold_above_all_scores():
    s, y = np.array([0.9, 0.8, 0.1]), np.array([0, 1, 0])  # a negative holds the top score
    fit = fit_threshold(y, s, "specificity:1@point")
    assert math.isfinite(fit.threshold) and fit.threshold > 0.9 and fit.threshold == np.nextafter(0.9, 1)
    assert (fit.tp, fit.fp, fit.specificity, fit.sensitivity) == (0, 0, 1.0, 0.0)
    fit = fit_threshold(y, s, "cost:100:1")  # a false positive costs more than missing the one positive
    assert fit.threshold > 0.9 and fit.fp == 0 and fit.fn == 1
    with pytest.warns(UndefinedMetricWarning, match="PPV"):
        fit = fit_threshold(y, s, "ppv:0.9@point")  # best PPV is 1/2
    assert math.isnan(fit.threshold) and math.isnan(fit.sensitivity)


def test_ties_count_as_positive():
    # scores tied at 0.5: two positives and one negative. Candidates 0.9 (TP1 FP0), 0.5 (TP3 FP1), 0.2 (TP3 FP2)
    s, y = np.array([0.2, 0.5, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1, 1])
    fit = fit_threshold(y, s, "youden")  # J = 1/3, 1/2, 0
    assert fit.threshold == 0.5 and (fit.tp, fit.fp, fit.tn, fit.fn) == (3, 1, 1, 0)
    assert fit_threshold(y, s, "sensitivity:0.5@point").threshold == 0.5  # 0.9 gives only 1/3


@pytest.mark.parametrize(
    "spec",
    ["youden", "sensitivity:0.8", "specificity:0.95", "f1", "ppv:0.5", "cost:1:10", "specificity:1@point"]
    + ["sensitivity:1@point", "sensitivity:0.8@point", "npv:0.8", "npv:0.9@point"],
)
def test_never_returns_sklearns_infinite_threshold(spec):
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) * 0.7 + 0.3 * y, 2)
    fit = fit_threshold(y, s, spec, prevalence=(0.25, 0.35))  # the range only ppv:X / npv:X use
    assert math.isfinite(fit.threshold) and fit.threshold <= np.nextafter(s.max(), 2)


def _counts_at(y, s, t):
    p = s >= t
    return np.sum(p & y), np.sum(p & ~y)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_methods_match_brute_force_over_all_candidates(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(250) < 0.25
    s = np.round(rng.normal(y * 1.0, 1.0), 1)
    cands = np.unique(s)[::-1]  # descending, every distinct score
    P, N = y.sum(), (~y).sum()
    tp, fp = np.array([_counts_at(y, s, t) for t in cands]).T
    sens, spec = tp / P, 1 - fp / N
    # sensitivity:0.8 -> highest candidate with sens >= 0.8; specificity:0.8 -> lowest with spec >= 0.8
    assert fit_threshold(y, s, "sensitivity:0.8@point").threshold == cands[np.flatnonzero(sens >= 0.8)[0]]
    assert fit_threshold(y, s, "specificity:0.8@point").threshold == cands[np.flatnonzero(spec >= 0.8)[-1]]
    assert fit_threshold(y, s, "youden").threshold == cands[np.argmax(sens - (1 - spec))]
    assert fit_threshold(y, s, "ppv:0.4@point").threshold == cands[np.flatnonzero(tp / (tp + fp) >= 0.4)[-1]]
    npv = (N - fp) / np.maximum(1, N - fp + P - tp)
    assert fit_threshold(y, s, "npv:0.8@point").threshold == cands[np.flatnonzero((npv >= 0.8) & (N - fp > 0))[0]]
    cost = fp * 1 + (P - tp) * 4
    assert fit_threshold(y, s, "cost:1:4").threshold == cands[np.argmin(cost)]
    # F1: the best point of sklearn's precision-recall curve
    prec, rec, thr = precision_recall_curve(y, s, drop_intermediate=False)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * prec * rec / (prec + rec))[:-1]
    fit = fit_threshold(y, s, "f1")
    assert fit.f1 == pytest.approx(f1.max()) and fit.threshold in thr[f1 == f1.max()]


def test_masked_entries_are_left_out():
    rng = np.random.default_rng(4)
    y = (rng.random((200, 2)) < 0.3).astype(float)
    s = rng.random((200, 2))
    mask = rng.random((200, 2)) < 0.7
    junk_y, junk_s = y.copy(), s.copy()
    junk_y[~mask], junk_s[~mask] = 1 - y[~mask], np.nan
    a = fit_thresholds(y, s, mask, "f1")
    b = fit_thresholds(junk_y, junk_s, mask, "f1")
    ref = [fit_threshold(y[mask[:, j], j], s[mask[:, j], j], "f1", finding=str(j)) for j in range(2)]
    assert [f.to_dict() for f in a] == [f.to_dict() for f in b] == [f.to_dict() for f in ref]
    assert a[0].n_pos + a[0].n_neg == mask[:, 0].sum()


def test_single_class_finding_gives_nan_and_warning():
    y = np.array([[0, 1], [0, 0], [0, 1]], dtype=float)
    s = np.array([[0.2, 0.9], [0.4, 0.1], [0.3, 0.7]])
    with pytest.warns(UndefinedMetricWarning, match="a: threshold"):
        fits = fit_thresholds(y, s, None, "youden", findings=["a", "b"])
    assert math.isnan(fits[0].threshold) and math.isnan(fits[0].sensitivity)
    assert fits[1].threshold == 0.7
    d = fits[0].to_dict()
    assert d["threshold"] is None and d["tp"] is None
    with pytest.warns(UndefinedMetricWarning):  # fixed needs no data, but the metrics stay undefined
        assert fit_thresholds(y, s, None, "fixed:0.3")[0].threshold == 0.3


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("youden", Method("youden")),
        (" F1 ", Method("f1")),
        ("sensitivity:0.9", Method("sensitivity", target=0.9, guarantee=True)),
        ("specificity:0.95", Method("specificity", target=0.95, guarantee=True)),
        ("ppv:0.5", Method("ppv", target=0.5, guarantee=True)),
        ("npv:0.99", Method("npv", target=0.99, guarantee=True)),
        ("sensitivity:0.9@point", Method("sensitivity", target=0.9)),
        ("NPV:0.9 @ point", Method("npv", target=0.9)),
        ("cost:1:5", Method("cost", cost_fp=1.0, cost_fn=5.0)),
        ("fixed:0.5", Method("fixed", value=0.5)),
    ],
)
def test_parse_method(spec, expected):
    assert parse_method(spec) == expected
    assert parse_method(str(expected)) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "yuoden",
        "sensitivity",
        "sensitivity:1.5",
        "specificity:-0.1",
        "ppv:x",
        "cost:1",
        "cost:0:0",
        "cost:-1:2",
        "fixed",
        "fixed:nan",
        "youden:0.5",
        "youden@point",
        "sensitivity:0.9@exact",
        0.5,
        None,
    ],
)
def test_parse_method_rejects_bad_specs_naming_allowed_forms(spec):
    with pytest.raises(CalibrationError, match="allowed"):
        parse_method(spec)


def test_method_list_and_dict_forms():
    y = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
    s = np.array([[0.1, 0.2], [0.9, 0.8], [0.3, 0.6], [0.7, 0.4]])
    fits = fit_thresholds(y, s, None, ["youden", "fixed:0.25"], findings=["a", "b"])
    assert [f.method for f in fits] == ["youden", "fixed:0.25"]
    fits = fit_thresholds(y, s, None, {"b": "f1", "*": "fixed:0.5"}, findings=["a", "b"])
    assert [f.method for f in fits] == ["fixed:0.5", "f1"]
    fits = fit_thresholds(y, s, None, {"a": "f1", "default": "youden"}, findings=["a", "b"])
    assert [f.method for f in fits] == ["f1", "youden"]
    with pytest.raises(CalibrationError, match="'\\*' default"):
        fit_thresholds(y, s, None, {"a": "f1"}, findings=["a", "b"])
    with pytest.raises(CalibrationError, match="unknown findings"):
        fit_thresholds(y, s, None, {"c": "f1", "*": "youden"}, findings=["a", "b"])
    with pytest.raises(CalibrationError, match="3 threshold methods"):
        fit_thresholds(y, s, None, ["f1"] * 3)
    with pytest.raises(CalibrationError, match="finding names"):
        fit_thresholds(y, s, None, {"*": "f1"})


def test_to_dict_is_json_and_round_trips():
    fit = fit_thresholds(Y4[:, None], S4[:, None], None, "sensitivity:0.9@point", findings=["Mass"])[0]
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    core = {k: d[k] for k in list(d)[:15]}
    assert core == {
        "finding": "Mass",
        "method": "sensitivity:0.9@point",
        "threshold": 0.35,
        "sensitivity": 1.0,
        "specificity": 0.5,
        "ppv": pytest.approx(2 / 3),
        "npv": 1.0,
        "f1": pytest.approx(0.8),
        "tp": 2,
        "fp": 1,
        "tn": 1,
        "fn": 0,
        "n_pos": 2,
        "n_neg": 2,
        "prevalence": 0.5,
    }
    assert (
        d["status"] == "not_a_guarantee" and d["guaranteed"] is False and d["guarantee"] is None and d["target"] == 0.9
    )
    assert d["sensitivity_ci"] == [pytest.approx(0.025**0.5), 1.0]  # Clopper-Pearson for 2 of 2
    assert d["lower_bound"] == pytest.approx(0.05**0.5)  # one-sided, for information
    assert OperatingPoint.from_dict({**d, "extra": 1}) == fit
    old = {k: d[k] for k in core}  # a record written before guarantees existed still loads
    assert OperatingPoint.from_dict(old).status == "not_a_guarantee"


def test_bad_inputs_raise_calibration_error():
    with pytest.raises(CalibrationError):
        fit_thresholds(np.zeros((3, 2)), np.zeros((3, 3)), None, "youden")
    with pytest.raises(CalibrationError):
        fit_thresholds(np.zeros((2, 1)), np.array([[0.1], [np.nan]]), None, "youden")


def test_apply_thresholds():
    s = np.array([[0.2, 0.5], [0.6, 0.9]])
    assert decide(s, [0.5, np.nan]).positive.tolist() == [[False, False], [True, False]]
    with pytest.raises(ValueError):
        decide(s, [0.5])
    from chestxr.calibration import apply_thresholds  # deprecated, kept one release at the stable path

    with pytest.warns(DeprecationWarning, match="decide"):
        assert apply_thresholds(s, [0.5, np.nan]).tolist() == [[False, False], [True, False]]
    with pytest.raises(CalibrationError), pytest.warns(DeprecationWarning):
        apply_thresholds(s, [0.5])
