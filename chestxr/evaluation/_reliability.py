"""Reliability bins and the expected calibration error (ECE): the one implementation the metrics,
``calibrate`` (ECE before/after probability calibration) and the report's reliability diagrams use.

Binning follows :func:`sklearn.calibration.calibration_curve`: ``strategy="uniform"`` cuts [0, 1]
into ``n_bins`` equal-width bins, ``"quantile"`` puts the edges at the score quantiles (about the
same number of samples per bin; repeated edges make empty bins). A score on an inner edge belongs to
the bin below it (``np.searchsorted(edges[1:-1], s)``), 0 to the first bin and 1 to the last. Per
bin: ``count``, ``mean_score`` (the x of a reliability diagram - the mean predicted probability in
the bin, not the bin's midpoint) and ``frac_pos`` (observed fraction of positives).

ECE = sum over bins of (count / n) * |frac_pos - mean_score|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from chestxr.evaluation._metrics import MetricInputError, as_binary_pair

Strategy = Literal["uniform", "quantile"]
STRATEGIES = ("uniform", "quantile")
#: bins with fewer samples than this are drawn lighter in the report (their fraction is noisy)
MIN_BIN_COUNT = 5


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin summary of (label, score) pairs. Arrays have one entry per bin (``n_bins``), except
    ``edges`` (n_bins + 1,). ``mean_score``/``frac_pos`` are NaN for empty bins."""

    edges: np.ndarray
    count: np.ndarray
    mean_score: np.ndarray
    frac_pos: np.ndarray
    strategy: str

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.count.sum())

    @property
    def nonempty(self) -> np.ndarray:
        """(n_bins,) bool: bins holding at least one sample."""
        return self.count > 0

    def ece(self) -> float:
        """Expected calibration error; NaN without samples."""
        if self.n == 0:
            return math.nan
        ok = self.nonempty
        return float(np.sum(self.count[ok] / self.n * np.abs(self.frac_pos[ok] - self.mean_score[ok])))

    def points(self, min_count: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean_score, frac_pos, count) of the bins with >= ``min_count`` samples; with the default
        these equal sklearn's ``calibration_curve`` (prob_pred, prob_true) plus the counts."""
        ok = self.count >= max(min_count, 1)
        return self.mean_score[ok], self.frac_pos[ok], self.count[ok]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists (NaN -> None)."""

        def plain(a: np.ndarray) -> list:
            return [None if isinstance(v, float) and math.isnan(v) else v for v in a.tolist()]

        return {
            "strategy": self.strategy,
            "edges": self.edges.tolist(),
            "count": self.count.tolist(),
            "mean_score": plain(self.mean_score),
            "frac_pos": plain(self.frac_pos),
        }


def _edges(s: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be >= 1, got {n_bins}")
    if strategy not in STRATEGIES:
        raise MetricInputError(f"reliability bin strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise MetricInputError(
            f"scores must be probabilities in [0, 1] (got {s.min():g}..{s.max():g}); apply a sigmoid"
        )
    if strategy == "quantile" and s.size:
        return np.percentile(s, np.linspace(0.0, 1.0, n_bins + 1) * 100)  # exactly as sklearn
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability_bins(y_true: Any, y_score: Any, *, n_bins: int = 10, strategy: Strategy = "uniform") -> ReliabilityBins:
    """Bin (n,) labels (binarised at >= 0.5) and (n,) probabilities; see the module docstring."""
    y, s = as_binary_pair(y_true, y_score)
    edges = _edges(s, n_bins, strategy)
    idx = np.searchsorted(edges[1:-1], s)  # as sklearn.calibration.calibration_curve
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(idx, weights=s, minlength=n_bins) / count
        frac = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins) / count
    empty = count == 0
    mean[empty], frac[empty] = np.nan, np.nan
    return ReliabilityBins(edges=edges, count=count, mean_score=mean, frac_pos=frac, strategy=strategy)


def expected_calibration_error(y_true: Any, y_score: Any, *, n_bins: int = 10, strategy: Strategy = "uniform") -> float:
    """ECE of (n,) labels and (n,) probabilities over ``n_bins`` bins; NaN for empty input."""
    return reliability_bins(y_true, y_score, n_bins=n_bins, strategy=strategy).ece()
