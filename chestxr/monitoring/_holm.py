"""Holm's step-down adjustment across the tests of one window (Holm 1979).

With m defined p-values sorted p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting every test whose adjusted p-value is <= alpha keeps
the family-wise error rate (the probability of any false alarm in the window) <= alpha under any
dependence between the tests. Undefined tests (NaN p-values: too few patients, no labels) are not in
the family and keep NaN; the callers count and report them.
"""

from __future__ import annotations

import numpy as np


def holm_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, same shape as ``pvalues`` (1-D); NaN stays NaN and is not counted in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = defined.size
    if m == 0:
        return out
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
