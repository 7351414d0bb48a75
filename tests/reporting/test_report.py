"""Evaluation report: numbers equal scikit-learn's on the written CSVs, subgroups, escaping, self-containment."""

from __future__ import annotations

import base64
import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, recall_score, roc_auc_score

from chestxr.evaluation import OperatingPoint, UndefinedMetricWarning, evaluate_predictions, multiclass_metrics
from chestxr.reporting import age_band, build_metrics_table, compute_subgroup_metrics, write_evaluation_report

XSS = "<script>alert(1)</script>"


def _make_case(n: int = 120, findings=("Effusion", "Nodule", "Mass"), seed: int = 0):
    rng = np.random.default_rng(seed)
    f = len(findings)
    y = (rng.random((n, f)) < 0.3).astype(float)
    s = np.clip(0.35 * y + 0.65 * rng.random((n, f)), 0, 1)
    mask = rng.random((n, f)) < 0.85
    thr = np.linspace(0.4, 0.6, f)
    pid = np.array([f"P{i // 2:03d}" for i in range(n)], dtype=object)
    frame = pd.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "path": [f"images/{i:03d}.png" for i in range(n)],
            "patient_id": pid,
            "study_id": [f"S{i // 2:03d}" for i in range(n)],
            "view": np.where(np.arange(n) % 3 == 0, "AP", "PA"),
            "sex": np.where(np.arange(n) % 2, "F", "M"),
            "age": (np.arange(n) * 7) % 90 + 5,
        }
    )
    return list(findings), frame, y, mask, s, thr, pid


def _write(tmp_path, *, findings, frame, y, mask, s, thr, pid, promised=None, **kw):
    ev = evaluate_predictions(y, s, mask, thr, findings, groups=pid, n_boot=40, seed=0, promised=promised)
    paths = write_evaluation_report(
        tmp_path / "eval",
        findings=findings,
        predictions=frame,
        y_true=y,
        mask=mask,
        y_score=s,
        thresholds=thr,
        groups=pid,
        evaluation=ev,
        model_info={"backbone": "tiny"},
        title=kw.pop("title", "test report"),
        **kw,
    )
    return ev, paths


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    findings, frame, y, mask, s, thr, pid = _make_case()
    ev, paths = _write(
        tmp_path_factory.mktemp("rep"),
        findings=findings,
        frame=frame,
        y=y,
        mask=mask,
        s=s,
        thr=thr,
        pid=pid,
        promised={
            "Effusion": OperatingPoint("Effusion", method="sensitivity:0.999", status="guaranteed", target=0.999),
            "Nodule": OperatingPoint("Nodule", method="sensitivity:0.05", status="guaranteed", target=0.05),
            # a point rule whose calibration split called everything: its operating point has moved
            "Mass": OperatingPoint("Mass", method="youden", sensitivity=1.0, specificity=0.0, tp=60, fn=0, tn=0, fp=60),
        },
    )
    return dict(findings=findings, frame=frame, y=y, mask=mask, s=s, thr=thr, ev=ev, paths=paths)


