"""The reports in a real headless Chromium: tables render, every image decodes, no network, screenshot.

Needs the ``playwright`` Python package and a Chromium binary (``scripts/install_browser.sh``
installs one with apt); skips only when no Chromium can be found.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestxr.evaluation import OperatingPoint

pytestmark = pytest.mark.browser

FINDINGS = ["Effusion", "Nodule", "<script>alert(1)</script>"]


def _open(browser, path: Path):
    """A page with every non-file request recorded (a self-contained report makes none)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.dialogs = []  # an alert() from an unescaped "<script>alert(1)</script>" finding name lands here
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, [u for u in requests if not u.startswith(("file:", "data:"))]


def _check_images_and_screenshot(page, shot: Path) -> int:
    n_img = page.locator("img").count()
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert len(widths) == n_img and all(w > 0 for w in widths), widths
    assert page.dialogs == []
    assert page.locator("script").count() == 0
    page.screenshot(path=str(shot), full_page=False)
    data = shot.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    return n_img


def test_evaluation_report_renders(browser, tmp_path):
    from chestxr.evaluation import evaluate_predictions
    from chestxr.reporting import write_evaluation_report

    rng = np.random.default_rng(0)
    n = 80
    y = (rng.random((n, 3)) < 0.3).astype(float)
    s = np.clip(0.4 * y + 0.6 * rng.random((n, 3)), 0, 1)
    mask = rng.random((n, 3)) < 0.9
    thr = np.array([0.5, 0.5, 0.5])
    pid = np.array([f"P{i // 2}" for i in range(n)], dtype=object)
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": pid,
            "view": np.where(np.arange(n) % 2, "PA", "AP"),
            "age": np.arange(n) + 10,
        }
    )
    ev = evaluate_predictions(
        y,
        s,
        mask,
        thr,
        FINDINGS,
        groups=pid,
        n_boot=30,
        promised={
            "Effusion": OperatingPoint("Effusion", method="sensitivity:0.999", status="guaranteed", target=0.999)
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = write_evaluation_report(
            tmp_path / "eval",
            findings=FINDINGS,
            predictions=frame,
            y_true=y,
            mask=mask,
            y_score=s,
            thresholds=thr,
            groups=pid,
            evaluation=ev,
            model_info={"backbone": "tiny"},
            title="browser test",
        )["html"]
    page, external = _open(browser, html)
    assert external == []
    assert page.locator("#summary tbody tr").count() == 3 + 2  # findings + macro + micro
    assert page.locator("tr.finding-row").nth(2).locator("td").first.inner_text() == FINDINGS[2]  # shown as text
    assert page.locator("#promise-warning").is_visible()
    assert "NOT APPROVED FOR CLINICAL USE" in page.locator("#approval-banner").inner_text()
    assert page.locator("table.subgroup").count() == 2  # view, age band
    assert page.locator("table.subgroup").first.locator("tbody tr").count() == 2 * 3
    assert _check_images_and_screenshot(page, tmp_path / "report.png") == 4


def test_review_report_renders(browser, tmp_path):
    from chestxr.reporting import write_review_report

    rng = np.random.default_rng(1)
    n = 10
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "path": [f"{i}.png" for i in range(n)],
            "patient_id": [f"P{i // 2}" for i in range(n)],
            "study_id": [f"S{i // 2}" for i in range(n)],
        }
    )
    for f in FINDINGS:
        frame[f"prob_{f}"] = rng.random(n)
    thumbs = {f"i{i}": rng.random((48, 40)) for i in range(n)}
    heat = {(f"i{i}", f): rng.random((7, 7)) for i in range(n) for f in FINDINGS}
    html = write_review_report(
        tmp_path / "review",
        findings=FINDINGS,
        predictions=frame,
        thresholds=[0.5, 0.5, 0.5],
        thumbnails=thumbs,
        heatmaps=heat,
    )["html"]
    page, external = _open(browser, html)
    assert external == []
    assert page.locator("section.card").count() == 5
    assert page.locator("table.study-findings").first.locator("tbody tr").count() == 3
    assert page.locator("#thresholds tbody tr").count() == 3
    n_img = _check_images_and_screenshot(page, tmp_path / "review.png")
    assert n_img >= n  # thumbnails + overlays


