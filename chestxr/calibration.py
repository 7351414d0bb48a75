"""Operating points: the stable public path of the calibration concept (``chestxr.calibration.fit_thresholds``).

One finding's operating point is an :class:`OperatingPoint`: its decision threshold, the rule that chose it,
what it achieved on the calibration data (rates with exact intervals) and, for a guaranteed rule, its
:class:`Guarantee` (metric >= target with a one-sided confidence level, met or refused and why). The same
record is returned by :func:`fit_thresholds`, stored in thresholds.json and model.json, checked by the
evaluation report and shown on the model card and in the PACS SR. :func:`decide` turns scores into calls at
those thresholds (the one rule every output uses)::

    from chestxr.calibration import decide, fit_thresholds
    points = fit_thresholds(y_true, y_score, mask, method="sensitivity:0.9", confidence=0.95)
    points[0].threshold, points[0].status, points[0].lower_bound   # NaN / "insufficient_data" when refused
    points[0].guarantee.describe() if points[0].guarantee else points[0].describe()
    calls = decide(y_score, [p.threshold for p in points]).positive  # (n_samples, n_findings) bool
    plan("sensitivity:0.9", confidence=0.95, findings=14, expected=0.95)  # Plan: cases needed (chestxr plan)

y_true, y_score, mask: (n_samples, n_findings); one :class:`OperatingPoint` per finding. The implementation
lives in :mod:`chestxr.evaluation`; the names here are kept at this path. ``ThresholdFit`` (the earlier name
of :class:`OperatingPoint`) and ``apply_thresholds`` (``decide(...).positive``) are deprecated and go in the
next release.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from chestxr.core import CalibrationError
from chestxr.evaluation import (
    NOT_CALIBRATED,
    STATUSES,
    Decisions,
    Guarantee,
    InsufficientDataWarning,
    Method,
    OperatingPoint,
    Plan,
    PlanRow,
    decide,
    fit_threshold,
    fit_thresholds,
    parse_method,
    plan,
    plan_command,
)

#: Deprecated: the earlier name of :class:`OperatingPoint` (same fields); removed in the next release.
ThresholdFit = OperatingPoint


def apply_thresholds(y_score: Any, thresholds: Any) -> np.ndarray:
    """Deprecated: ``decide(y_score, thresholds).positive`` (the one decision rule); removed in the next release.

    0/1 calls (n_samples, n_findings) bool: score >= threshold; a NaN threshold calls nothing."""
    warnings.warn(
        "chestxr.calibration.apply_thresholds is deprecated: use decide(scores, thresholds).positive",
        DeprecationWarning,
        stacklevel=2,
    )
    try:
        return decide(y_score, thresholds).positive
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None


__all__ = [
    "NOT_CALIBRATED",
    "STATUSES",
    "Decisions",
    "Guarantee",
    "InsufficientDataWarning",
    "Method",
    "OperatingPoint",
    "Plan",
    "PlanRow",
    "ThresholdFit",
    "apply_thresholds",
    "decide",
    "fit_threshold",
    "fit_thresholds",
    "parse_method",
    "plan",
    "plan_command",
]