def test_writes_all_files(written):
    assert set(written["paths"]) == {"html", "metrics_csv", "metrics_json", "predictions_csv"}
    for p in written["paths"].values():
        assert p.is_file() and p.stat().st_size > 0
    leftovers = [p.name for p in written["paths"]["html"].parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_numbers_equal_sklearn_on_predictions_csv(written):
    """AUROC, AP and sensitivity/specificity recomputed from predictions.csv equal metrics.csv."""
    pred = pd.read_csv(written["paths"]["predictions_csv"])
    metrics = pd.read_csv(written["paths"]["metrics_csv"]).set_index("finding")
    for j, f in enumerate(written["findings"]):
        rows = pred[f"label_{f}"].notna()
        assert rows.sum() == written["mask"][:, j].sum()  # blank exactly where masked
        y, s = pred.loc[rows, f"label_{f}"].astype(int), pred.loc[rows, f"prob_{f}"]
        call = (pred.loc[rows, f"call_{f}"] == "positive").astype(int)  # call_<f>: the column every CSV uses
        assert (call == (s >= written["thr"][j]).astype(int)).all()
        assert metrics.loc[f, "auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert metrics.loc[f, "ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert metrics.loc[f, "sensitivity"] == pytest.approx(recall_score(y, call), abs=1e-12)
        assert metrics.loc[f, "specificity"] == pytest.approx(recall_score(1 - y, 1 - call), abs=1e-12)
        assert metrics.loc[f, "tp"] == int(((call == 1) & (y == 1)).sum())
        assert metrics.loc[f, "n_pos"] + metrics.loc[f, "n_neg"] == rows.sum()
        assert metrics.loc[f, "auroc_lo"] <= metrics.loc[f, "auroc"] <= metrics.loc[f, "auroc_hi"]
    assert {"macro", "micro"} <= set(metrics.index)
    assert metrics.loc["macro", "auroc"] == pytest.approx(
        np.mean([metrics.loc[f, "auroc"] for f in written["findings"]])
    )


def test_predictions_csv_ids_and_order(written):
    pred = pd.read_csv(written["paths"]["predictions_csv"], dtype={"patient_id": str})
    assert list(pred.columns[:4]) == ["image_id", "path", "patient_id", "study_id"]
    assert pred["image_id"].tolist() == written["frame"]["image_id"].tolist()
    assert "age" not in pred.columns and "sex" not in pred.columns  # only identifiers, no demographics per row
    np.testing.assert_array_equal(pred["prob_Mass"].to_numpy(), written["s"][:, 2])  # exact round trip


def test_metrics_json_has_evaluation_model_info_subgroups(written):
    doc = json.loads(written["paths"]["metrics_json"].read_text())
    assert doc["model_info"] == {"backbone": "tiny"}
    assert doc["findings"]["Nodule"]["auroc"] == pytest.approx(written["ev"]["findings"]["Nodule"]["auroc"])
    assert set(doc["subgroups"]) == {"view", "sex", "age band"}
    # hand check one subgroup cell against scikit-learn
    frame, y, s, mask = written["frame"], written["y"], written["s"], written["mask"]
    rows = (frame["view"] == "AP").to_numpy() & mask[:, 0]
    cell = doc["subgroups"]["view"]["AP"]["findings"]["Effusion"]
    assert cell["n"] == rows.sum()
    assert cell["auroc"] == pytest.approx(roc_auc_score(y[rows, 0], s[rows, 0]))
    pred = s[rows, 0] >= written["thr"][0]
    assert cell["sensitivity"] == pytest.approx(recall_score(y[rows, 0], pred))
    assert doc["subgroups"]["view"]["AP"]["n_images"] == int((frame["view"] == "AP").sum())
    # intervals (method stated) and the difference from the other views, with its interval
    assert cell["auroc_ci"][0] <= cell["auroc"] <= cell["auroc_ci"][1]
    rest = (frame["view"] != "AP").to_numpy() & mask[:, 0]
    diff = cell["vs_rest"]["auroc"]
    assert diff["difference"] == pytest.approx(cell["auroc"] - roc_auc_score(y[rest, 0], s[rest, 0]))
    assert diff["ci"][0] <= diff["difference"] <= diff["ci"][1]
    assert "bootstrap" in doc["subgroup_intervals"]["difference"]
    assert "Clopper-Pearson" in doc["subgroup_intervals"]["sensitivity"]


def test_html_shows_metrics_and_flags_broken_promise(written):
    html = written["paths"]["html"].read_text()
    ev = written["ev"]["findings"]
    assert ev["Effusion"]["promise"]["state"] == "contradicted"
    assert ev["Nodule"]["promise"]["state"] == "not_contradicted" and ev["Mass"]["promise"]["state"] == "moved"
    assert 'id="promise-warning"' in html and "CONTRADICTED" in html
    warning = html[html.index('id="promise-warning"') : html.index("</div>", html.index('id="promise-warning"'))]
    assert "Effusion" in warning and "Mass" not in warning and "Nodule" not in warning  # only the contradicted one
    assert 'id="moved-note"' in html and 'class="moved"' in html  # the moved point rule: neutral, not red
    assert "not contradicted" in html and "power to detect a drop of 0.1" in html
    assert ">holds<" not in html and "NOT HELD" not in html
    assert f"{ev['Nodule']['auroc']:.3f}" in html
    lo, hi = ev["Mass"]["auroc_delong_ci"]
    assert f"DeLong (image-level) [{lo:.3f}, {hi:.3f}]" in html
    assert "Clopper-Pearson" in html and "one-sided exact binomial test" in html and "Holm" in html
    assert html.count('class="finding-row"') == 3
    assert "macro mean" in html and "micro mean" in html
    assert "By age band" in html and "By view" in html and "By sex" in html


def test_html_self_contained(written):
    html = written["paths"]["html"].read_text()
    assert not re.search(r"(src|href)\s*=\s*\"(https?:|//)", html)
    assert "<script" not in html.lower()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) == 4  # 3 finding panels + calibration overview
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_escapes_everything(tmp_path):
    findings, frame, y, mask, s, thr, pid = _make_case(n=60, findings=(XSS, "Mass"))
    frame["patient_id"] = np.where(np.arange(60) == 0, XSS, frame["patient_id"])
    frame["view"] = np.where(np.arange(60) < 30, XSS, "PA")
    _, paths = _write(tmp_path, findings=findings, frame=frame, y=y, mask=mask, s=s, thr=thr, pid=pid, title=XSS)
    html = paths["html"].read_text()
    assert XSS not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_one_class_finding_and_multiclass(tmp_path):
    findings, frame, y, mask, s, thr, pid = _make_case(n=60)
    y[:, 1] = 0  # no positives: AUROC undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        onehot = np.eye(3)[np.arange(60) % 3]
        mc = multiclass_metrics(onehot, s)
        _, paths = _write(
            tmp_path, findings=findings, frame=frame, y=y, mask=mask, s=s, thr=thr, pid=pid, multiclass=mc
        )
    metrics = pd.read_csv(paths["metrics_csv"]).set_index("finding")
    assert math.isnan(metrics.loc["Nodule", "auroc"])
    html = paths["html"].read_text()
    assert 'id="confusion"' in html
    cm = np.asarray(mc["confusion_matrix"])
    row = re.search(r"<tr><th class=\"name\">Effusion</th>(.*?)</tr>", html.split('id="confusion"')[1]).group(1)
    assert re.findall(r"<td>(\d+)</td>", row) == [str(v) for v in cm[0]]
    assert json.loads(paths["metrics_json"].read_text())["multiclass"]["accuracy"] == pytest.approx(mc["accuracy"])


@pytest.mark.parametrize(
    "age,band",
    [
        (0, "0-17"),
        (17.9, "0-17"),
        (18, "18-39"),
        (39, "18-39"),
        (40, "40-59"),
        (79, "60-79"),
        (80, "80+"),
        (101, "80+"),
        (None, "unknown"),
        ("", "unknown"),
        ("45", "40-59"),
        (-3, "unknown"),
    ],
)
def test_age_band(age, band):
    assert age_band([age])[0] == band


def test_subgroups_skip_absent_columns_and_handle_missing_values():
    findings, frame, y, mask, s, thr, _ = _make_case(n=40)
    frame = frame.drop(columns=["view", "age"])
    frame["site"] = ["A"] * 20 + [None] * 20
    out = compute_subgroup_metrics(
        findings=findings,
        predictions=frame,
        y_true=y,
        mask=mask,
        y_score=s,
        thresholds=thr,
        subgroup_columns=("view", "sex", "age", "site"),
    )
    assert set(out) == {"sex", "site"}
    assert list(out["site"]) == ["A", "unknown"] and out["site"]["unknown"]["n_images"] == 20


def test_metrics_table_splits_intervals():
    ev = {
        "findings": {"A": {"n": 3, "auroc": 0.5, "auroc_ci": [0.1, 0.9], "promise": None}},
        "macro": {"auroc": 0.5},
        "micro": {"auroc": 0.4},
    }
    t = build_metrics_table(["A"], ev)
    assert t["finding"].tolist() == ["A", "macro", "micro"]
    assert t.loc[0, "auroc_lo"] == 0.1 and t.loc[0, "auroc_hi"] == 0.9
    assert t.loc[2, "auroc"] == 0.4


def test_shape_errors(tmp_path):
    findings, frame, y, mask, s, thr, pid = _make_case(n=20)
    ev = {"findings": {f: {} for f in findings}}
    with pytest.raises(ValueError, match="must all be"):
        write_evaluation_report(
            tmp_path,
            findings=findings,
            predictions=frame,
            y_true=y[:, :2],
            mask=mask,
            y_score=s,
            thresholds=thr,
            groups=pid,
            evaluation=ev,
        )
    with pytest.raises(ValueError, match="no metrics"):
        write_evaluation_report(
            tmp_path,
            findings=findings,
            predictions=frame,
            y_true=y,
            mask=mask,
            y_score=s,
            thresholds=thr,
            groups=pid,
            evaluation={"findings": {}},
        )


def test_fourteen_findings_stay_small(tmp_path):
    names = [f"Finding{i}" for i in range(14)]
    findings, frame, y, mask, s, thr, pid = _make_case(n=200, findings=names)
    _, paths = _write(tmp_path, findings=findings, frame=frame, y=y, mask=mask, s=s, thr=thr, pid=pid)
    assert paths["html"].stat().st_size < 3_000_000


def test_real_nih_labels_subgroups(shared_data, tmp_path):
    """Real NIH label table: view/sex/age subgroups come out with the real categories."""
    table = pd.read_csv(shared_data / "nih14" / "Data_Entry.csv")
    findings = ["Effusion", "Infiltration", "Atelectasis"]
    y = np.stack([table["Finding Labels"].str.contains(f).to_numpy() for f in findings], axis=1).astype(float)
    rng = np.random.default_rng(1)
    s = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1)
    mask = np.ones_like(y, dtype=bool)
    frame = pd.DataFrame(
        {
            "image_id": table["Image Index"],
            "patient_id": table["Patient ID"].astype(str),
            "view": table["View Position"],
            "sex": table["Patient Gender"],
            "age": table["Patient Age"],
        }
    )
    pid = frame["patient_id"].to_numpy()
    _, paths = _write(tmp_path, findings=findings, frame=frame, y=y, mask=mask, s=s, thr=np.full(3, 0.5), pid=pid)
    doc = json.loads(paths["metrics_json"].read_text())
    assert set(doc["subgroups"]["view"]) == set(table["View Position"].unique())
    assert set(doc["subgroups"]["sex"]) == {"M", "F"}
    assert sum(g["n_images"] for g in doc["subgroups"]["age band"].values()) == len(table)
    assert doc["findings"]["Effusion"]["n_pos"] == int(y[:, 0].sum())


