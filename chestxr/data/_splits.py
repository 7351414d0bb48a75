"""Patient-level stratified splits and manifest summaries.

``split_manifest`` assigns whole patients (never single images) to train/val/test with a greedy
iterative stratification (after Sechidis et al. 2011, at patient level):

1. per patient, count its positive images (label >= 0.5; uncertain and blank do not count) per
   finding; each split s wants ``fraction_s * total_positives_f`` positives of finding f and
   ``fraction_s * n_images`` images;
2. repeatedly take the finding with the fewest positive patients not yet placed, and place each
   of those patients (in a seeded random order) in the split that
   (a) would receive its first positive for the most of the patient's positive findings, else
   (b) is furthest below its wanted positives of that finding, else
   (c) is furthest below its wanted image count;
3. patients without positives fill the splits furthest below their wanted image counts.

Rule (a) gives a finding positives in every split (with a non-zero fraction) whenever it has at
least as many positive patients as there are splits, unless those patients were all placed
earlier for rarer findings they share. The result depends only on the manifest and the seed.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from chestxr.core import ConfigError, ManifestError, normalize_id
from chestxr.data._schema import SPLITS, Manifest, Problem


def split_manifest(manifest: Manifest, *, val: float, test: float, seed: int) -> Manifest:
    """A copy of ``manifest`` with its ``split`` column set to train/val/test by patient.

    val, test: fractions of images wanted in val and test (train gets the rest; 0 allowed).
    Raises ConfigError for bad fractions and ManifestError when a row has no patient_id.
    """
    for name, f in (("val", val), ("test", test)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ConfigError(f"{name} fraction must be a number in [0, 1), got {f!r}")
    if val + test >= 1.0:
        raise ConfigError(f"val + test = {val + test:g} leaves nothing for train; use fractions summing below 1")
    frame = manifest.frame
    pid = frame["patient_id"].astype(str).to_numpy(dtype=object)
    if len(frame) == 0 or (pid == "").any():
        raise ManifestError(
            manifest.source,
            [
                Problem(
                    None,
                    "patient_id",
                    None,
                    "every row needs a patient_id to split by patient",
                    "add a patient_id column (or fill in the blanks)",
                    "missing_column",
                )
            ],
        )
    codes, patients = pd.factorize(np.array([normalize_id(p) for p in pid], dtype=object))  # "P1" == "p1 "
    n_pat, n_img = len(patients), len(frame)
    positive = np.nan_to_num(manifest.labels(), nan=0.0) >= 0.5
    pos = (
        pd.DataFrame(positive.astype(np.int64)).groupby(codes).sum().to_numpy()
        if positive.shape[1]
        else np.zeros((n_pat, 0), dtype=np.int64)
    )
    images = np.bincount(codes, minlength=n_pat).astype(np.float64)
    fractions = np.array([1.0 - val - test, val, test])
    active = fractions > 0
    total = pos.sum(axis=0).astype(np.float64)
    want_pos = fractions[:, None] * total[None, :]
    want_img = fractions * n_img
    got_pos = np.zeros_like(want_pos)
    got_img = np.zeros(3)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_pat)
    is_pos = pos > 0
    assign = np.full(n_pat, -1, dtype=np.int64)
    split_idx = [int(s) for s in np.flatnonzero(active)]
    want_any = want_pos > 0

    def place(p: int, f: int) -> None:
        fs = np.flatnonzero(is_pos[p])
        empty = [int((want_any[s, fs] & (got_pos[s, fs] == 0)).sum()) for s in range(3)]
        s = max(split_idx, key=lambda s: (empty[s], want_pos[s, f] - got_pos[s, f], want_img[s] - got_img[s], -s))
        assign[p] = s
        got_pos[s] += pos[p]
        got_img[s] += images[p]

    left = is_pos[perm].sum(axis=0)  # positive patients not yet placed, per finding
    todo = is_pos[perm].copy()
    while left.any():
        f = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))  # rarest finding left
        for k in np.flatnonzero(todo[:, f]):
            p = int(perm[k])
            if assign[p] < 0:
                place(p, f)
                left -= todo[k]
                todo[k] = False
    for p in perm[assign[perm] < 0]:  # patients without positives fill the image counts
        s = max(split_idx, key=lambda s: (want_img[s] - got_img[s], -s))
        assign[p] = s
        got_img[s] += images[p]
    too_rare = [manifest.findings[j] for j in range(len(total)) if 0 < (pos[:, j] > 0).sum() < active.sum()]
    if too_rare:
        warnings.warn(
            f"finding(s) {too_rare} have fewer positive patients than splits; some split has no positive for them",
            stacklevel=2,
        )
    names = np.array(SPLITS, dtype=object)
    new = frame.copy()
    new["split"] = pd.Series(names[assign[codes]], index=frame.index, dtype=str)
    return replace(manifest, frame=new)


def split_summary(manifest: Manifest) -> pd.DataFrame:
    """Per split: images, patients and positive images (label >= 0.5) per finding.

    Index: "images", "patients", then the findings; columns: the splits present in
    train/val/test order (blank split shown as "(none)"), plus "all".
    """
    frame = manifest.frame
    split = frame["split"].astype(str).replace("", "(none)")
    order = [s for s in list(SPLITS) + ["(none)"] if (split == s).any()]
    order += sorted(set(split.unique()) - set(order))
    positive = np.nan_to_num(manifest.labels(), nan=0.0) >= 0.5
    cols: dict[str, list[int]] = {}
    for s in order + ["all"]:
        sel = np.ones(len(frame), dtype=bool) if s == "all" else (split == s).to_numpy()
        cols[s] = [int(sel.sum()), int(frame.loc[sel, "patient_id"].nunique())] + [
            int(v) for v in positive[sel].sum(axis=0)
        ]
    return pd.DataFrame(cols, index=["images", "patients"] + list(manifest.findings))


def describe_manifest(manifest: Manifest) -> dict[str, Any]:
    """Counts of a manifest.

    Returns {"images", "patients", "studies": int, "views", "splits": {value: images},
    "findings": DataFrame (index finding; columns positive (1), negative (0), uncertain (-1),
    blank, soft (strictly between 0 and 1), labeled (positive + negative + soft))}.
    """
    frame = manifest.frame
    labels = manifest.labels()
    blank = np.isnan(labels)
    stats = pd.DataFrame(
        {
            "positive": (labels == 1.0).sum(axis=0),
            "negative": (labels == 0.0).sum(axis=0),
            "uncertain": (labels == -1.0).sum(axis=0),
            "blank": blank.sum(axis=0),
            "soft": ((labels > 0.0) & (labels < 1.0)).sum(axis=0),
        },
        index=list(manifest.findings),
    ).astype(np.int64)
    stats["labeled"] = stats["positive"] + stats["negative"] + stats["soft"]
    pids = frame["patient_id"].astype(str)

    def counts(col: str) -> dict[str, int]:
        v = frame[col].astype(str).replace("", "(none)")
        vc = {str(k): int(c) for k, c in v.value_counts(sort=True).items()}
        first = [s for s in SPLITS if s in vc] if col == "split" else []
        return {k: vc[k] for k in first + [k for k in vc if k not in first]}

    return {
        "images": int(len(frame)),
        "patients": int(pids[pids != ""].nunique()),
        "studies": int(frame["study_id"].nunique()),
        "views": counts("view"),
        "splits": counts("split"),
        "findings": stats,
    }


def format_description(desc: dict[str, Any]) -> str:
    """describe_manifest's result as printable text (one table per section)."""
    lines = [f"images: {desc['images']}   patients: {desc['patients']}   studies: {desc['studies']}"]
    lines.append("views: " + ", ".join(f"{k} {v}" for k, v in desc["views"].items()))
    lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in desc["splits"].items()))
    if len(desc["findings"]):
        lines += ["", desc["findings"].to_string()]
    return "\n".join(lines)
