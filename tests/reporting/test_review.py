"""Review worklist: study reduction, calls and margins (hand-checked), ordering, thumbnails/overlays, escaping."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from chestxr.reporting import build_study_table, classify_calls, logit_margin, write_review_report

XSS = "<script>alert(1)</script>"
FINDINGS = ["Effusion", "Nodule"]
THR = np.array([0.5, 0.2])


def _frame():
    """4 studies, each one patient's (studies are keyed by (patient, study)). S1: Effusion positive (0.8 on
    its 2nd image). S2: Nodule borderline (0.18 vs 0.2). S3: all clearly negative. S4: Nodule positive
    (0.3) but weaker than S1's Effusion."""
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f"],
            "path": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
            "patient_id": ["P1", "P2", "P2", "P3", "P1", "P4"],
            "study_id": ["S3", "S1", "S1", "S2", "S3", "S4"],
            "prob_Effusion": [0.10, 0.30, 0.80, 0.20, 0.05, 0.40],
            "prob_Nodule": [0.01, 0.05, 0.02, 0.18, 0.03, 0.30],
        }
    )


def test_logit_margin_hand_checked():
    assert logit_margin(np.array([0.6]), np.array([0.5]))[0] == pytest.approx(math.log(1.5))
    assert logit_margin(np.array([0.2]), np.array([0.2]))[0] == pytest.approx(0.0)
    # logit(0.1) - logit(0.2) = log(1/9) - log(1/4) = log(4/9)
    assert logit_margin(np.array([0.1]), np.array([0.2]))[0] == pytest.approx(math.log(4 / 9))
    assert np.isfinite(logit_margin(np.array([0.0, 1.0]), np.array([0.5, 0.5]))).all()


@pytest.mark.parametrize(
    "prob,thr,state",
    [
        (0.50, 0.50, "positive"),  # at the threshold: positive (score >= threshold)
        (0.49, 0.50, "borderline"),  # logit margin -0.04
        (0.38, 0.50, "borderline"),  # -0.49
        (0.37, 0.50, "negative"),  # -0.53
        (0.04, 0.05, "borderline"),  # -0.23: near on the logit scale though 0.01 apart
        (0.01, 0.05, "negative"),  # -1.65
        (0.99, 0.05, "positive"),
    ],
)
def test_classify_calls(prob, thr, state):
    assert classify_calls(np.array([[prob]]), np.array([thr]), borderline_logit=0.5)[0, 0] == state


def test_study_table_max_and_mean():
    frame = _frame()
    by_max = build_study_table(frame, findings=FINDINGS).set_index("study_id")
    assert list(by_max.index) == ["S3", "S1", "S2", "S4"]  # first-seen order
    assert by_max.loc["S1", "prob_Effusion"] == 0.80 and by_max.loc["S3", "prob_Effusion"] == 0.10
    assert by_max.loc["S3", "n_images"] == 2 and by_max.loc["S3", "image_ids"] == "a;e"
    assert by_max.loc["S3", "patient_id"] == "P1"
    by_mean = build_study_table(frame, findings=FINDINGS, study_reduce="mean").set_index("study_id")
    assert by_mean.loc["S1", "prob_Effusion"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="study_reduce"):
        build_study_table(frame, findings=FINDINGS, study_reduce="median")


def test_missing_study_id_makes_own_study():
    frame = _frame()
    frame.loc[0, "study_id"] = None
    table = build_study_table(frame, findings=FINDINGS)
    assert "a" in table["study_id"].tolist() and len(table) == 5


def test_worklist_order_and_csvs(tmp_path):
    paths = write_review_report(tmp_path, findings=FINDINGS, predictions=_frame(), thresholds=THR)
    assert set(paths) == {"html", "predictions_csv", "study_predictions_csv"}
    studies = pd.read_csv(paths["study_predictions_csv"])
    # positives first (strongest logit margin first: S1 logit(.8)-logit(.5)=1.39 > S4 logit(.3)-logit(.2)=0.54),
    # then the borderline S2, then S3
    assert studies["study_id"].tolist() == ["S1", "S4", "S2", "S3"]
    assert studies["review_tier"].tolist() == ["positive", "positive", "borderline", "negative"]
    assert studies["review_rank"].tolist() == [1, 2, 3, 4]
    s1 = studies.iloc[0]
    assert s1["call_Effusion"] == "positive" and s1["call_Nodule"] == "negative"
    assert s1["margin_Effusion"] == pytest.approx(0.3)
    assert s1["logit_margin_Effusion"] == pytest.approx(math.log(4.0))
    s2 = studies.iloc[2]
    assert s2["margin_Nodule"] == pytest.approx(-0.02) and s2["call_Nodule"] == "negative"
    images = pd.read_csv(paths["predictions_csv"])
    assert images["image_id"].tolist() == list("abcdef")
    assert images["call_Effusion"].tolist() == ["negative", "negative", "positive", "negative", "negative", "negative"]
    assert images["margin_Nodule"].tolist() == pytest.approx([-0.19, -0.15, -0.18, -0.02, -0.17, 0.10])