def test_model_card_renders(browser, tmp_path):
    """The card from plain records: sections present, refusal and approval shown, names escaped."""
    from chestxr.evaluation import evaluate_predictions, fit_thresholds
    from chestxr.reporting import build_card, compute_subgroup_metrics, write_model_card

    rng = np.random.default_rng(2)
    n = 120
    y = (rng.random((n, 3)) < [0.4, 0.1, 0.3]).astype(float)
    s = np.clip(0.5 * y + 0.5 * rng.random((n, 3)), 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = fit_thresholds(y, s, None, ["specificity:0.9", "sensitivity:0.9", "youden"], findings=FINDINGS)
        thr = np.array([f.threshold for f in fits])
        records = [f.to_dict() for f in fits]
        ev = evaluate_predictions(y, s, None, thr, FINDINGS, n_boot=20, promised={f.finding: f for f in fits})
    frame = pd.DataFrame({"sex": np.where(np.arange(n) % 2, "F", "M")})
    ev["subgroups"] = compute_subgroup_metrics(
        findings=FINDINGS, predictions=frame, y_true=y, mask=np.ones_like(y, bool), y_score=s, thresholds=thr
    )
    meta = {
        "findings": FINDINGS,
        "backbone": "tiny",
        "mode": "multilabel",
        "version": 3,
        "thresholds": records,
        "config": {"name": "card <i>test</i>", "train": {"lr": 0.001}},
        "versions": {"chestxr": "0.1.0", "torch": "2.x"},
    }
    approval = {
        "state": "approved",
        "reviewer": "Dr <b>C</b>",
        "time": "2026-12-02T01:00:00Z",
        "note": None,
        "reason": "",
        "banner": "Approved for clinical use by Dr <b>C</b>",
    }
    card = build_card(
        meta,
        operating_points=fits,
        evaluations=[("test", ev)],
        approval=approval,
        data_summary={
            "source": "splits.csv",
            "splits": [
                {
                    "split": "train",
                    "n_images": 80,
                    "n_patients": 80,
                    "positives": "Effusion 30",
                    "views": "PA 80",
                    "sex": "F 40, M 40",
                    "age": "40-59 80",
                }
            ],
        },
    )
    paths = write_model_card(tmp_path / "card", card)
    page, external = _open(browser, paths["html"])
    assert external == [] and page.dialogs == [] and page.locator("script").count() == 0
    for section in (
        "model-details",
        "intended-use",
        "training-data",
        "operating-points",
        "evaluations",
        "ethics",
        "caveats",
        "software",
        "checklists",
    ):
        assert page.locator(f"#{section}").is_visible(), section
    banner = page.locator("#approval-banner").inner_text()
    assert "Approved for clinical use" in banner and "Dr <b>C</b>" in banner  # escaped: shown as text
    rows = page.locator("#operating-points-table tbody tr")
    assert rows.count() == 3
    assert "REFUSED (insufficient_data)" in rows.nth(1).inner_text()  # 0.9 needs 29 positives
    assert "guarantee" not in rows.nth(2).inner_text().split("not a guarantee")[0]
    assert page.locator("table.evaluation-table tbody tr").count() == 3
    assert page.locator("table.subgroup tbody tr").count() == 2 * 3
    assert "Research use only" in page.locator("#use").inner_text()
    page.screenshot(path=str(tmp_path / "card.png"), full_page=False)
    assert (tmp_path / "card.png").stat().st_size > 1000
    md = paths["md"].read_text()
    assert "## Operating points" in md and "&lt;script&gt;" in md and "<script>" not in md
