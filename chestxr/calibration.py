"""Stable public path for operating-point calibration: ``chestxr.calibration.fit_thresholds``.

The implementation lives in :mod:`chestxr.evaluation.thresholds` (and may move within the package);
this module is the import path external code and checks should use, and it will keep these names::

    from chestxr.calibration import fit_thresholds
    fits = fit_thresholds(y_true, y_score, mask, method="sensitivity:0.9", confidence=0.95)
    fits[0].threshold, fits[0].status, fits[0].lower_bound   # NaN / "insufficient_data" when refused

y_true, y_score, mask: (n_samples, n_findings); one :class:`ThresholdFit` per finding.
"""

from chestxr.evaluation.methods import Method, parse_method
from chestxr.evaluation.thresholds import (
    STATUSES,
    InsufficientDataWarning,
    ThresholdFit,
    apply_thresholds,
    fit_threshold,
    fit_thresholds,
)

__all__ = [
    "fit_thresholds",
    "fit_threshold",
    "apply_thresholds",
    "parse_method",
    "Method",
    "ThresholdFit",
    "InsufficientDataWarning",
    "STATUSES",
]
