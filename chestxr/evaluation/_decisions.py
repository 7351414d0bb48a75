"""The one decision rule: scores and operating points -> calls, for every output that calls a finding.

:func:`decide` is used by :meth:`chestxr.Run.predict`, the evaluation report's predictions.csv, the review
worklist (predictions.csv, study_predictions.csv, review.html) and, through the worklist's CSV, the PACS SR.

* Findings (``multiclass=False``): a finding is positive when ``score >= threshold``; a NaN threshold (not
  calibrated: refused, or no usable labels) calls nothing, and its label is "not calibrated"; a row whose
  score is NaN (an image that was not scored) calls nothing, label "no score".
* Mutually exclusive classes (``multiclass=True``, ``task: multiclass``, e.g. one-vs-rest): every row gets
  exactly one class, the argmax of the (calibrated) scores, ties to the first class in the findings order
  (``np.argmax``). The per-class thresholds are NOT used to call classes (that would call several exclusive
  classes at once); only the explicit abstain rule uses them: with ``abstain=True`` a row gets no class
  (:data:`ABSTAIN`) when its top score is below the winning class's threshold, or that threshold is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from chestxr.evaluation._operating_point import NOT_CALIBRATED

#: class index for "the abstain rule withheld the class"
ABSTAIN = -2
#: class index for a row without scores (a skipped image)
NO_SCORE = -1
#: what the CSVs and reports write for an abstained row
ABSTAIN_LABEL = "abstain"
#: the call labels (``Decisions.labels``)
POSITIVE, NEGATIVE, NO_SCORE_LABEL = "positive", "negative", "no score"


@dataclass(frozen=True)
class Decisions:
    """The calls for n rows (images or studies) and f findings.

    positive (n, f) bool: the calls. scored (n,) bool: the row's scores are all finite. calibrated (f,)
    bool: the finding has a finite threshold. predicted (n,) int, multiclass only: the class index,
    :data:`ABSTAIN` or :data:`NO_SCORE`; top (n,) float64, multiclass only: the top score (NaN unscored).
    """

    positive: np.ndarray
    scored: np.ndarray
    calibrated: np.ndarray
    multiclass: bool = False
    predicted: Optional[np.ndarray] = None
    top: Optional[np.ndarray] = None

    def labels(self) -> np.ndarray:
        """(n, f) object array, the ``call_<finding>`` cells: "positive", "negative", "no score" (a row
        without scores) or, for findings, "not calibrated" (a NaN threshold calls nothing; it wins over
        "no score")."""
        out = np.where(self.positive, POSITIVE, NEGATIVE).astype(object)
        out[~self.scored, :] = NO_SCORE_LABEL
        if not self.multiclass:
            out[:, ~self.calibrated] = NOT_CALIBRATED
        return out

    def class_names(self, findings: Sequence[str]) -> list[str]:
        """Multiclass: the predicted class name per row, "abstain" or "" (no score)."""
        if self.predicted is None:
            raise ValueError("class_names: these decisions are not for mutually exclusive classes")
        return [findings[i] if i >= 0 else (ABSTAIN_LABEL if i == ABSTAIN else "") for i in self.predicted]


def decide(scores: np.ndarray, thresholds: np.ndarray, *, multiclass: bool = False, abstain: bool = False) -> Decisions:
    """The calls for ``scores`` (n, f) at ``thresholds`` (f,) (the module docstring has the rule).

    Raises ValueError for mismatched shapes, or ``abstain`` without ``multiclass``."""
    s = np.asarray(scores, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != thr.size or thr.size == 0:
        raise ValueError(f"{thr.size} thresholds for scores of shape {s.shape}")
    scored = np.asarray(np.isfinite(s).all(axis=1), dtype=bool)
    calibrated = np.isfinite(thr)
    if not multiclass:
        if abstain:
            raise ValueError("abstain applies to mutually exclusive classes (multiclass) only")
        with np.errstate(invalid="ignore"):
            positive = np.isfinite(s) & calibrated[None, :] & (s >= np.where(calibrated, thr, np.inf)[None, :])
        return Decisions(positive=positive, scored=scored, calibrated=calibrated)
    idx = np.argmax(np.where(np.isfinite(s), s, -np.inf), axis=1).astype(np.int64) if len(s) else np.zeros(0, int)
    top = np.where(scored, s[np.arange(len(s)), idx], np.nan) if len(s) else np.zeros(0)
    if abstain:
        with np.errstate(invalid="ignore"):
            below = ~(top >= thr[idx])  # NaN threshold or NaN top: not >=
        idx = np.where(scored & below, ABSTAIN, idx)
    idx = np.where(scored, idx, NO_SCORE)
    positive = np.zeros(s.shape, dtype=bool)
    rows = np.flatnonzero(idx >= 0)
    positive[rows, idx[rows]] = True
    return Decisions(positive=positive, scored=scored, calibrated=calibrated, multiclass=True, predicted=idx, top=top)
