"""Decisions for mutually exclusive classes (``task: multiclass``): the argmax of the scores.

One-vs-rest trains one binary model per class; at inference the design takes the argmax of the
(calibrated) binary scores, so every image (and every study, after its scores are reduced) gets
exactly one class. Ties go to the first class in the findings order (``np.argmax``). The per-class
thresholds are NOT used to call classes (that would call several exclusive classes at once); they
are used only by the explicit abstain rule: with ``abstain=True`` an image gets no class
(:data:`ABSTAIN`) when the top score is below the winning class's threshold, or that threshold is
not calibrated (NaN).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: class index for "the abstain rule withheld the class"
ABSTAIN = -2
#: class index for a row without scores (a skipped image)
NO_SCORE = -1
#: what the CSVs and reports write for an abstained row
ABSTAIN_LABEL = "abstain"

__all__ = ["ABSTAIN", "ABSTAIN_LABEL", "NO_SCORE", "argmax_decision", "one_hot_calls"]


def argmax_decision(
    scores: np.ndarray, thresholds: Optional[np.ndarray] = None, *, abstain: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(class index (n,) int, top score (n,) float64) from scores (n, f).

    Index: argmax over classes, the first on ties; NO_SCORE (-1) for a row whose scores are not all
    finite; ABSTAIN (-2) with ``abstain`` when the top score is below ``thresholds[argmax]`` (f,)
    or that threshold is NaN. Top score: NaN on NO_SCORE rows.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be (n, f) with f >= 1, got shape {s.shape}")
    finite = np.isfinite(s).all(axis=1)
    idx = np.argmax(np.where(np.isfinite(s), s, -np.inf), axis=1).astype(np.int64)
    top = np.where(finite, s[np.arange(len(s)), idx], np.nan)
    if abstain:
        if thresholds is None:
            raise ValueError("the abstain rule needs the per-class thresholds")
        thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if thr.shape != (s.shape[1],):
            raise ValueError(f"thresholds has shape {thr.shape}; expected ({s.shape[1]},)")
        with np.errstate(invalid="ignore"):
            below = ~(top >= thr[idx])  # NaN threshold or NaN top: not >=
        idx = np.where(finite & below, ABSTAIN, idx)
    idx = np.where(finite, idx, NO_SCORE)
    return idx, top


def one_hot_calls(index: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, f) bool: True at the decided class, all False for ABSTAIN / NO_SCORE rows."""
    idx = np.asarray(index, dtype=np.int64)
    out = np.zeros((len(idx), n_classes), dtype=bool)
    rows = np.flatnonzero(idx >= 0)
    out[rows, idx[rows]] = True
    return out
