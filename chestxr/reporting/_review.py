"""Per-study review worklist: predictions.csv, study_predictions.csv and review.html.

For new studies (no labels): each image's probabilities are reduced to its study ("max" by
default: a study is as suspicious as its most suspicious image), compared with the per-finding
thresholds, and sorted for review:

    1. studies with at least one positive finding (most confident first),
    2. borderline studies: no positive, but a finding just below its threshold (nearest first),
    3. the rest (highest logit margin first).

A finding is *positive* when ``prob >= threshold``, *borderline* when it is below but within
``borderline_logit`` of the threshold on the logit scale, otherwise *negative*. A finding whose
threshold is NaN (calibration refused or had no usable labels) calls nothing: its state, call and
margins are "not calibrated" / blank, and it never makes a study positive or borderline. A NaN
probability (never produced by predict, which skips non-finite outputs) is "no score".

Mutually exclusive classes (``multiclass=True``, a run with ``task: multiclass``): every image and
every study (after its scores are reduced) gets exactly one class, the argmax of the calibrated
scores, ties to the first class (:func:`chestxr.evaluation.decide`, the rule every output calls with): columns
``predicted_class`` and ``predicted_score``, ``call_<c>`` "positive" for that class only,
``margin_<c>`` = prob - predicted_score and ``logit_margin_<c>`` on the logit scale (0 for the
predicted class). The per-class thresholds call nothing unless ``abstain=True``: then a row whose
top score is below its class's threshold (or that threshold is not calibrated) gets
``predicted_class`` "abstain" and no positive call. Studies are ordered: a class first, most
confident first; abstained last. The logit scale
keeps "near" meaningful for thresholds close to 0 or 1 (0.04 vs 0.05 is near; 0.50 vs 0.51 too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from chestxr.core import escape_frame, normalize_id, write_text_atomic, write_with_atomic
from chestxr.evaluation import NOT_CALIBRATED, decide
from chestxr.reporting._plots import array_to_png, overlay_heatmap, png_data_uri, render_template

_EPS = 1e-6
THUMB_SIDE = 256


def logit_margin(prob: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """logit(prob) - logit(threshold), both clipped to [1e-6, 1 - 1e-6]; broadcasts (n, f) with (f,)."""
    p = np.clip(np.asarray(prob, dtype=float), _EPS, 1 - _EPS)
    t = np.clip(np.asarray(threshold, dtype=float), _EPS, 1 - _EPS)
    return (np.log(p) - np.log1p(-p)) - (np.log(t) - np.log1p(-t))


def classify_calls(prob: np.ndarray, threshold: np.ndarray, *, borderline_logit: float) -> np.ndarray:
    """(n, f) array of "positive" / "borderline" / "negative" / "not calibrated" / "no score": the calls of
    :func:`chestxr.evaluation.decide`, with a negative call within ``borderline_logit`` of its threshold on
    the logit scale marked "borderline" (the worklist's second tier)."""
    prob = np.asarray(prob, dtype=float)
    thr = np.asarray(threshold, dtype=float).reshape(-1)
    out = decide(prob, thr).labels()
    with np.errstate(invalid="ignore"):
        near = (out == "negative") & (logit_margin(prob, thr) > -borderline_logit)
    out[near] = "borderline"
    return out


def _add_calls(frame: Any, findings: Sequence[str], thresholds: np.ndarray, borderline_logit: float) -> Any:
    """Append call_<f>, margin_<f> (prob - threshold) and logit_margin_<f> after the prob columns."""
    probs = frame[[f"prob_{x}" for x in findings]].to_numpy(dtype=float)
    calls = classify_calls(probs, thresholds, borderline_logit=borderline_logit)
    usable = np.isfinite(probs) & np.isfinite(thresholds)[None, :]
    lmargin = np.where(usable, logit_margin(np.nan_to_num(probs), np.nan_to_num(thresholds, nan=0.5)), np.nan)
    frame = frame.copy()
    for j, finding in enumerate(findings):
        call = np.where(calls[:, j] == "positive", "positive", "negative").astype(object)
        call[~usable[:, j]] = calls[~usable[:, j], j]  # "not calibrated" / "no score", never a call
        frame[f"call_{finding}"] = call
        frame[f"margin_{finding}"] = np.where(usable[:, j], probs[:, j] - thresholds[j], np.nan)
        frame[f"logit_margin_{finding}"] = lmargin[:, j]
    return frame, calls, lmargin


def _add_multiclass_calls(frame: Any, findings: Sequence[str], thresholds: np.ndarray, abstain: bool) -> Any:
    """predicted_class, predicted_score, call_<c> (one "positive" per row), margin_<c>, logit_margin_<c>."""
    probs = frame[[f"prob_{x}" for x in findings]].to_numpy(dtype=float)
    decisions = decide(probs, thresholds, multiclass=True, abstain=abstain)
    calls = decisions.labels()
    top = decisions.top if decisions.top is not None else np.full(len(probs), np.nan)
    top_safe = np.where(np.isfinite(top), top, 0.5)
    lmargin = logit_margin(probs, top_safe[:, None])
    frame = frame.copy()
    frame["predicted_class"] = decisions.class_names(findings)
    frame["predicted_score"] = top
    for j, finding in enumerate(findings):
        frame[f"call_{finding}"] = calls[:, j]
        frame[f"margin_{finding}"] = probs[:, j] - top
        frame[f"logit_margin_{finding}"] = lmargin[:, j]
    return frame, calls, lmargin


def build_study_table(
    predictions: Any,
    *,
    findings: Sequence[str],
    study_reduce: Literal["max", "mean"] = "max",
) -> Any:
    """Per-study probabilities: one row per (patient, study) (images without a study are their own study).

    Studies are keyed by (patient_id, study_id), patient IDs compared trimmed and case-folded, so a
    study_id reused by several patients (or two patients sharing a StudyInstanceUID) stays one study per
    patient. predictions: DataFrame with image_id, patient_id, study_id and prob_<finding> columns.
    Returns a DataFrame with study_id, patient_id, n_images, image_ids ("a;b") and prob_<finding>
    (max or mean over the study's images), in first-seen study order.
    """
    import pandas as pd

    if study_reduce not in ("max", "mean"):
        raise ValueError(f"study_reduce must be 'max' or 'mean', got {study_reduce!r}")
    frame = pd.DataFrame(
        {"image_id": predictions["image_id"].astype(str).to_numpy(), "study_id": _study_ids(predictions)}
    )
    frame["patient_id"] = _patient_ids(predictions)
    frame["_key"] = _study_keys(predictions)
    prob_cols = [f"prob_{x}" for x in findings]
    for col in prob_cols:
        frame[col] = predictions[col].to_numpy(dtype=float)
    grouped = frame.groupby("_key", sort=False)
    out = grouped[prob_cols].agg(study_reduce)
    out.insert(0, "study_id", grouped["study_id"].first())
    out.insert(1, "patient_id", grouped["patient_id"].first())
    out.insert(2, "n_images", grouped.size())
    out.insert(3, "image_ids", grouped["image_id"].agg(";".join))
    return out.reset_index(drop=True)


def _patient_ids(predictions: Any) -> list[str]:
    if "patient_id" not in predictions.columns:
        return [""] * len(predictions)
    return ["" if _missing(p) else str(p) for p in predictions["patient_id"].tolist()]


def _study_keys(predictions: Any) -> list[tuple[str, str]]:
    """Each image's (normalised patient id, study id): the key of its study."""
    return [(normalize_id(p), s) for p, s in zip(_patient_ids(predictions), _study_ids(predictions))]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in ("", "nan", "<NA>")


def _lookup(mapping: Mapping[Any, Any] | None, key: Any) -> Any:
    """mapping[key], trying the key as given, then as str (IDs read from CSV become strings)."""
    if not mapping:
        return None
    if key in mapping:
        return mapping[key]
    return mapping.get(str(key))


def _lookup_heatmap(heatmaps: Mapping[Any, Any] | None, image_id: Any, finding: str) -> Any:
    if not heatmaps:
        return None
    for key in ((image_id, finding), (str(image_id), finding)):
        if key in heatmaps:
            return heatmaps[key]
    return None


def write_review_report(
    out_dir: str | Path,
    *,
    findings: Sequence[str],
    predictions: Any,
    thresholds: np.ndarray,
    thumbnails: Mapping[Any, np.ndarray] | None = None,
    heatmaps: Mapping[tuple[Any, str], np.ndarray] | None = None,
    study_reduce: Literal["max", "mean"] = "max",
    borderline_logit: float = 0.5,
    title: str = "chestxr review worklist",
    model_info: Mapping[str, Any] | None = None,
    approval: Mapping[str, Any] | None = None,
    multiclass: bool = False,
    abstain: bool = False,
    max_cards: int | None = None,
) -> dict[str, Path]:
    """Write predictions.csv (per image), study_predictions.csv (per study) and review.html.

    ``max_cards``: review.html shows only the first ``max_cards`` studies of the review order (positive, then
    borderline, strongest first) and says so; the CSVs always hold every image and study (a page of a
    million studies would be over a gigabyte: ~1.3 KB per card).

    findings: f names; predictions: DataFrame per image with image_id, path, patient_id, study_id
    and prob_<finding> columns; thresholds: (f,). thumbnails: image_id -> (h, w) float [0, 1]
    (downscaled to 256 px for the page); heatmaps: (image_id, finding) -> (h, w) [0, 1] Grad-CAM
    maps, shown as overlays for positive findings of the study's highest-scoring image.
    Both CSVs get, per finding, call_<f> ("positive"/"negative" at prob >= threshold),
    margin_<f> (prob - threshold) and logit_margin_<f>. approval: the run's approval status
    (:func:`chestxr.runs.approval_status`), shown as a banner; None shows "NOT APPROVED".
    Returns ``{"html", "predictions_csv",
    "study_predictions_csv"}`` -> paths (written atomically).
    """
    import datetime as _dt

    from chestxr import __version__

    findings = list(findings)
    thresholds = np.asarray(thresholds, dtype=float).reshape(-1)
    if thresholds.shape != (len(findings),):
        raise ValueError(f"thresholds has shape {thresholds.shape}; expected ({len(findings)},) for {findings}")
    missing = [c for c in ["image_id", *(f"prob_{x}" for x in findings)] if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lacks columns {missing}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if abstain and not multiclass:
        raise ValueError("abstain applies to mutually exclusive classes (multiclass=True) only")
    studies = build_study_table(predictions, findings=findings, study_reduce=study_reduce)
    if multiclass:
        images, _, _ = _add_multiclass_calls(predictions, findings, thresholds, abstain)
        studies, calls, lmargin = _add_multiclass_calls(studies, findings, thresholds, abstain)
    else:
        images, _, _ = _add_calls(predictions, findings, thresholds, borderline_logit)
        studies, calls, lmargin = _add_calls(studies, findings, thresholds, borderline_logit)

    tier = np.where((calls == "positive").any(axis=1), 0, np.where((calls == "borderline").any(axis=1), 1, 2))
    usable = np.isfinite(lmargin)
    best = np.where(usable, lmargin, -np.inf).max(axis=1) if len(findings) else np.zeros(len(studies))
    if multiclass:  # most confident class first
        best = logit_margin(np.nan_to_num(studies["predicted_score"].to_numpy(dtype=float)), np.array(0.5))
    order = np.lexsort((-best, tier))  # tier first, then the strongest margin
    studies["review_tier"] = np.array(["positive", "borderline", "negative"], dtype=object)[tier]
    studies["review_rank"] = np.empty(len(studies), dtype=int)
    studies.loc[order, "review_rank"] = np.arange(1, len(studies) + 1)
    studies = studies.iloc[order].reset_index(drop=True)
    calls, lmargin, tier = calls[order], lmargin[order], tier[order]

    paths = {
        "html": out / "review.html",
        "predictions_csv": out / "predictions.csv",
        "study_predictions_csv": out / "study_predictions.csv",
    }
    # text cells that a spreadsheet would run as formulas get a leading apostrophe (chestxr/core/_csvsafe.py)
    write_with_atomic(paths["predictions_csv"], lambda tmp: escape_frame(images).to_csv(tmp, index=False))
    write_with_atomic(paths["study_predictions_csv"], lambda tmp: escape_frame(studies).to_csv(tmp, index=False))

    image_probs = predictions[[f"prob_{x}" for x in findings]].to_numpy(dtype=float)
    image_ids = predictions["image_id"].tolist()
    by_study: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(_study_keys(predictions)):
        by_study.setdefault(key, []).append(i)

    cards = []
    shown = studies if max_cards is None else studies.head(max_cards)
    for k, row in shown.iterrows():
        members = by_study.get((normalize_id(row["patient_id"]), str(row["study_id"])), [])
        thumbs = []
        for i in members[:6]:
            thumb = _lookup(thumbnails, image_ids[i])
            if thumb is not None:
                thumbs.append(
                    {"label": str(image_ids[i]), "src": png_data_uri(array_to_png(thumb, max_side=THUMB_SIDE))}
                )
        items = []
        for j, finding in enumerate(findings):
            item = {
                "name": finding,
                "prob": float(row[f"prob_{finding}"]),
                "threshold": float(thresholds[j]),
                "margin": float(row[f"margin_{finding}"]),
                "logit_margin": float(lmargin[k, j]),
                "state": calls[k, j],
                "css": str(calls[k, j]).replace(" ", "-"),
                "overlay": None,
            }
            if calls[k, j] == "positive" and members and heatmaps:
                top = members[int(np.argmax(image_probs[members, j]))]
                heat, base = _lookup_heatmap(heatmaps, image_ids[top], finding), _lookup(thumbnails, image_ids[top])
                if heat is not None:
                    base = base if base is not None else np.zeros_like(np.asarray(heat, dtype=float))
                    rgb = overlay_heatmap(_fit_side(base), heat)
                    item["overlay"] = png_data_uri(array_to_png(rgb, max_side=THUMB_SIDE))
                    item["overlay_image"] = str(image_ids[top])
            items.append(item)
        state_rank = {"positive": 0, "borderline": 1, "negative": 2, NOT_CALIBRATED: 3, "no score": 4}
        items.sort(key=lambda it: (state_rank[it["state"]], -np.nan_to_num(it["logit_margin"], nan=-np.inf)))
        cards.append(
            {
                "rank": int(row["review_rank"]),
                "tier": row["review_tier"],
                "study_id": str(row["study_id"]),
                "patient_id": str(row["patient_id"]),
                "n_images": int(row["n_images"]),
                "thumbs": thumbs,
                "items": items,
                "n_positive": int((calls[k] == "positive").sum()),
                "predicted": str(row["predicted_class"]) if multiclass else None,
                "predicted_score": float(row["predicted_score"]) if multiclass else None,
                "n_borderline": int((calls[k] == "borderline").sum()),
            }
        )

    counts = {t: int((tier == i).sum()) for i, t in enumerate(("positive", "borderline", "negative"))}
    html = render_template(
        "review.html",
        title=title,
        cards=cards,
        counts=counts,
        n_images=len(predictions),
        n_studies=len(studies),
        findings=list(zip(findings, thresholds.tolist())),
        study_reduce=study_reduce,
        borderline_logit=borderline_logit,
        version=__version__,
        model_info=[(str(k), str(v)) for k, v in (model_info or {}).items()],
        multiclass=multiclass,
        abstain=abstain,
        approval=dict(approval) if approval else None,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    write_text_atomic(paths["html"], html)
    return paths


def _study_ids(predictions: Any) -> list[str]:
    """Each image's study id as str (the image id where the study id is missing)."""
    ids = predictions["image_id"].astype(str).tolist()
    if "study_id" not in predictions.columns:
        return ids
    return [img if _missing(sid) else str(sid) for sid, img in zip(predictions["study_id"].tolist(), ids)]


def _fit_side(image: np.ndarray) -> np.ndarray:
    """Downscale a (h, w) image so its long side is at most THUMB_SIDE (keeps overlays small)."""
    from PIL import Image

    arr = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0, 1)
    if max(arr.shape) <= THUMB_SIDE:
        return arr
    pil = Image.fromarray(arr, mode="F")
    pil.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float32)
