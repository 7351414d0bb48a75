"""Issue 22.2-3 on the card and in the SR text: the joint level, the family size, the per-finding level and
the prevalence range of the guarantees are stated in words (model_card.md / .html, the SR's code meaning
within LO's 64 characters and its algorithm parameter)."""

from __future__ import annotations

import warnings

import numpy as np

from chestxr.evaluation import fit_thresholds, guarantee_statement
from chestxr.reporting import build_card, render_markdown, write_model_card


def _points():
    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random((n, 3)) < 0.1).astype(float)
    s = np.where(y > 0, rng.normal(4.0, 1, y.shape), rng.normal(0, 1, y.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_thresholds(y, s, None, ["sensitivity:0.9", "specificity:0.9", "ppv:0.8"], findings=["A", "B", "C"],
                              prevalence=(0.05, 0.2), groups=np.arange(n) // 2)  # fmt: skip


def test_card_and_sr_texts_state_the_joint_level_and_the_range(tmp_path):
    points = _points()
    assert [p.status for p in points] == ["guaranteed"] * 3
    stated = guarantee_statement(points)
    assert "all 3 guaranteed findings hold jointly with 95% confidence (Bonferroni, 98.33% each)" in stated
    assert "PPV/NPV at every prevalence in 0.05-0.2" in stated and "Bentkus 2004" in stated
    c = points[2].guarantee
    assert c is not None and c.describe().startswith("PPV >= 0.80 at every prevalence in 0.05-0.2 for each of 3")
    for p in points:  # the SR code meaning: LO, at most 64 characters, names joint / the range
        text = p.guarantee.summary(64)
        assert len(text) <= 64 and "joint" in text and ("prev 0.05-0.2" in text) == (p.finding == "C")
    card = build_card({"findings": ["A", "B", "C"], "config": {"name": "t"}}, operating_points=points)
    md = render_markdown(card)
    assert f"Guarantees: {stated}" in md
    assert "for each of 3 findings jointly with 95% confidence (Bonferroni, 98.33% each)" in md
    html = write_model_card(tmp_path, card)["html"].read_text()
    assert 'id="guarantee-family"' in html and "jointly with 95% confidence" in html


def test_per_finding_and_legacy_records_say_so():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = np.r_[np.ones(60), np.zeros(60)][:, None]
        s = np.r_[np.linspace(1, 2, 60), np.linspace(0, 1.5, 60)][:, None]
        alone = fit_thresholds(y, s, None, "sensitivity:0.9", simultaneous=False)
    assert "each finding's guarantee holds alone at 95% (per finding, not jointly)" in guarantee_statement(alone)
    from chestxr.evaluation import Guarantee, OperatingPoint

    old = OperatingPoint("A", method="sensitivity:0.9", threshold=0.3, status="guaranteed",
                         guarantee=Guarantee("sensitivity", 0.9, 0.95, lower_bound=0.91))  # fmt: skip
    assert "recorded before joint guarantees; not jointly" in guarantee_statement([old])
