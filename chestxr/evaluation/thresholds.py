"""Operating points: per-finding decision thresholds fitted on a calibration split, with guarantees.

Rules are specs parsed by :func:`chestxr.evaluation.methods.parse_method` (table there). A sample
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
(:func:`chestxr.evaluation.intervals.effective_counts`). Youden / F1 / cost compare integer counts,
so ties are exact and the highest tied threshold wins.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, cast

import numpy as np

from chestxr.core.errors import CalibrationError
from chestxr.evaluation.intervals import confusion_intervals, effective_counts, lower_bound
from chestxr.evaluation.methods import ALLOWED_FORMS, TARGETED, Method, parse_method
from chestxr.evaluation.metrics import UndefinedMetricWarning, _matrices
from chestxr.evaluation.selection import guaranteed_threshold, point_threshold

__all__ = [
    "ALLOWED_FORMS",
    "Method",
    "parse_method",
    "ThresholdFit",
    "InsufficientDataWarning",
    "fit_threshold",
    "fit_thresholds",
    "resolve_methods",
    "apply_thresholds",
    "STATUSES",
]

#: ``ThresholdFit.status`` values.
STATUSES = ("guaranteed", "not_a_guarantee", "insufficient_data", "unreachable", "undefined")
_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
_CORE: tuple[str, ...] = ("finding", "method", "threshold", "sensitivity", "specificity", "ppv", "npv", "f1")
_CORE += ("tp", "fp", "tn", "fn", "n_pos", "n_neg", "prevalence")


class InsufficientDataWarning(UndefinedMetricWarning):
    """A guaranteed operating point was refused: too few calibration samples for the bound."""


def _nan2() -> list[float]:
    return [math.nan, math.nan]


@dataclass
class ThresholdFit:
    """One finding's operating point and its metrics on the calibration data (a thresholds.json record).

    threshold: NaN when refused. status: one of STATUSES. guaranteed: True when ``lower_bound`` is a
    one-sided ``confidence`` lower bound >= ``target`` on the rule's metric. lower_bound: that bound
    at the chosen threshold (also given, as information, for ``@point`` rules; NaN otherwise).
    n_needed: samples of the relevant class needed for the guarantee (None for other rules).
    ``<rate>_ci``: two-sided exact intervals at ``level`` by ``interval`` (Clopper-Pearson)."""

    finding: str
    method: str
    threshold: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    f1: float
    tp: float
    fp: float
    tn: float
    fn: float
    n_pos: int
    n_neg: int
    prevalence: float
    status: str = "not_a_guarantee"
    guaranteed: bool = False
    target: float = math.nan
    confidence: float = 0.95
    lower_bound: float = math.nan
    n_needed: int | None = None
    accuracy: float = math.nan
    sensitivity_ci: list[float] = field(default_factory=_nan2)
    specificity_ci: list[float] = field(default_factory=_nan2)
    ppv_ci: list[float] = field(default_factory=_nan2)
    npv_ci: list[float] = field(default_factory=_nan2)
    accuracy_ci: list[float] = field(default_factory=_nan2)
    level: float = 0.95
    interval: str = "clopper-pearson"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes None; counts become ints where defined): the thresholds.json record.

        Flat keys as the fields, plus ``guarantee``: for a guaranteed rule (whatever its outcome)
        {method: "clopper-pearson", metric, target, level (= confidence), status, lower_bound,
        n_pos, n_needed} (read by the run contract's ThresholdRecord.guarantee), else None."""
        out: dict[str, Any] = {}
        for k, v in dataclasses.asdict(self).items():
            if isinstance(v, list):
                v = [None if not math.isfinite(float(x)) else float(x) for x in v]
            elif isinstance(v, (float, np.floating)):
                v = float(v)
                v = None if not math.isfinite(v) else (int(v) if k in ("tp", "fp", "tn", "fn") else v)
            elif isinstance(v, np.integer):
                v = int(v)
            out[k] = v
        out["guarantee"] = None
        if self.n_needed is not None:  # a guaranteed rule was asked for
            out["guarantee"] = {
                "method": "clopper-pearson",
                "metric": self.method.split(":", 1)[0],
                "target": out["target"],
                "level": out["confidence"],
                "status": self.status,
                "lower_bound": out["lower_bound"],
                "n_pos": out["n_pos"],
                "n_needed": self.n_needed,
            }
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ThresholdFit":
        """Inverse of :meth:`to_dict` (None -> NaN); older records without the guarantee fields
        load with their defaults; extra keys are ignored."""
        missing = set(_CORE) - set(d)
        if missing:
            raise CalibrationError(f"threshold record lacks {sorted(missing)}")
        vals: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name.endswith("_ci"):
                v = [math.nan if x is None else float(x) for x in (v or [None, None])]
            elif v is None and f.name not in ("n_needed",):
                v = math.nan
            vals[f.name] = v
        return cls(**vals)


def fit_threshold(
    y_true: Any,
    y_score: Any,
    method: str | Method,
    *,
    finding: str = "finding",
    confidence: float = 0.95,
    groups: Any = None,
    level: float = 0.95,
) -> ThresholdFit:
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
        thr, status, lb, need, note = guaranteed_threshold(m, y, s, g, confidence)
        if status == "insufficient_data":
            warnings.warn(f"{finding}: no threshold: {note} (status insufficient_data)", InsufficientDataWarning, 3)
        elif status == "unreachable":
            warnings.warn(f"{finding}: no threshold: {note} (status unreachable)", UndefinedMetricWarning, 3)
    elif one_class:
        thr, status = math.nan, "undefined"
        note = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
        warnings.warn(f"{finding}: threshold for {m} undefined: {note}; set to NaN", UndefinedMetricWarning, 3)
    else:
        thr, note = point_threshold(m, y, s)
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
) -> ThresholdFit:
    n, n_pos = int(y.size), int(y.sum())
    rec: dict[str, Any] = {k: math.nan for k in ("tp", "fp", "tn", "fn", "f1", *_RATES)}
    rec.update({f"{k}_ci": _nan2() for k in _RATES})
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
    return ThresholdFit(
        finding=finding,
        method=str(m),
        threshold=thr,
        n_pos=n_pos,
        n_neg=n - n_pos,
        prevalence=n_pos / n if n else math.nan,
        status=status,
        guaranteed=status == "guaranteed",
        target=float(m.target) if m.target is not None else math.nan,
        confidence=float(conf),
        lower_bound=lb,
        n_needed=need,
        level=float(level),
        note=note,
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
) -> list[ThresholdFit]:
    """Fit one operating point per finding on calibration data.

    y_true (n_samples, n_findings) 0/1 (binarised at >= 0.5), y_score (n_samples, n_findings)
    scores, mask (n_samples, n_findings) bool or None (True = label known), groups (n_samples,)
    patient ids or None. method: one spec for all, a list with one per finding, or a dict finding
    -> spec (key "*" or "default" for the rest; needs ``findings``). confidence: of the guarantee.
    Returns one :class:`ThresholdFit` per finding (``.threshold`` NaN when refused, ``.status``,
    ``.lower_bound``)."""
    try:
        y, s, m = _matrices(y_true, y_score, mask)
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


def apply_thresholds(y_score: Any, thresholds: Any) -> np.ndarray:
    """0/1 calls (n_samples, n_findings) bool: score >= threshold; a NaN threshold calls nothing."""
    s = np.asarray(y_score, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != t.size:
        raise CalibrationError(f"{t.size} thresholds for scores of shape {s.shape}")
    return s >= np.where(np.isfinite(t), t, np.inf)[None, :]
