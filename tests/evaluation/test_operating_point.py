"""One operating-point type (issue 21.3): OperatingPoint / Guarantee records as thresholds.json and model.json
hold them, older records written back unchanged, the texts every report uses, and the one decision rule."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest

from chestxr.evaluation import (
    ABSTAIN,
    NOT_CALIBRATED,
    Guarantee,
    OperatingPoint,
    decide,
    fit_thresholds,
)

Y = np.array([[0, 1, 0, 1, 1, 0, 1, 0]]).T
S = np.array([[0.1, 0.8, 0.3, 0.7, 0.9, 0.2, 0.4, 0.35]]).T
#: the keys of a thresholds.json record since guarantees existed (before this refactor, ThresholdFit.to_dict)
RECORD_KEYS = [
    "finding", "method", "threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "tp", "fp", "tn", "fn",
    "n_pos", "n_neg", "prevalence", "status", "guaranteed", "target", "confidence", "lower_bound", "n_needed",
    "accuracy", "sensitivity_ci", "specificity_ci", "ppv_ci", "npv_ci", "accuracy_ci", "level", "interval", "note",
    "guarantee",
]  # fmt: skip


def test_fit_writes_the_record_format_and_reads_it_back():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        youden, guaranteed = fit_thresholds(np.hstack([Y, Y]), np.hstack([S, S]), None, ["youden", "sensitivity:0.5"])
    for point in (youden, guaranteed):
        d = point.to_dict()
        assert list(d) == RECORD_KEYS
        assert json.loads(json.dumps(d)) == d  # JSON-able, NaN written as null
        assert OperatingPoint.from_dict(d) == point
    assert youden.guarantee is None and youden.describe().startswith("not a guarantee")
    g = guaranteed.guarantee
    assert g is not None and (g.metric, g.target, g.level, g.status) == ("sensitivity", 0.5, 0.95, guaranteed.status)
    assert guaranteed.to_dict()["guarantee"] == g.to_dict() and g.n_needed == guaranteed.n_needed


def test_an_older_record_is_written_back_as_it_was():
    legacy = {"finding": "A", "method": "youden", "threshold": 0.3, "tp": 4, "sensitivity_ci": [0.2, 0.9]}
    point = OperatingPoint.from_dict(legacy)
    assert point.to_dict() == legacy and point.status == "not_a_guarantee" and math.isnan(point.lower_bound)
    kept = point.replace(kept_from_version=3, kept_note="no usable labels")
    assert kept.to_dict() == {**legacy, "kept_from_version": 3, "kept_note": "no usable labels"}
    old_flag = {"finding": "B", "method": "sensitivity:0.9", "threshold": 0.2, "guarantee": True, "target": 0.9,
                "confidence": 0.95, "lower_bound": 0.91, "n_pos": 40, "n_needed": 29, "status": "guaranteed"}  # fmt: skip
    rebuilt = OperatingPoint.from_dict(old_flag)  # the bare flag before the nested record: rebuilt from the keys
    assert rebuilt.guarantee == Guarantee("sensitivity", 0.9, 0.95, status="guaranteed", lower_bound=0.91, n_pos=40,
                                          n_needed=29)  # fmt: skip


def test_texts_reports_use():
    g = Guarantee("sensitivity", 0.9, 0.95, status="guaranteed", lower_bound=0.9123, n_pos=120, n_needed=29)
    assert g.describe() == "sensitivity >= 0.90 with 95% confidence (one-sided Clopper-Pearson bound 0.912)"
    assert g.summary() == "guaranteed: sensitivity >= 0.9, bound 0.912 (95% one-sided)" and g.code() == "MET"
    assert len(Guarantee("sensitivity", 0.9, 0.95, status="insufficient_data" * 5).summary()) == 64
    refused = OperatingPoint("A", method="sensitivity:0.99", status="insufficient_data", note="needs 299 positives",
                             n_pos=12, guarantee=dataclasses.replace(g, status="insufficient_data", n_needed=299))  # fmt: skip
    assert refused.describe() == "REFUSED (insufficient_data): needs 299 positives (n_pos 12, n_needed 299)"
    assert refused.guarantee is not None and refused.guarantee.code() == "INSUFFICIENT"


def test_the_family_fields_reach_json_and_back_and_old_records_still_load():
    """Issue 22: the guarantee records its family, the family size, the simultaneous flag, the per-finding
    level, the method in words and the prevalence range; to_dict / from_dict round-trip them, and a
    thresholds.json record written before (no such keys) loads as a legacy per-finding guarantee and is
    written back with the keys it had."""
    g = Guarantee("ppv", 0.8, 0.95, method="bentkus-patient", lower_bound=0.81, n_pos=300, n_needed=40,
                  family=("A", "B", "C", "D"), family_size=4, simultaneous=True, per_finding_level=0.9875,
                  method_text="Bentkus", prevalence=(0.05, 0.2), sensitivity_lower=0.7, specificity_lower=0.99)  # fmt: skip
    d = json.loads(json.dumps(g.to_dict()))
    assert d["family"] == ["A", "B", "C", "D"] and d["family_size"] == 4 and d["prevalence"] == [0.05, 0.2]
    assert Guarantee.from_dict(d) == g and not g.legacy and g.joint and g.joint_confidence == 0.95
    assert g.describe() == (
        "PPV >= 0.80 at every prevalence in 0.05-0.2 for each of 4 findings jointly with 95% confidence "
        "(Bonferroni, 98.75% each); patient-level bound (Bentkus 2004) 0.810"
    )
    assert len(g.summary()) <= 64 and "prev 0.05-0.2" in g.summary() and "joint" in g.summary()
    assert g.family_text == "jointly for 4 findings (Bonferroni, 98.75% each)"
    old = {"metric": "sensitivity", "target": 0.9, "level": 0.95, "method": "clopper-pearson",
           "status": "guaranteed", "lower_bound": 0.91, "n_pos": 40, "n_needed": 29}  # fmt: skip
    legacy = Guarantee.from_dict(old)
    assert legacy.legacy and legacy.simultaneous is None and legacy.prevalence is None
    assert legacy.to_dict() == old and legacy.family_text == "per finding (legacy record)"
    alone = dataclasses.replace(g, metric="sensitivity", prevalence=None, family=("A",), family_size=1,
                                simultaneous=False, per_finding_level=0.95)  # fmt: skip
    assert alone.describe().startswith("sensitivity >= 0.80 with 95% confidence for this finding alone (not jointly)")


def test_decide_is_the_one_rule():
    s = np.array([[0.2, 0.5, 0.7], [0.6, 0.9, np.nan]])
    d = decide(s, [0.5, np.nan, 0.7])
    assert d.positive.tolist() == [[False, False, True], [True, False, False]]
    assert d.labels().tolist() == [["negative", NOT_CALIBRATED, "positive"], ["no score", NOT_CALIBRATED, "no score"]]
    m = decide(np.array([[0.3, 0.3, 0.1], [0.1, 0.2, 0.3]]), [0.2, 0.2, 0.5], multiclass=True, abstain=True)
    assert m.predicted.tolist() == [0, ABSTAIN] and m.class_names(["a", "b", "c"]) == ["a", "abstain"]
    assert m.labels().tolist() == [["positive", "negative", "negative"], ["negative"] * 3]
    with pytest.raises(ValueError, match="multiclass"):
        decide(s, [0.5, 0.5, 0.5], abstain=True)
    with pytest.raises(ValueError, match="thresholds"):
        decide(s, [0.5])
