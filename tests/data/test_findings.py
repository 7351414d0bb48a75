"""Finding vocabulary, relabel and label policies (every branch, hand-checked arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.core import ConfigError, LabelPolicy, load_config
from chestxr.data import (
    CANONICAL_FINDINGS,
    CHEXPERT14,
    NIH14,
    Manifest,
    apply_label_policy,
    canonical_name,
    relabel,
    select_findings,
    validate_label_policy,
)

NAN = np.nan


@pytest.mark.parametrize(
    "name,canon",
    [
        ("Pleural Effusion", "Effusion"),
        ("pleural_effusion", "Effusion"),
        ("EFFUSION", "Effusion"),
        ("Pleural Thickening", "Pleural_Thickening"),
        ("pleural-thickening", "Pleural_Thickening"),
        ("enlarged_cardiomediastinum", "Enlarged Cardiomediastinum"),
        ("Lung opacity", "Lung Opacity"),
        ("Airspace Opacity", "Lung Opacity"),
        ("lung lesion", "Lung Lesion"),
        ("fracture", "Fracture"),
        ("Support Devices", "Support Devices"),
        ("no_finding", "No Finding"),
        ("Infiltrate", "Infiltration"),
        ("  Mass ", "Mass"),
        ("Tuberculosis", "Tuberculosis"),
        (" Foo bar ", "Foo bar"),
    ],
)
def test_canonical_name(name, canon):
    assert canonical_name(name) == canon


def test_vocabulary_sizes():
    assert len(NIH14) == 14 and len(CHEXPERT14) == 14
    assert len(CANONICAL_FINDINGS) == len(set(CANONICAL_FINDINGS)) == 21  # 14 + 14 - 7 shared
    assert all(canonical_name(f) == f for f in CANONICAL_FINDINGS)


def _manifest(cols: dict) -> Manifest:
    frame = pd.DataFrame(
        {
            "path": ["/a", "/b"],
            "patient_id": ["1", "2"],
            "study_id": ["1", "2"],
            "view": ["PA", "PA"],
            "split": ["", ""],
            **cols,
        }
    )
    return Manifest(frame, list(cols), Path("/tmp/m.csv"))


def test_relabel_maps_aliases_and_masks_absent():
    m = _manifest({"Pleural Effusion": [1.0, 0.0], "Cardiomegaly": [-1.0, NAN], "Fracture": [1.0, 1.0]})
    with pytest.warns(UserWarning, match="Hernia"):
        r = relabel(m, ["Cardiomegaly", "Effusion", "Hernia"])
    assert r.findings == ["Cardiomegaly", "Effusion", "Hernia"]
    np.testing.assert_array_equal(r.labels(), [[-1, 1, NAN], [NAN, 0, NAN]])
    assert "Fracture" not in r.frame.columns and "Pleural Effusion" not in r.frame.columns
    assert list(r.frame.columns[:5]) == ["path", "patient_id", "study_id", "view", "split"]
    assert m.findings == ["Pleural Effusion", "Cardiomegaly", "Fracture"]  # original untouched
    with pytest.raises(ConfigError):
        relabel(m, ["Effusion", "Pleural_Effusion"])


LABELS = np.array([[1, 0, -1, NAN], [0, 0.3, NAN, -1], [-1, 1, 1, 0]], dtype=np.float64)
F = ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    "uncertain,blank,targets,mask",
    [
        ("masked", "masked", [[1, 0, 0, 0], [0, 0.3, 0, 0], [0, 1, 1, 0]], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]]),
        ("ones", "zeros", [[1, 0, 1, 0], [0, 0.3, 0, 1], [1, 1, 1, 0]], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]),
        ("zeros", "masked", [[1, 0, 0, 0], [0, 0.3, 0, 0], [0, 1, 1, 0]], [[1, 1, 1, 0], [1, 1, 0, 1], [1, 1, 1, 1]]),
        (0.7, "zeros", [[1, 0, 0.7, 0], [0, 0.3, 0, 0.7], [0.7, 1, 1, 0]], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]),
    ],
)
def test_policy_branches(uncertain, blank, targets, mask):
    t, m = apply_label_policy(LABELS, F, LabelPolicy(uncertain=uncertain, blank=blank))
    assert t.dtype == np.float32 and m.dtype == bool and t.shape == (3, 4)
    np.testing.assert_allclose(t, targets, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(m, np.array(mask, dtype=bool))


def test_soft_policy_deterministic_in_range():
    pol = LabelPolicy(uncertain="soft", blank="zeros", soft_range=(0.55, 0.85))
    t1, m1 = apply_label_policy(LABELS, F, pol, seed=3)
    t2, _ = apply_label_policy(LABELS, F, pol, seed=3)
    t3, _ = apply_label_policy(LABELS, F, pol, seed=4)
    unc = LABELS == -1
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t1[unc], t3[unc])
    assert ((t1[unc] >= 0.55) & (t1[unc] <= 0.85)).all() and m1.all()
    np.testing.assert_array_equal(t1[~unc & ~np.isnan(LABELS)], LABELS[~unc & ~np.isnan(LABELS)].astype(np.float32))
    big = np.full((2000, 1), -1.0)
    tb, _ = apply_label_policy(big, ["A"], pol, seed=0)
    assert abs(float(tb.mean()) - 0.70) < 0.01  # uniform on [0.55, 0.85]


def test_per_finding_overrides_with_aliases():
    pol = LabelPolicy(
        uncertain="masked",
        blank="masked",
        per_finding={
            "A": {"uncertain": "ones"},
            "c": {"uncertain": "zeros", "blank": "zeros"},
            "D": {"uncertain": "soft", "soft_range": [0.6, 0.6]},
        },
    )
    t, m = apply_label_policy(LABELS, F, pol)
    np.testing.assert_allclose(t, [[1, 0, 0, 0], [0, 0.3, 0, 0.6], [1, 1, 1, 0]], atol=1e-7)
    np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    # U-Ones for Atelectasis, U-Zeros for Cardiomegaly (CheXpert paper), matched through aliases
    pol2 = LabelPolicy(per_finding={"Atelectasis": {"uncertain": "ones"}, "Cardiomegaly": {"uncertain": "zeros"}})
    t2, m2 = apply_label_policy(np.array([[-1.0, -1.0, -1.0]]), ["atelectasis", "Cardiomegaly", "Effusion"], pol2)
    np.testing.assert_array_equal(t2, [[1, 0, 0]])
    np.testing.assert_array_equal(m2, [[True, True, False]])


def test_per_finding_unused_warns():
    with pytest.warns(UserWarning, match="not in use"):
        apply_label_policy(LABELS, F, LabelPolicy(per_finding={"Hernia": {"uncertain": "ones"}}))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"uncertain": "one"}, "labels.uncertain"),
        ({"uncertain": 1.5}, "labels.uncertain"),
        ({"uncertain": True}, "labels.uncertain"),
        ({"blank": "ones"}, "labels.blank"),
        ({"blank": 0.0}, "labels.blank"),
        ({"soft_range": (0.9, 0.5)}, "soft_range"),
        ({"soft_range": (0.5,)}, "soft_range"),
        ({"no_finding": "remove"}, "no_finding"),
        ({"per_finding": {"A": {"uncertian": "ones"}}}, "unknown key"),
        ({"per_finding": {"A": {"uncertain": "maybe"}}}, "per_finding.A.uncertain"),
        ({"per_finding": {"A": "ones"}}, "per_finding.A"),
    ],
)
def test_policy_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        validate_label_policy(LabelPolicy(**kwargs))
    with pytest.raises(ConfigError):
        apply_label_policy(LABELS, F, LabelPolicy(**kwargs))


def test_policy_from_yaml_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "labels:\n  uncertain: soft\n  soft_range: [0.55, 0.85]\n  per_finding:\n    Atelectasis: {uncertain: ones}\n"
    )
    cfg = load_config(p)
    t, m = apply_label_policy(np.array([[-1.0, -1.0]]), ["Atelectasis", "Edema"], cfg.labels)
    assert t[0, 0] == 1.0 and 0.55 <= t[0, 1] <= 0.85 and m.all()


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match="not 1, 0, -1"):
        apply_label_policy(np.array([[2.0]]), ["A"], LabelPolicy())
    with pytest.raises(ValueError, match="shape"):
        apply_label_policy(np.zeros((2, 3)), ["A"], LabelPolicy())


def test_select_findings():
    have = ["No Finding", "Atelectasis", "Effusion"]
    assert select_findings(have, LabelPolicy(no_finding="drop")) == ["Atelectasis", "Effusion"]
    assert select_findings(["no_finding", "A"], LabelPolicy(no_finding="drop")) == ["A"]
    assert select_findings(have, LabelPolicy(no_finding="keep")) == have
    # an explicit request is used as given, including No Finding
    assert select_findings(have, LabelPolicy(no_finding="drop"), ["Effusion", "No Finding"]) == [
        "Effusion",
        "No Finding",
    ]
    with pytest.raises(ConfigError):
        select_findings(have, LabelPolicy(), [])
    with pytest.raises(ConfigError):
        select_findings(have, LabelPolicy(), ["A", "A"])


def test_soft_labels_in_evaluation_follow_eval_bounds():
    """A soft label of 0.5 used to count as a positive in the metrics; by default every value
    strictly between 0 and 1 is now left out, and labels.eval_bounds makes the rule explicit."""
    from chestxr.data import evaluation_labels

    raw = np.array([[1.0], [0.0], [0.5], [0.3], [0.8], [-1.0], [np.nan]])
    y, m = evaluation_labels(raw, LabelPolicy(blank="zeros"), ["A"])
    assert m[:, 0].tolist() == [True, True, False, False, False, False, True]
    assert y[m[:, 0], 0].tolist() == [1.0, 0.0, 0.0]
    y, m = evaluation_labels(raw, LabelPolicy(blank="masked", eval_bounds=(0.3, 0.8)), ["A"])
    assert m[:, 0].tolist() == [True, True, False, True, True, False, False]
    assert y[:5, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    y, m = evaluation_labels(raw, LabelPolicy(eval_bounds=(0.5, 0.5)), ["A"])  # the old >= 0.5 rule
    assert m[2, 0] and y[2, 0] == 1.0 and y[3, 0] == 0.0
    with pytest.raises(ConfigError, match="labels.eval_bounds"):
        validate_label_policy(LabelPolicy(eval_bounds=(0.8, 0.2)))
