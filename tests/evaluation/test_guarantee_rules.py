"""Guaranteed rules (chestxr/evaluation/_guarantee_rules.py): the boundary counts, clustered refusals naming
patients, ties, the family allocation, PPV/NPV over a prevalence range, and what is refused and why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chestxr.core import CalibrationError
from chestxr.evaluation._guarantee_rules import (
    RuleFamily,
    allocate_family,
    check_prevalence,
    choose_threshold,
    feasibility,
    npv_at,
    other_class_minimum,
    ppv_at,
    predictive_bound,
)


def test_boundary_28_29_positives_and_the_threshold_is_the_lowest_positive():
    rng = np.random.default_rng(0)
    for n_pos, status in [(28, "insufficient_data"), (29, "guaranteed")]:
        y = np.r_[np.ones(n_pos), np.zeros(100)]
        s = np.r_[rng.normal(3, 1, n_pos), rng.normal(0, 1, 100)]
        ch = choose_threshold("sensitivity", 0.9, y, s, level=0.95)
        assert ch.status == status and ch.n_needed == 29 and ch.method == "clopper-pearson"
        if status == "guaranteed":
            assert ch.threshold == s[:n_pos].min() and ch.lower_bound >= 0.9
        else:
            assert math.isnan(ch.threshold) and "needs at least 29 positives with no misses; has 28" in ch.note
    y = np.r_[np.ones(50), np.zeros(20)]
    ch = choose_threshold("specificity", 0.9, y, rng.random(70))
    assert ch.status == "insufficient_data" and "29 negatives" in ch.note and "has 20" in ch.note


def test_several_images_per_patient_count_patients():
    rng = np.random.default_rng(3)

    def clustered(n_pat):
        g = np.r_[np.repeat(np.arange(n_pat), 5), 1000 + np.arange(100)]
        y = np.r_[np.ones(5 * n_pat), np.zeros(100)]
        s = np.r_[np.repeat(rng.normal(3, 1, n_pat), 5) + rng.normal(0, 0.01, 5 * n_pat), rng.normal(0, 1, 100)]
        return y, s, g

    y, s, g = clustered(10)
    assert choose_threshold("sensitivity", 0.9, y, s).status == "guaranteed"  # images taken as independent
    ch = choose_threshold("sensitivity", 0.9, y, s, g)
    assert ch.status == "insufficient_data" and "50 images from 10 patients" in ch.note
    assert ch.method == "bentkus-patient" and ch.k_pos == 10
    y, s, g = clustered(40)
    ch, naive = choose_threshold("sensitivity", 0.9, y, s, g), choose_threshold("sensitivity", 0.9, y, s)
    assert ch.status == "guaranteed" and ch.lower_bound >= 0.9
    assert ch.threshold <= naive.threshold  # 40 patients carry less evidence than 200 independent images


def test_ties_are_called_positive_and_never_split():
    # 30 positives, 5 of them tied at the lowest score with 3 negatives: the tie is called or missed as one
    s = np.r_[np.full(5, 0.2), np.linspace(0.5, 0.9, 25), np.full(3, 0.2), np.linspace(0.0, 0.1, 40)]
    y = np.r_[np.ones(30), np.zeros(43)]
    ch = choose_threshold("sensitivity", 0.8, y, s)
    assert ch.status == "guaranteed" and ch.threshold in s


def test_family_allocation_is_bonferroni_over_the_findings_that_can_be_guaranteed():
    fam = allocate_family(["A", "B", "C", "D"], [True, True, False, True], 0.95)
    assert fam.members == ("A", "B", "D") and fam.excluded == ("C",) and fam.size == 3
    assert fam.per_finding_level == pytest.approx(1 - 0.05 / 3)
    assert "95% jointly for 3 findings" in fam.describe() and "98.33% each" in fam.describe()
    solo = allocate_family(["A", "B"], [True, True], 0.95, simultaneous=False)
    assert solo.per_finding_level == 0.95 and "not jointly" in solo.describe()
    assert RuleFamily(("A",), 0.95).per_finding_level == 0.95
    d = fam.to_dict()
    assert d["size"] == 3 and d["allocation"] == "bonferroni" and d["members"] == ["A", "B", "D"]
    with pytest.raises(CalibrationError):
        allocate_family(["A"], [True], 1.0)
    # feasibility looks at counts only: 28 positives cannot reach 0.9 alone whatever the scores
    assert not feasibility("sensitivity", 0.9, np.r_[np.ones(28), np.zeros(5)], None, 0.95)[0]
    assert feasibility("sensitivity", 0.9, np.r_[np.ones(29), np.zeros(5)], None, 0.95)[0]


def test_ppv_npv_formulas_and_worst_prevalence():
    assert ppv_at(0.05, 0.9, 0.99) == pytest.approx(0.045 / (0.045 + 0.0095))
    assert npv_at(0.2, 0.9, 0.95) == pytest.approx(0.76 / (0.76 + 0.02))
    # PPV is lowest at the low end of the range, NPV at the high end
    assert predictive_bound("ppv", 0.9, 0.99, (0.05, 0.2)) == pytest.approx(ppv_at(0.05, 0.9, 0.99))
    assert predictive_bound("npv", 0.9, 0.95, (0.05, 0.2)) == pytest.approx(npv_at(0.2, 0.9, 0.95))
    assert check_prevalence([0.05, 0.2]) == (0.05, 0.2)
    for bad in [(0.2, 0.05), (0, 0.1), (0.1, 1.0), "x", None]:
        with pytest.raises(CalibrationError, match="prevalence"):
            check_prevalence(bad)


def test_ppv_rule_needs_a_range_and_its_bound_is_the_worst_case():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(300), np.zeros(2700)]
    s = np.r_[rng.normal(3.0, 1, 300), rng.normal(0, 1, 2700)]
    with pytest.raises(CalibrationError, match="prevalence range"):
        choose_threshold("ppv", 0.8, y, s)
    ch = choose_threshold("ppv", 0.8, y, s, prevalence=(0.05, 0.2))
    assert ch.status == "guaranteed" and ch.lower_bound >= 0.8 and ch.prevalence == (0.05, 0.2)
    assert ch.lower_bound == pytest.approx(ppv_at(0.05, ch.sensitivity_lower, ch.specificity_lower))
    called = s >= ch.threshold
    assert ch.sensitivity_lower <= called[:300].mean() and ch.specificity_lower <= 1 - called[300:].mean()
    ch = choose_threshold("npv", 0.95, y, s, prevalence=(0.05, 0.2))
    assert ch.status == "guaranteed" and ch.lower_bound >= 0.95
    assert ch.lower_bound == pytest.approx(npv_at(0.2, ch.sensitivity_lower, ch.specificity_lower))


def test_ppv_refusals_say_which_class_is_short():
    rng = np.random.default_rng(2)
    # ppv 0.9 at prevalence 0.05 needs the false-positive rate below 1/171: 100 negatives cannot show it
    y = np.r_[np.ones(100), np.zeros(100)]
    s = np.r_[rng.normal(4, 1, 100), rng.normal(0, 1, 100)]
    need = other_class_minimum("ppv", 0.9, (0.05, 0.2), 0.95)
    ch = choose_threshold("ppv", 0.9, y, s, prevalence=(0.05, 0.2))
    assert ch.status == "insufficient_data" and f"at least {need} negative patients" in ch.note
    assert "false-positive rate below 1/171" in ch.note and need > 100
    # uninformative scores with enough of both: unreachable, not insufficient
    y = rng.random(4000) < 0.3
    ch = choose_threshold("ppv", 0.5, y, rng.random(4000), prevalence=(0.2, 0.3))
    assert ch.status == "unreachable" and math.isnan(ch.threshold) and "no threshold reaches" in ch.note


def test_bad_inputs_are_calibration_errors():
    y, s = np.r_[np.ones(40), np.zeros(40)], np.linspace(0, 1, 80)
    with pytest.raises(CalibrationError, match="not a guaranteed rule"):
        choose_threshold("youden", 0.9, y, s)
    with pytest.raises(CalibrationError, match="confidence"):
        choose_threshold("sensitivity", 0.9, y, s, level=1.0)
    with pytest.raises(CalibrationError, match="finite"):
        choose_threshold("sensitivity", 0.9, y, np.r_[s[:-1], np.nan])
    with pytest.raises(CalibrationError, match="labels for"):
        choose_threshold("sensitivity", 0.9, y, s[:-1])