def test_html_cards_thumbnails_and_overlays(tmp_path):
    frame = _frame()
    thumbs = {i: np.full((40, 30), k / 6) for k, i in enumerate("abcdef")}
    heat = {(i, f): np.eye(8) for i in "abcdef" for f in FINDINGS}
    paths = write_review_report(
        tmp_path, findings=FINDINGS, predictions=frame, thresholds=THR, thumbnails=thumbs, heatmaps=heat
    )
    html = paths["html"].read_text()
    cards = re.findall(r'<section class="card (\w+)" id="study-(\d+)">', html)
    assert cards == [("positive", "1"), ("positive", "2"), ("borderline", "3"), ("negative", "4")]
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    # 6 thumbnails + one overlay per positive (study, finding): S1 Effusion (on image c), S4 Nodule (on f)
    assert len(imgs) == 8
    assert html.count('class="overlay"') == 2 and "Effusion (c)" in html and "Nodule (f)" in html
    assert "<script" not in html.lower() and "http" not in html.split("</head>")[1]


def test_thumbnail_keys_may_be_str_of_ids(tmp_path):
    frame = _frame()
    frame["image_id"] = [10, 11, 12, 13, 14, 15]
    thumbs = {str(i): np.zeros((8, 8)) for i in range(10, 16)}
    html = write_review_report(tmp_path, findings=FINDINGS, predictions=frame, thresholds=THR, thumbnails=thumbs)[
        "html"
    ].read_text()
    assert len(re.findall(r"<img ", html)) == 6


def test_escaping(tmp_path):
    frame = _frame().rename(columns={"prob_Nodule": f"prob_{XSS}"})
    frame["patient_id"] = XSS
    frame["study_id"] = [XSS] * 3 + ["S9"] * 3
    html = write_review_report(
        tmp_path, findings=["Effusion", XSS], predictions=frame, thresholds=THR, title=XSS, model_info={"note": XSS}
    )["html"].read_text()
    assert XSS not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="prob_Mass"):
        write_review_report(tmp_path, findings=["Mass"], predictions=_frame(), thresholds=[0.5])
    with pytest.raises(ValueError, match="thresholds"):
        write_review_report(tmp_path, findings=FINDINGS, predictions=_frame(), thresholds=[0.5])


def test_real_radiographs_as_thumbnails(shared_data, tmp_path):
    """Real NIH images (512 px) become <= 256 px PNG thumbnails; overlays keep the image size."""
    import base64
    import io

    from PIL import Image

    table = pd.read_csv(shared_data / "nih14" / "Data_Entry.csv").head(4)
    thumbs = {}
    for name in table["Image Index"]:
        with Image.open(shared_data / "nih14" / "images" / name) as im:
            thumbs[name] = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    frame = pd.DataFrame(
        {
            "image_id": table["Image Index"],
            "patient_id": table["Patient ID"].astype(str),
            "study_id": table["Patient ID"].astype(str),
            "prob_Effusion": [0.9, 0.1, 0.45, 0.2],
            "prob_Nodule": [0.05, 0.5, 0.1, 0.1],
        }
    )
    heat = {(i, "Effusion"): np.outer(np.hanning(14), np.hanning(14)) for i in frame["image_id"]}
    html = write_review_report(
        tmp_path, findings=FINDINGS, predictions=frame, thresholds=THR, thumbnails=thumbs, heatmaps=heat
    )["html"].read_text()
    srcs = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert len(srcs) == 4 + 1  # one positive Effusion study gets an overlay
    for src in srcs:
        with Image.open(io.BytesIO(base64.b64decode(src))) as im:
            assert max(im.size) == 256
    assert len(html) < 1_000_000
