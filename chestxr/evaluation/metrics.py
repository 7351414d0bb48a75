"""Per-finding metrics: AUROC, AP, sensitivity/specificity/PPV/NPV/F1 at a threshold, DeLong and
(patient-level) bootstrap intervals, calibration error, and ``evaluate_predictions``, the one call
the report uses.

Conventions (shared with calibration.py): ``y_true`` (n_samples, n_findings) 0/1 (soft labels are
binarised at >= 0.5), ``y_score`` (n_samples, n_findings) probabilities, ``mask`` (n_samples,
n_findings) bool, True = label known (masked entries are left out of everything), ``groups``
(n_samples,) patient ids. A sample is called positive when ``score >= threshold``. Undefined
metrics are NaN; a finding with one class only also warns with :class:`UndefinedMetricWarning`.

The bootstrap is vectorised (see :func:`bootstrap_replicates`): a resample is a vector of integer
multiplicities per patient; for each finding the scores are sorted once and the AUROC of a whole
chunk of resamples is a weighted Mann-Whitney statistic from cumulative sums, the confusion counts
a matrix-vector product. Integer weights make the float32 sums exact.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from chestxr.core.errors import ChestXRError

METRIC_NAMES = ("sensitivity", "specificity", "ppv", "npv", "f1")
BOOT_KEYS = ("auroc",) + METRIC_NAMES


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data given (e.g. one class only) and was set to NaN."""


class MetricInputError(ChestXRError, ValueError):
    """Arrays given to a metric have the wrong shape or hold NaN/inf where numbers are needed."""


