"""Patient-level (cluster) bootstrap of per-finding metrics, with undefined resamples counted.

The bootstrap is vectorised (see :func:`bootstrap_replicates`): a resample is a vector of integer
multiplicities per patient; for each finding the scores are sorted once and the AUROC of a whole
chunk of resamples is a weighted Mann-Whitney statistic from cumulative sums, the confusion counts
a matrix-vector product. Integer weights make the float32 sums exact.

Intervals are percentile intervals over the resamples in which the metric is defined. Resamples
where it is undefined (no positive drawn for AUROC / sensitivity, nothing called positive for PPV,
...) are COUNTED: ``n_valid`` is written beside every interval, a warning names every finding and
metric with undefined resamples, and an interval resting on fewer than half of the resamples
(``MIN_VALID_FRACTION``) is not reported (NaN, ``complete`` False) rather than shown as if complete.
For proportions prefer the exact intervals of chestxr/evaluation/_intervals.py; the bootstrap is
for AUROC and F1.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from chestxr.evaluation._metrics import (
    METRIC_NAMES,
    MetricInputError,
    UndefinedMetricWarning,
    as_binary_pair,
    as_matrices,
    rates_from_counts,
    ratio,
)

BOOT_KEYS = ("auroc",) + METRIC_NAMES
MIN_VALID_FRACTION = 0.5


def group_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """(index (n,) in [0, n_groups), n_groups) for patient ids; each image its own group when None."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise MetricInputError(f"groups must have shape ({n},), got {g.shape}")
    try:
        _, inv = np.unique(g, return_inverse=True)
    except TypeError:  # mixed types (e.g. None among strings): compare as text
        _, inv = np.unique(g.astype(str), return_inverse=True)
    return inv.reshape(n), int(inv.max()) + 1 if n else 0


