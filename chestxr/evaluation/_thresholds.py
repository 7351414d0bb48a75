"""Operating points: per-finding decision thresholds fitted on a calibration split, with guarantees.

Rules are specs parsed by :func:`chestxr.evaluation.parse_method` (table there). A sample
is positive when ``score >= threshold``; candidates are the distinct calibration scores plus one
finite value above all of them (call nothing positive).

Guaranteed rules (``sensitivity:X``, ``specificity:X``, ``ppv:X``, ``npv:X``) pick the threshold
by fixed-sequence testing (Learn-then-Test, Angelopoulos et al. 2021): candidates are walked from
the safe end (for sensitivity: the lowest threshold, where every positive is called) towards the
other, each tested with the one-sided Clopper-Pearson lower bound at ``confidence``; the walk
stops at the first candidate whose bound is < X and the last one that passed is chosen, which is
the best one on the other axis (for sensitivity: the highest threshold, i.e. best specificity).

* For sensitivity (and specificity) this is exact: the chosen threshold is the k-th highest
  positive score, whose true sensitivity is Beta(k, n - k + 1) distributed, and the bound is that
  distribution's (1 - confidence) quantile; so P(true sensitivity >= X) >= confidence for i.i.d.
  positives with continuous scores (tests/test_guarantees.py checks this against the binormal model).
* For PPV / NPV the denominator (calls) depends on the threshold; candidates calling fewer than
  ``n_needed`` samples are skipped (they cannot pass), the rest are tested in a fixed order given
  the scores, so the guarantee holds conditionally on the calibration scores (images like these).

When no candidate passes because the counts are too few (``n_pos < n_needed`` for sensitivity /
PPV, ``n_neg < n_needed`` for specificity / NPV, where n_needed = ceil(log(1-c) / log(X)), 29 for
0.9 at 95 %) the finding gets NO threshold (NaN), ``status = "insufficient_data"`` and a one-line
:class:`InsufficientDataWarning`. ``youden`` / ``f1`` / ``cost`` / ``fixed`` / ``...@point`` report
their achieved values with exact intervals and ``status = "not_a_guarantee"``.

With several images per patient pass ``groups``: bounds and intervals use effective counts
(:func:`chestxr.evaluation.effective_counts`). Youden / F1 / cost compare integer counts,
so ties are exact and the highest tied threshold wins.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence, cast

import numpy as np

from chestxr.core import CalibrationError
from chestxr.evaluation._intervals import confusion_intervals, effective_counts, lower_bound, n_needed
from chestxr.evaluation._methods import TARGETED, Method, parse_method
from chestxr.evaluation._metrics import UndefinedMetricWarning, as_matrices
from chestxr.evaluation._operating_point import Guarantee, OperatingPoint

_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")


class InsufficientDataWarning(UndefinedMetricWarning):
    """A guaranteed operating point was refused: too few calibration samples for the bound."""


def fit_threshold(
    y_true: Any,
    y_score: Any,
    method: str | Method,
    *,
    finding: str = "finding",
    confidence: float = 0.95,
    groups: Any = None,
    level: float = 0.95,
) -> OperatingPoint:
    """Fit one finding's operating point. y_true, y_score, groups: (n_samples,), masked entries removed.

    confidence: of the one-sided bound behind a guaranteed rule; level: of the two-sided exact
    intervals reported beside every rate. Warns (InsufficientDataWarning) when a guarantee is
    refused for too few samples, UndefinedMetricWarning when a threshold is undefined otherwise."""
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
    m = parse_method(method)
    y = np.asarray(y_true, dtype=np.float64) >= 0.5
    s = np.asarray(y_score, dtype=np.float64)
    g = None if groups is None else np.asarray(groups).reshape(-1)
    n_pos = int(y.sum())
    one_class = n_pos == 0 or n_pos == y.size
    lb, need, note = math.nan, None, ""
    if m.kind == "fixed":
        thr, status = float(m.value if m.value is not None else math.nan), "not_a_guarantee"
        if one_class:
            note = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
            warnings.warn(f"{finding}: {note}: rates at the fixed threshold are undefined", UndefinedMetricWarning, 3)
    elif m.kind in TARGETED and m.guarantee:
        thr, status, lb, need, note = _guaranteed_threshold(m, y, s, g, confidence)
        if status == "insufficient_data":
            warnings.warn(f"{finding}: no threshold: {note} (status insufficient_data)", InsufficientDataWarning, 3)
        elif status == "unreachable":
            warnings.warn(f"{finding}: no threshold: {note} (status unreachable)", UndefinedMetricWarning, 3)
    elif one_class:
        thr, status = math.nan, "undefined"
        note = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
        warnings.warn(f"{finding}: threshold for {m} undefined: {note}; set to NaN", UndefinedMetricWarning, 3)
    else:
        thr, note = _point_threshold(m, y, s)
        status = "not_a_guarantee" if math.isfinite(thr) else "undefined"
        if note:
            warnings.warn(f"{finding}: threshold for {m} undefined: {note}; set to NaN", UndefinedMetricWarning, 3)
    return _record(finding, m, thr, y, s, g, status=status, lb=lb, need=need, note=note, conf=confidence, level=level)


def _record(
    finding: str,
    m: Method,
    thr: float,
    y: np.ndarray,
    s: np.ndarray,
    g: np.ndarray | None,
    *,
    status: str,
    lb: float,
    need: int | None,
    note: str,
    conf: float,
    level: float,
) -> OperatingPoint:
    n, n_pos = int(y.size), int(y.sum())
    rec: dict[str, Any] = {k: math.nan for k in ("tp", "fp", "tn", "fn", "f1", *_RATES)}
    rec.update({f"{k}_ci": [math.nan, math.nan] for k in _RATES})
    if math.isfinite(thr):
        pred = s >= thr
        tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
        fn, tn = n_pos - tp, n - n_pos - fp
        rec.update(tp=tp, fp=fp, tn=tn, fn=fn, f1=(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else math.nan)
        ci = confusion_intervals(y, pred, g, level=level)
        rec.update({k: ci[k] for k in _RATES}, **{f"{k}_ci": ci[f"{k}_ci"] for k in _RATES})
        if m.kind in TARGETED and not m.guarantee:  # the bound the point rule happens to have, for information
            x_eff, n_eff, _ = _target_counts(m.kind, y, pred, g)
            lb = lower_bound(x_eff, n_eff, conf) if n_eff > 0 else math.nan
    target = float(m.target) if m.target is not None else math.nan
    guarantee = None
    if need is not None:  # a guaranteed rule was asked for: its record, whatever the outcome
        guarantee = Guarantee(
            metric=m.kind,
            target=target,
            level=float(conf),
            status=status,
            lower_bound=lb if math.isfinite(lb) else None,
            n_pos=n_pos,
            n_needed=need,
        )
    return OperatingPoint(
        finding=finding,
        method=str(m),
        threshold=thr,
        n_pos=n_pos,
        n_neg=n - n_pos,
        prevalence=n_pos / n if n else math.nan,
        status=status,
        target=target,
        confidence=float(conf),
        lower_bound=lb,
        level=float(level),
        note=note,
        guarantee=guarantee,
        **rec,
    )


def _target_counts(kind: str, y: np.ndarray, pred: np.ndarray, g: np.ndarray | None) -> tuple[float, float, float]:
    rows, ok = {"sensitivity": (y, pred), "specificity": (~y, ~pred), "ppv": (pred, y), "npv": (~pred, ~y)}[kind]
    return effective_counts(ok[rows], None if g is None else g[rows])


def resolve_methods(method: str | Sequence[str] | Mapping[str, str], findings: Sequence[str]) -> list[Method]:
    """One parsed Method per finding from a single spec, a list (one per finding) or a dict
    finding -> spec whose "*" (or "default") key covers the findings it does not name."""
    names = list(findings)
    if isinstance(method, (str, Method)):
        return [parse_method(method)] * len(names)
    if isinstance(method, Mapping):
        default = method.get("*", method.get("default"))
        unknown = set(method) - set(names) - {"*", "default"}
        if unknown:
            raise CalibrationError(f"threshold methods given for unknown findings {sorted(unknown)}; known: {names}")
        missing = [n for n in names if n not in method and default is None]
        if missing:
            raise CalibrationError(f"no threshold method for {missing}; add them or a '*' default")
        return [parse_method(method[n] if n in method else cast(str, default)) for n in names]
    specs = list(method)
    if len(specs) != len(names):
        raise CalibrationError(f"{len(specs)} threshold methods given for {len(names)} findings")
    return [parse_method(sp) for sp in specs]


def fit_thresholds(
    y_true: Any,
    y_score: Any,
    mask: Any = None,
    method: str | Sequence[str] | Mapping[str, str] = "youden",
    *,
    confidence: float = 0.95,
    findings: Sequence[str] | None = None,
    groups: Any = None,
    level: float = 0.95,
) -> list[OperatingPoint]:
    """Fit one operating point per finding on calibration data.

    y_true (n_samples, n_findings) 0/1 (binarised at >= 0.5), y_score (n_samples, n_findings)
    scores, mask (n_samples, n_findings) bool or None (True = label known), groups (n_samples,)
    patient ids or None. method: one spec for all, a list with one per finding, or a dict finding
    -> spec (key "*" or "default" for the rest; needs ``findings``). confidence: of the guarantee.
    Returns one :class:`~chestxr.evaluation.OperatingPoint` per finding (``.threshold`` NaN when refused, ``.status``,
    ``.lower_bound``)."""
    try:
        y, s, m = as_matrices(y_true, y_score, mask)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc
    f = y.shape[1]
    if findings is None:
        if isinstance(method, Mapping):
            raise CalibrationError("a per-finding method dict needs the finding names (findings=...)")
        findings = [str(j) for j in range(f)]
    if len(findings) != f:
        raise CalibrationError(f"{len(findings)} finding names for {f} score columns")
    g = None if groups is None else np.asarray(groups).reshape(-1)
    if g is not None and g.size != y.shape[0]:
        raise CalibrationError(f"groups must have one patient id per row ({y.shape[0]}), got {g.size}")
    methods = resolve_methods(method, findings)
    return [
        fit_threshold(
            y[m[:, j], j],
            s[m[:, j], j],
            methods[j],
            finding=str(findings[j]),
            confidence=confidence,
            groups=None if g is None else g[m[:, j]],
            level=level,
        )
        for j in range(f)
    ]


# ----------------------------------------------------------------------------- choosing a threshold
# Arrays: y (n,) bool labels, s (n,) float scores, g (n,) patient ids or None; integer counts at every candidate.


def _candidates(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Integer counts at every candidate threshold, highest first.

    Index 0 is a finite threshold above every score (calls nothing), then the distinct scores in
    descending order. Returns thr (k,), tp (k,), fp (k,) int64 with calls = score >= thr."""
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    last = np.flatnonzero(np.append(ss[1:] != ss[:-1], True))  # last index of each distinct value
    tp_cum = np.cumsum(yy, dtype=np.int64)
    top = float(np.nextafter(ss[0], np.inf)) if ss.size else 0.0
    return {
        "thr": np.concatenate([[top], ss[last]]),
        "tp": np.concatenate([[0], tp_cum[last]]),
        "fp": np.concatenate([[0], (last + 1) - tp_cum[last]]),
    }