def test_a_good_model_carries_no_red_flag(tmp_path):
    """The demo's case (issue 22): a model at AUROC ~0.99 with Youden points fitted on a calibration split and a
    guaranteed sensitivity:0.8, evaluated on new patients from the same model. Point estimates move by chance
    (the calibration one is optimistic); that is no failure: no red banner, no red cell, no "holds", and each
    point rule shows its calibration estimate beside the test value."""
    from scipy.stats import norm

    from chestxr.evaluation import fit_thresholds

    rng = np.random.default_rng(3)
    findings = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]

    def sample(n):
        y = rng.random((n, 4)) < 0.4
        return y, norm.cdf(rng.normal(np.where(y, 3.3, 0.0), 1.0))  # binormal, AUROC = Phi(3.3 / sqrt 2) ~ 0.99

    y_cal, s_cal = sample(150)
    rules = ["youden", "youden", "youden", "sensitivity:0.8"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = fit_thresholds(y_cal, s_cal, None, rules, findings=findings)
    assert [p.status for p in points] == ["not_a_guarantee"] * 3 + ["guaranteed"]
    y, s = sample(120)
    thr = np.array([p.threshold for p in points])
    frame = pd.DataFrame({"image_id": [f"i{i}" for i in range(120)], "patient_id": [f"P{i}" for i in range(120)]})
    ev, paths = _write(
        tmp_path,
        findings=findings,
        frame=frame,
        y=y.astype(float),
        mask=np.ones_like(y, bool),
        s=s,
        thr=thr,
        pid=frame["patient_id"].to_numpy(),
        promised={p.finding: p for p in points},
    )
    html = paths["html"].read_text()
    states = {f: ev["findings"][f]["promise"]["state"] for f in findings}
    assert states == {
        "Opacity": "not_moved",
        "Cardiomegaly": "not_moved",
        "Effusion": "not_moved",
        "Nodule": "not_contradicted",
    }
    moved_by_chance = [
        f for f in findings[:3] if ev["findings"][f]["specificity"] < points[findings.index(f)].specificity
    ]
    assert moved_by_chance  # test specificity below the calibration estimate somewhere, as in the demo
    assert 'id="promise-warning"' not in html and 'class="bad"' not in html and "finding broken" not in html
    assert not re.search(r"\bholds\b", html) and "NOT HELD" not in html
    assert html.count("<th>calibration</th><th>this split</th>") == 3  # the point rules, side by side
    assert "not contradicted" in html and "power to detect a drop of 0.1" in html
    assert ev["promise_summary"]["text"].startswith("1 guaranteed promise: 0 contradicted, 1 not contradicted")