def draw_resample_counts(n_groups: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n_groups, size) float32: how often each group is drawn in each of ``size`` resamples.

    Each column sums to n_groups (n_groups draws with replacement, equal probabilities)."""
    counts = np.empty((size, n_groups), dtype=np.float32)
    for b in range(size):
        counts[b] = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
    return np.ascontiguousarray(counts.T)


class FindingPlan:
    """Per-finding precomputation for the vectorised bootstrap.

    Negatives are sorted by score once and cut into segments at every position where a positive
    (or the threshold) falls. Two sparse matrices over groups then give, for a whole chunk of
    resamples at once: the negative weight of each segment (-> cumulative weight of negatives below
    each cut) and the positive weight sitting at each cut (half at each end of a tie run). Their
    product summed is the weighted Mann-Whitney U; confusion counts are products with the counts.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray, g: np.ndarray, threshold: float, n_groups: int) -> None:
        from scipy.sparse import csr_matrix

        order = np.argsort(s[~y], kind="stable")
        neg_s, neg_g = s[~y][order], g[~y][order]
        pos_s, pos_g = s[y], g[y]
        lo = np.searchsorted(neg_s, pos_s, side="left")  # negatives strictly below each positive
        hi = np.searchsorted(neg_s, pos_s, side="right")  # ... or tied with it
        self.has_threshold = threshold is not None and math.isfinite(threshold)
        cut = np.searchsorted(neg_s, threshold, side="left") if self.has_threshold else 0
        n_neg = neg_s.size
        starts = np.unique(np.concatenate([[0, cut], lo, hi]))
        starts = starts[starts < n_neg]
        edges = np.append(starts, n_neg)  # cum row k = negative weight before position edges[k]
        seg_id = np.repeat(np.arange(starts.size), np.diff(edges))
        self.neg_segments = csr_matrix(
            (np.ones(n_neg, dtype=np.float32), (seg_id, neg_g)), shape=(starts.size, n_groups)
        )
        rows = np.concatenate([np.searchsorted(edges, lo), np.searchsorted(edges, hi)])
        self.pos_at_edges = csr_matrix(
            (np.full(rows.size, 0.5, dtype=np.float32), (rows, np.tile(pos_g, 2))), shape=(edges.size, n_groups)
        )
        self.cut = int(np.searchsorted(edges, cut))
        if self.has_threshold:  # positive images called positive, per group
            self.tp_per_group = np.bincount(pos_g[pos_s >= threshold], minlength=n_groups).astype(np.float32)

    def run(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics for every resample in ``counts`` (n_groups, B) float32 -> {key: (B,)}."""
        seg = self.neg_segments @ counts  # (n_segments, B)
        cum = np.zeros((seg.shape[0] + 1, counts.shape[1]), dtype=np.float32)
        np.cumsum(seg, axis=0, out=cum[1:])  # exact: integer sums < 2**24
        pos = self.pos_at_edges @ counts  # (n_segments + 1, B)
        p, nn = pos.sum(axis=0, dtype=np.float64), cum[-1].astype(np.float64)
        num = np.einsum("kb,kb->b", cum, pos, dtype=np.float64)  # weighted Mann-Whitney U
        out = {"auroc": ratio(num, p * nn)}
        if self.has_threshold:
            tp = (self.tp_per_group @ counts).astype(np.float64)
            fp = nn - cum[self.cut]
            out.update(rates_from_counts(tp, fp, nn - fp, p - tp))
        else:
            out.update({k: np.full(counts.shape[1], np.nan) for k in METRIC_NAMES})
        return out


def weighted_auroc(y_true: Any, y_score: Any, weights: Any) -> np.ndarray:
    """AUROC under each column of integer ``weights`` (n_samples, B) -> (B,), ties counted 1/2.

    Equals roc_auc_score on the data with sample i repeated weights[i, b] times."""
    y, s = as_binary_pair(y_true, y_score)
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[0] != y.size:
        raise MetricInputError(f"weights must be (n_samples, B) = ({y.size}, B), got {w.shape}")
    return np.asarray(FindingPlan(y, s, np.arange(y.size), math.nan, y.size).run(w)["auroc"])


def bootstrap_replicates(
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    *,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
    max_memory_mb: float = 256.0,
) -> dict[str, np.ndarray]:
    """Per-resample metrics {"auroc", "sensitivity", ...: (n_boot, n_findings)} (NaN where undefined).

    Resamples patients (unique ``groups``, all their images) with replacement, or images when
    ``groups`` is None; every finding sees the same resamples. Resamples are processed ``chunk_size``
    at a time (default: as many as fit ``max_memory_mb`` of float32 work arrays).
    """
    y, s, m = as_matrices(y_true, y_score, mask)
    n, f = y.shape
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size != f:
        raise MetricInputError(f"thresholds must have one value per finding ({f}), got {thr.size}")
    g, n_groups = group_index(groups, n)
    out = {k: np.full((n_boot, f), np.nan) for k in BOOT_KEYS}
    if n_boot <= 0 or n == 0:
        return out
    plans = [FindingPlan(y[m[:, j], j], s[m[:, j], j], g[m[:, j]], float(thr[j]), n_groups) for j in range(f)]
    if chunk_size is None:
        chunk_size = int(max_memory_mb * 2**20 // (4 * 5 * max(n, n_groups, 1)))
    chunk_size = max(1, min(int(chunk_size), n_boot))
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk_size):
        size = min(chunk_size, n_boot - start)
        counts = draw_resample_counts(n_groups, size, rng)
        for j, plan in enumerate(plans):
            for key, vals in plan.run(counts).items():
                out[key][start : start + size, j] = vals
    return out


def bootstrap_intervals(
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    *,
    groups: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = None,
    findings: Sequence[str] | None = None,
    keys: Sequence[str] = BOOT_KEYS,
) -> dict[str, dict[str, np.ndarray]]:
    """Percentile intervals with their resample counts: {key: {"ci": (f, 2), "n_valid": (f,) int,
    "complete": (f,) bool}} for key in ``keys`` (subset of BOOT_KEYS).

    y_true, y_score, mask: (n_samples, n_findings); thresholds: (n_findings,); groups: (n_samples,)
    patient ids -> patient-level bootstrap. ``n_valid`` counts the resamples in which the metric is
    defined; the interval uses those; with fewer than ``MIN_VALID_FRACTION * n_boot`` of them the
    interval is [NaN, NaN] and ``complete`` False. One warning per finding lists every metric with
    undefined resamples (UndefinedMetricWarning)."""
    unknown = set(keys) - set(BOOT_KEYS)
    if unknown:
        raise MetricInputError(f"unknown bootstrap metrics {sorted(unknown)}; known: {list(BOOT_KEYS)}")
    reps = bootstrap_replicates(
        y_true, y_score, mask, thresholds, groups=groups, n_boot=n_boot, seed=seed, chunk_size=chunk_size
    )
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out: dict[str, dict[str, np.ndarray]] = {}
    f = next(iter(reps.values())).shape[1]
    defined = _defined_on_full_data(y_true, y_score, mask, thresholds)
    lost: list[list[str]] = [[] for _ in range(f)]
    for key in keys:
        r = reps[key]
        ci, n_valid = np.full((f, 2), np.nan), np.zeros(f, dtype=np.int64)
        complete = np.zeros(f, dtype=bool)
        for j in range(f):
            ok = r[:, j][np.isfinite(r[:, j])]
            n_valid[j] = ok.size
            complete[j] = n_boot > 0 and ok.size >= MIN_VALID_FRACTION * n_boot
            if complete[j]:
                ci[j] = np.quantile(ok, q)
            if 0 < n_boot - ok.size and defined[key][j]:  # undefined on the data itself: warned elsewhere
                what = "not reported" if not complete[j] else "interval uses the rest"
                lost[j].append(f"{key} in {n_boot - ok.size} ({what})")
        out[key] = {"ci": ci, "n_valid": n_valid, "complete": complete}
    for j in range(f):
        if lost[j] and n_boot > 0:
            name = findings[j] if findings is not None else f"finding {j}"
            warnings.warn(
                f"{name}: of {n_boot} bootstrap resamples, undefined: " + ", ".join(lost[j]),
                UndefinedMetricWarning,
                stacklevel=2,
            )
    return out


def _defined_on_full_data(y_true: Any, y_score: Any, mask: Any, thresholds: Any) -> dict[str, np.ndarray]:
    """{key: (f,) bool}: is the metric defined on the data itself (not resampled)?"""
    y, s, m = as_matrices(y_true, y_score, mask)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        pred = s >= np.where(np.isfinite(thr), thr, np.inf)[None, :]
    pos, neg = (m & y).sum(axis=0), (m & ~y).sum(axis=0)
    called, fin = (m & pred).sum(axis=0), np.isfinite(thr)
    tp = (m & pred & y).sum(axis=0)
    return {
        "auroc": (pos > 0) & (neg > 0),
        "sensitivity": fin & (pos > 0),
        "specificity": fin & (neg > 0),
        "ppv": fin & (called > 0),
        "npv": fin & (m.sum(axis=0) - called > 0),
        "f1": fin & (called + pos - tp > 0),
    }


def bootstrap_metrics(
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    *,
    groups: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = None,
    findings: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Percentile bootstrap intervals {"auroc", "sensitivity", "specificity", "ppv", "npv", "f1": (f, 2)}.

    The intervals of :func:`bootstrap_intervals` without their counts (NaN where fewer than half of
    the resamples define the metric); it warns the same way."""
    full = bootstrap_intervals(
        y_true,
        y_score,
        mask,
        thresholds,
        groups=groups,
        n_boot=n_boot,
        level=level,
        seed=seed,
        chunk_size=chunk_size,
        findings=findings,
    )
    return {k: v["ci"] for k, v in full.items()}