def _cp_lower(x: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Vectorised one-sided Clopper-Pearson lower bound; 0 at x = 0, NaN at n = 0."""
    from scipy.stats import beta

    x, n = np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lb = beta.ppf(1.0 - confidence, np.maximum(x, 1e-300), n - x + 1.0)
    return np.where(n <= 0, np.nan, np.where(x <= 0, 0.0, lb))


def _rate_counts(kind: str, c: dict[str, np.ndarray], n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """(successes, denominator) per candidate for the rule's metric."""
    tp, fp = c["tp"], c["fp"]
    if kind == "sensitivity":
        return tp, np.full(tp.shape, n_pos)
    if kind == "specificity":
        return n_neg - fp, np.full(tp.shape, n_neg)
    if kind == "ppv":
        return tp, tp + fp
    tn, fn = n_neg - fp, n_pos - tp  # npv
    return tn, tn + fn


def _clustered_lb(kind: str, thr: float, y: np.ndarray, s: np.ndarray, g: np.ndarray, conf: float) -> float:
    pred = s >= thr
    rows, ok = {
        "sensitivity": (y, pred),
        "specificity": (~y, ~pred),
        "ppv": (pred, y),
        "npv": (~pred, ~y),
    }[kind]
    x_eff, n_eff, _ = effective_counts(ok[rows], g[rows])
    return lower_bound(x_eff, n_eff, conf) if n_eff > 0 else math.nan


def _guaranteed_threshold(
    m: Method, y: np.ndarray, s: np.ndarray, g: np.ndarray | None, conf: float
) -> tuple[float, str, float, int, str]:
    """(threshold, status, lower bound, n_needed, note) by fixed-sequence testing (module docstring)."""
    if m.target is None:
        raise CalibrationError(f"{m.kind} rule without a target value")
    target = float(m.target)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    need = n_needed(target, conf)
    have, cls = (n_pos, "positives") if m.kind in ("sensitivity", "ppv") else (n_neg, "negatives")
    level = f"{m.kind} >= {m.target:g} at {conf:.0%} confidence"
    what = "with no misses" if m.kind in ("sensitivity", "specificity") else "all correctly called"
    if have < need:
        return math.nan, "insufficient_data", math.nan, need, f"{level} needs at least {need} {cls} {what}; has {have}"
    clustered = g is not None and np.unique(g.astype(str)).size < g.size
    if g is not None and clustered:  # several images per patient: the patients of that class bound the count
        rows = y if m.kind in ("sensitivity", "ppv") else ~y
        n_pat = int(np.unique(g[rows].astype(str)).size)
        if n_pat < need:
            note = f"{level} needs at least {need} {cls} {what}; has {have} images from {n_pat} patients"
            return math.nan, "insufficient_data", math.nan, need, note + " (images of one patient are not independent)"
    c = _candidates(y, s)
    x, n = _rate_counts(m.kind, c, n_pos, n_neg)
    lb = _cp_lower(x, n, conf)
    k = c["thr"].size
    # sensitivity / NPV: walk up from the lowest threshold; specificity / PPV: down from "call nothing"
    order = range(k - 1, -1, -1) if m.kind in ("sensitivity", "npv") else range(k)
    best, best_lb = None, math.nan
    for i in order:
        if n[i] < need:  # cannot pass whatever its count: skipped, decided by the scores alone
            continue
        if not lb[i] >= target - 1e-12:
            break
        b = _clustered_lb(m.kind, float(c["thr"][i]), y, s, g, conf) if g is not None and clustered else float(lb[i])
        if not b >= target - 1e-12:
            break
        best, best_lb = i, b
    if best is None:
        return math.nan, "unreachable", math.nan, need, f"no threshold reaches {level}"
    return float(c["thr"][best]), "guaranteed", best_lb, need, ""


def _point_threshold(m: Method, y: np.ndarray, s: np.ndarray) -> tuple[float, str]:
    """(threshold, reason it is NaN or "") for the point-estimate rules, with both classes present."""
    c = _candidates(y, s)
    thr, tp, fp = c["thr"], c["tp"], c["fp"]
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    fn = n_pos - tp
    if m.kind == "youden":  # J * n_pos * n_neg = tp * n_neg - fp * n_pos: exact integers, first = highest
        return float(thr[1 + int(np.argmax((tp * n_neg - fp * n_pos)[1:]))]), ""
    if m.kind == "f1":  # maximise 2tp / (2tp + fp + fn): compare fractions by cross-multiplication
        best = 1
        for i in range(2, thr.size):
            a, b = 2 * tp[i], 2 * tp[i] + fp[i] + fn[i]
            a0, b0 = 2 * tp[best], 2 * tp[best] + fp[best] + fn[best]
            if a * b0 > a0 * b:
                best = i
        return float(thr[best]), ""
    if m.kind == "cost":
        cost = m.cost_fp * fp + m.cost_fn * fn
        best = int(np.argmin(cost))
        return float(thr[best]), ""
    x, n = _rate_counts(m.kind, c, n_pos, n_neg)
    target = float(m.target) if m.target is not None else math.nan  # parse_method sets it for these kinds
    ok = np.flatnonzero((n > 0) & (x >= (target - 1e-12) * n))
    if m.kind == "sensitivity":
        ok = ok[ok > 0]  # the old rule never used "call nothing"
    if not ok.size:
        return (
            math.nan,
            f"no threshold reaches {m.kind.upper() if m.kind in ('ppv', 'npv') else m.kind} >= {m.target:g}",
        )
    # sensitivity / NPV: the highest threshold meeting X; specificity / PPV: the lowest
    return float(thr[ok[0]] if m.kind in ("sensitivity", "npv") else thr[ok[-1]]), ""