# ----------------------------------------------------------------------------- input checks
def _binary_pair(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """(y bool (n,), s float64 (n,)) from 1-D inputs; labels binarised at >= 0.5."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise MetricInputError(f"y_true and y_score must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise MetricInputError("y_true/y_score hold NaN or inf; mask unknown labels instead")
    return y >= 0.5, s


def _matrices(y_true: Any, y_score: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y bool (n, f), S float64 (n, f), M bool (n, f)); 1-D inputs become one finding.

    Masked entries may hold anything (NaN included); they are zeroed and never read."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    s = s[:, None] if s.ndim == 1 else s
    if y.ndim != 2 or s.shape != y.shape:
        raise MetricInputError(f"y_true and y_score must both be (n_samples, n_findings), got {y.shape} and {s.shape}")
    if mask is None:
        m = np.ones(y.shape, dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)
        m = m[:, None] if m.ndim == 1 else m
        if m.shape != y.shape:
            raise MetricInputError(f"mask shape {m.shape} does not match y_true {y.shape}")
    bad = m & ~(np.isfinite(y) & np.isfinite(s))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise MetricInputError(f"{int(bad.sum())} unmasked entries hold NaN/inf (first: row {i}, finding {j})")
    return np.where(m, y, 0.0) >= 0.5, np.where(m, s, 0.0), m


def _one_class_warning(n_pos: int, n_neg: int, what: str, name: str | None, stacklevel: int = 3) -> None:
    where = f"{name}: " if name else ""
    warnings.warn(
        f"{where}{what} undefined with {n_pos} positive and {n_neg} negative samples; set to NaN",
        UndefinedMetricWarning,
        stacklevel=stacklevel,
    )


def _ratio(num: Any, den: Any) -> Any:
    """num / den, NaN where den == 0 (scalars or arrays)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def rates_from_counts(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, F1 from confusion counts (scalars or equal-shape arrays)."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


# ----------------------------------------------------------------------------- point metrics
def binary_metrics_at(
    y_true: Any, y_score: Any, threshold: float, *, name: str | None = None, warn: bool = True
) -> dict[str, Any]:
    """Confusion counts and rates at ``threshold`` (positive when score >= threshold).

    y_true, y_score: (n_samples,). Returns n, n_pos, n_neg, prevalence, tp, fp, tn, fn (NaN when
    the threshold is NaN), sensitivity, specificity, ppv, npv, f1, accuracy (NaN where undefined).
    """
    y, s = _binary_pair(y_true, y_score)
    n, n_pos = int(y.size), int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "prevalence": _ratio(n_pos, n)}
    if warn and (n_pos == 0 or n_pos == n):
        _one_class_warning(n_pos, n - n_pos, "sensitivity/specificity", name)
    if threshold is None or not math.isfinite(float(threshold)):
        out.update(tp=math.nan, fp=math.nan, tn=math.nan, fn=math.nan)
        out.update({k: math.nan for k in METRIC_NAMES}, accuracy=math.nan)
        return out
    pred = s >= float(threshold)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = n_pos - tp, n - n_pos - fp
    out.update(tp=tp, fp=fp, tn=tn, fn=fn, **rates_from_counts(tp, fp, tn, fn), accuracy=_ratio(tp + tn, n))
    return out


def auroc(y_true: Any, y_score: Any, *, name: str | None = None) -> float:
    """Area under the ROC curve of (n_samples,) labels and scores; NaN + warning with one class."""
    from sklearn.metrics import roc_auc_score

    y, s = _binary_pair(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        _one_class_warning(n_pos, y.size - n_pos, "AUROC", name)
        return math.nan
    return float(roc_auc_score(y, s))


def average_precision(y_true: Any, y_score: Any, *, name: str | None = None) -> float:
    """Average precision (area under the PR curve, sklearn's step rule); NaN + warning with one class."""
    from sklearn.metrics import average_precision_score

    y, s = _binary_pair(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        _one_class_warning(n_pos, y.size - n_pos, "average precision", name)
        return math.nan
    return float(average_precision_score(y, s))


def delong_ci(y_true: Any, y_score: Any, *, level: float = 0.95, name: str | None = None) -> tuple[float, float, float]:
    """(auc, lo, hi): AUROC with DeLong's normal-approximation interval, clipped to [0, 1].

    Fast DeLong (Sun & Xu 2014): midranks of the positives, the negatives and both pooled give the
    structural components V10 (per positive) and V01 (per negative) in O(n log n);
    var(AUC) = s2(V10)/m + s2(V01)/n. y_true, y_score: (n_samples,). The interval is NaN when a
    class has fewer than two samples (the AUC too when one class is missing, with a warning).
    """
    from scipy.stats import norm, rankdata

    y, s = _binary_pair(y_true, y_score)
    pos, neg = s[y], s[~y]
    m, k = pos.size, neg.size
    if m == 0 or k == 0:
        _one_class_warning(m, k, "AUROC", name)
        return math.nan, math.nan, math.nan
    tz = rankdata(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * k))
    if m < 2 or k < 2:
        return auc, math.nan, math.nan
    v10 = (tz[:m] - rankdata(pos)) / k  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m  # share of positives above each negative
    se = math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / k)
    z = float(norm.ppf(0.5 + level / 2.0))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def reliability_curve(y_true: Any, y_score: Any, *, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin_mid (n_bins,), frac_pos (n_bins,), count (n_bins,)) over equal-width bins of [0, 1].

    Bins are [k/n_bins, (k+1)/n_bins), the last one closed; frac_pos is NaN for empty bins.
    y_score must be probabilities in [0, 1].
    """
    y, s = _binary_pair(y_true, y_score)
    idx = _bin_index(s, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    frac = _ratio(np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins), count)
    mid = (np.arange(n_bins) + 0.5) / n_bins
    return mid, np.asarray(frac, dtype=np.float64).reshape(n_bins), count


def expected_calibration_error(y_true: Any, y_score: Any, *, n_bins: int = 10) -> float:
    """ECE = sum over equal-width bins of (bin count / n) * |fraction positive - mean score|.

    y_true, y_score: (n_samples,), scores in [0, 1]. NaN for empty input."""
    y, s = _binary_pair(y_true, y_score)
    if y.size == 0:
        return math.nan
    idx = _bin_index(s, n_bins)
    gap = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins) - np.bincount(
        idx, weights=s, minlength=n_bins
    )
    return float(np.abs(gap).sum() / y.size)


def _bin_index(s: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be >= 1, got {n_bins}")
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise MetricInputError(
            f"scores must be probabilities in [0, 1] (got {s.min():g}..{s.max():g}); apply a sigmoid"
        )
    return np.minimum((s * n_bins).astype(np.int64), n_bins - 1)


def multiclass_metrics(y_true: Any, y_score: Any) -> dict[str, Any]:
    """Accuracy, confusion matrix and per-class recall for mutually exclusive classes.

    y_true: (n_samples, n_classes) one-hot (argmax taken); y_score: (n_samples, n_classes);
    prediction = argmax of the scores. confusion_matrix[i][j] counts true class i predicted as j.
    per_class_recall is NaN for a class absent from y_true.
    """
    yt, ys = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    if yt.ndim != 2 or ys.shape != yt.shape:
        raise MetricInputError(f"y_true and y_score must both be (n_samples, n_classes), got {yt.shape} and {ys.shape}")
    if not np.isfinite(ys).all():
        raise MetricInputError("y_score holds NaN or inf")
    f = yt.shape[1]
    true, pred = yt.argmax(axis=1), ys.argmax(axis=1)
    cm = np.bincount(true * f + pred, minlength=f * f).reshape(f, f)
    recall = _ratio(np.diag(cm), cm.sum(axis=1))
    recall = np.atleast_1d(recall)
    return {
        "n": int(true.size),
        "accuracy": _ratio(int(np.trace(cm)), int(true.size)),
        "balanced_accuracy": _nanmean(recall),
        "confusion_matrix": cm.tolist(),
        "per_class_recall": [float(r) for r in recall],
    }


def _nanmean(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


# ----------------------------------------------------------------------------- bootstrap
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


class _FindingPlan:
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
        out = {"auroc": _ratio(num, p * nn)}
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
    y, s = _binary_pair(y_true, y_score)
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[0] != y.size:
        raise MetricInputError(f"weights must be (n_samples, B) = ({y.size}, B), got {w.shape}")
    return np.asarray(_FindingPlan(y, s, np.arange(y.size), math.nan, y.size).run(w)["auroc"])


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
    y, s, m = _matrices(y_true, y_score, mask)
    n, f = y.shape
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size != f:
        raise MetricInputError(f"thresholds must have one value per finding ({f}), got {thr.size}")
    g, n_groups = group_index(groups, n)
    out = {k: np.full((n_boot, f), np.nan) for k in BOOT_KEYS}
    if n_boot <= 0 or n == 0:
        return out
    plans = [_FindingPlan(y[m[:, j], j], s[m[:, j], j], g[m[:, j]], float(thr[j]), n_groups) for j in range(f)]
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

    y_true, y_score, mask: (n_samples, n_findings); thresholds: (n_findings,); groups: (n_samples,)
    patient ids -> patient-level (cluster) bootstrap. Resamples where a metric is undefined (e.g. no
    positive drawn) are left out of that interval; all undefined -> [NaN, NaN]. A finding whose
    AUROC is undefined in over 1% of resamples warns (its interval rests on fewer resamples).
    """
    reps = bootstrap_replicates(
        y_true, y_score, mask, thresholds, groups=groups, n_boot=n_boot, seed=seed, chunk_size=chunk_size
    )
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out = {}
    for key, r in reps.items():
        ci = np.full((r.shape[1], 2), np.nan)
        for j in range(r.shape[1]):
            ok = r[:, j][np.isfinite(r[:, j])]
            if ok.size:
                ci[j] = np.quantile(ok, q)
            if key == "auroc" and n_boot > 0 and 0.01 < 1.0 - ok.size / n_boot < 1.0:
                name = findings[j] if findings is not None else f"finding {j}"
                warnings.warn(
                    f"{name}: AUROC undefined (one class) in {n_boot - ok.size} of {n_boot} bootstrap "
                    "resamples; its interval uses the rest",
                    UndefinedMetricWarning,
                    stacklevel=2,
                )
        out[key] = ci
    return out


# ----------------------------------------------------------------------------- evaluation
def check_promise(achieved: Mapping[str, Any], promised: Mapping[str, Any]) -> dict[str, Any] | None:
    """Does the operating point promised at calibration hold on a new split?

    ``promised`` is a calibration record (thresholds.json): ``sensitivity``, ``specificity`` and
    optionally ``sensitivity_ci``/``specificity_ci`` = [lo, hi]. ``achieved`` is a finding record of
    :func:`evaluate_predictions`. For each promised metric with achieved point a, achieved interval
    [a_lo, a_hi] and promised point p with promised interval [p_lo, p_hi], the metric holds when

    * a >= p (met outright), or
    * a_hi >= p (the shortfall is within this split's sampling noise), or
    * a >= p_lo (the achieved value lies within the promise's own interval).

    The promise holds when every promised metric holds. A metric that cannot be measured on the new
    split (e.g. no positives: a is NaN) does not hold. None when nothing was promised.
    """
    result: dict[str, Any] = {}
    details, holds = [], True
    for key in ("sensitivity", "specificity"):
        p = _float(promised.get(key))
        result[key] = p
        if not math.isfinite(p):
            continue
        a = _float(achieved.get(key))
        a_lo, a_hi = _pair(achieved.get(f"{key}_ci"))
        p_lo, p_hi = _pair(promised.get(f"{key}_ci"))
        said = f"{key}: promised {p:.3f} (CI {p_lo:.3f}-{p_hi:.3f}), achieved {a:.3f} (CI {a_lo:.3f}-{a_hi:.3f})"
        eps = 1e-12
        if not math.isfinite(a):
            ok, why = False, "not measurable on this split"
        elif a >= p - eps:
            ok, why = True, "met"
        elif math.isfinite(a_hi) and a_hi >= p - eps:
            ok, why = True, "below but within this split's interval"
        elif math.isfinite(p_lo) and a >= p_lo - eps:
            ok, why = True, "below but within the promised interval"
        else:
            ok, why = False, "NOT HELD"
        holds &= ok
        details.append(f"{said}: {why}")
    if not details:
        return None
    result.update(holds=bool(holds), detail="; ".join(details))
    return result


def _float(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _pair(v: Any) -> tuple[float, float]:
    if v is None or len(v) != 2:
        return math.nan, math.nan
    return _float(v[0]), _float(v[1])


def evaluate_predictions(
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    findings: Sequence[str],
    *,
    groups: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    promised: Mapping[str, Mapping[str, Any]] | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Everything the report shows, JSON-able (NaN stays float NaN; io.to_jsonable writes null).

    y_true, y_score (probabilities), mask: (n_samples, n_findings); thresholds: (n_findings,);
    groups: (n_samples,) patient ids (patient-level bootstrap). Returns {"findings": {name: {n,
    n_pos, n_neg, prevalence, auroc, auroc_ci, auroc_delong_ci, ap, threshold, tp, fp, tn, fn,
    sensitivity(_ci), specificity(_ci), ppv(_ci), npv(_ci), f1(_ci), accuracy, ece, promise}},
    "macro": NaN-mean over findings, "micro": pooled over all unmasked entries, "n_images",
    "n_patients" (None without groups), "level", "n_boot"}. ``promised`` maps finding -> its
    calibration record; see :func:`check_promise` for when a promise holds. One-class findings
    warn once each (UndefinedMetricWarning) and get NaN.
    """
    y, s, m = _matrices(y_true, y_score, mask)
    n, f = y.shape
    findings = list(findings)
    if len(findings) != f:
        raise MetricInputError(f"{len(findings)} finding names for {f} score columns")
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size != f:
        raise MetricInputError(f"thresholds must have one value per finding ({f}), got {thr.size}")
    cis = bootstrap_metrics(y, s, m, thr, groups=groups, n_boot=n_boot, level=level, seed=seed, findings=findings)
    per: dict[str, Any] = {}
    for j, name in enumerate(findings):
        yj, sj = y[m[:, j], j], s[m[:, j], j]
        n_pos = int(yj.sum())
        if n_pos == 0 or n_pos == yj.size:
            _one_class_warning(n_pos, yj.size - n_pos, "AUROC/AP/sensitivity/specificity", name, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            rec = binary_metrics_at(yj, sj, float(thr[j]), warn=False)
            auc, d_lo, d_hi = delong_ci(yj, sj, level=level)
            rec.update(
                auroc=auc,
                auroc_ci=cis["auroc"][j].tolist(),
                auroc_delong_ci=[d_lo, d_hi],
                ap=average_precision(yj, sj),
                threshold=float(thr[j]),
            )
        for key in METRIC_NAMES:
            rec[f"{key}_ci"] = cis[key][j].tolist()
        rec["ece"] = expected_calibration_error(yj, sj, n_bins=n_bins)
        rec["promise"] = check_promise(rec, promised[name]) if promised and promised.get(name) else None
        per[name] = rec
    macro = {k: _nanmean([per[name][k] for name in findings]) for k in ("auroc", "ap") + METRIC_NAMES}
    return {
        "findings": per,
        "macro": macro,
        "micro": _micro(y, s, m, thr),
        "n_images": int(n),
        "n_patients": None if groups is None else group_index(groups, n)[1],
        "level": float(level),
        "n_boot": int(n_boot),
    }


def _micro(y: np.ndarray, s: np.ndarray, m: np.ndarray, thr: np.ndarray) -> dict[str, float]:
    """Metrics pooled over every unmasked (sample, finding) entry, each called at its own threshold;
    findings without a finite threshold are left out of the threshold metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out = {"auroc": auroc(y[m], s[m]), "ap": average_precision(y[m], s[m])}
    ok = m & np.isfinite(thr)[None, :]
    pred = s >= np.where(np.isfinite(thr), thr, np.inf)[None, :]
    tp, fp = int(np.sum(ok & pred & y)), int(np.sum(ok & pred & ~y))
    fn, tn = int(np.sum(ok & ~pred & y)), int(np.sum(ok & ~pred & ~y))
    out.update(rates_from_counts(tp, fp, tn, fn))
    return out
