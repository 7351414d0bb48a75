"""Operating points: per-finding decision thresholds fitted on a validation split.

A method is a short spec (``parse_method``):

=====================  ==========================================================================
``youden``             maximise sensitivity + specificity - 1 (Youden's J) over the ROC curve
``sensitivity:X``      the HIGHEST threshold whose sensitivity >= X (the most specific such point)
``specificity:X``      the LOWEST threshold whose specificity >= X (the most sensitive such point)
``f1``                 maximise F1 (the PR curve's best point)
``ppv:X``              the LOWEST threshold whose PPV >= X
``cost:C_FP:C_FN``     minimise C_FP * FP + C_FN * FN on the validation split (so at its prevalence)
``fixed:T``            T, whatever the data
=====================  ==========================================================================

Candidates are the distinct validation scores (sklearn ``roc_curve`` with
``drop_intermediate=False``, its infinite first threshold dropped); a sample is positive when
``score >= threshold``. Where several candidates tie on the criterion the highest threshold wins.
``specificity:1`` with a negative at the top score, and ``cost`` when calling nothing positive is
cheapest, use the next float above the highest score (finite: never sklearn's inf). A finding with
one class only (or, for ``ppv:X``, no point reaching X) gets threshold NaN and a warning.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from chestxr.core.errors import CalibrationError
from chestxr.evaluation.metrics import UndefinedMetricWarning, _matrices, binary_metrics_at

ALLOWED_FORMS = (
    '"youden", "f1", "sensitivity:X", "specificity:X", "ppv:X" (X in [0, 1]), '
    '"cost:C_FP:C_FN" (non-negative costs, not both 0, e.g. "cost:1:5"), "fixed:T"'
)
_TARGETED = ("sensitivity", "specificity", "ppv")


@dataclass(frozen=True)
class Method:
    """A parsed operating-point rule. ``target`` for sensitivity/specificity/ppv, ``value`` for fixed,
    ``cost_fp``/``cost_fn`` for cost. ``str(method)`` gives the canonical spec."""

    kind: str
    target: float | None = None
    value: float | None = None
    cost_fp: float | None = None
    cost_fn: float | None = None

    def __str__(self) -> str:
        if self.kind in _TARGETED:
            return f"{self.kind}:{self.target:g}"
        if self.kind == "cost":
            return f"cost:{self.cost_fp:g}:{self.cost_fn:g}"
        if self.kind == "fixed":
            return f"fixed:{self.value:g}"
        return self.kind


def parse_method(spec: str) -> Method:
    """Parse an operating-point spec such as "youden", "sensitivity:0.9" or "cost:1:5".

    Raises CalibrationError naming the allowed forms when the spec is not one of them."""
    if isinstance(spec, Method):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise CalibrationError(f"threshold method {spec!r} is not a spec; allowed: {ALLOWED_FORMS}")
    kind, *args = [p.strip() for p in spec.strip().split(":")]
    kind = kind.lower()
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise CalibrationError(f"threshold method {spec!r}: {args} are not numbers; allowed: {ALLOWED_FORMS}") from None
    if any(not math.isfinite(x) for x in nums):
        raise CalibrationError(f"threshold method {spec!r}: values must be finite; allowed: {ALLOWED_FORMS}")
    if kind in ("youden", "f1") and not nums:
        return Method(kind)
    if kind in _TARGETED and len(nums) == 1 and 0.0 <= nums[0] <= 1.0:
        return Method(kind, target=nums[0])
    if kind == "cost" and len(nums) == 2 and min(nums) >= 0 and max(nums) > 0:
        return Method("cost", cost_fp=nums[0], cost_fn=nums[1])
    if kind == "fixed" and len(nums) == 1:
        return Method("fixed", value=nums[0])
    raise CalibrationError(f"threshold method {spec!r} is not valid; allowed: {ALLOWED_FORMS}")


@dataclass
class ThresholdFit:
    """One finding's fitted operating point and its metrics on the calibration data."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes None; counts become ints where defined)."""
        out: dict[str, Any] = {}
        for k, v in dataclasses.asdict(self).items():
            if isinstance(v, (float, np.floating)):
                v = float(v)
                v = None if not math.isfinite(v) else (int(v) if k in ("tp", "fp", "tn", "fn") else v)
            elif isinstance(v, np.integer):
                v = int(v)
            out[k] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ThresholdFit":
        """Inverse of :meth:`to_dict` (None -> NaN); extra keys (e.g. intervals) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(d)
        if missing:
            raise CalibrationError(f"threshold record lacks {sorted(missing)}")
        vals = {k: (math.nan if d[k] is None else d[k]) for k in names}
        return cls(**vals)


def _candidates(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Counts at every distinct score (descending) from sklearn's ROC curve, inf threshold dropped."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    keep = np.isfinite(thr)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    tp, fp = np.rint(tpr[keep] * n_pos), np.rint(fpr[keep] * n_neg)
    return {
        "thr": thr[keep],
        "tp": tp,
        "fp": fp,
        "fn": n_pos - tp,
        "tn": n_neg - fp,
        "sens": tpr[keep],
        "spec": 1.0 - fpr[keep],
    }


def _above_all(s: np.ndarray) -> float:
    """A finite threshold above every score: nothing is called positive."""
    return float(np.nextafter(s.max(), np.inf))


def _select(method: Method, y: np.ndarray, s: np.ndarray) -> tuple[float, str | None]:
    """(threshold, reason it is NaN or None) for one finding with both classes present."""
    c = _candidates(y, s)
    thr, eps = c["thr"], 1e-12
    if method.kind == "youden":
        return float(thr[np.argmax(c["sens"] - (1.0 - c["spec"]))]), None
    if method.kind == "sensitivity":  # sensitivity rises as the threshold falls: first hit is highest
        return float(thr[np.argmax(c["sens"] >= method.target - eps)]), None
    if method.kind == "specificity":
        ok = np.flatnonzero(c["spec"] >= method.target - eps)
        return (float(thr[ok[-1]]) if ok.size else _above_all(s)), None
    if method.kind == "f1":
        f1 = 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])
        return float(thr[np.argmax(f1)]), None
    if method.kind == "ppv":
        ok = np.flatnonzero(c["tp"] / (c["tp"] + c["fp"]) >= method.target - eps)
        if not ok.size:
            return math.nan, f"no threshold reaches PPV >= {method.target:g}"
        return float(thr[ok[-1]]), None
    if method.kind == "cost":  # candidate 0: call nothing positive (all positives missed)
        cost = np.concatenate([[method.cost_fn * y.sum()], method.cost_fp * c["fp"] + method.cost_fn * c["fn"]])
        best = int(np.argmin(cost))
        return (_above_all(s) if best == 0 else float(thr[best - 1])), None
    raise CalibrationError(f"unknown method kind {method.kind!r}")  # pragma: no cover


def fit_threshold(y_true: Any, y_score: Any, method: str | Method, *, finding: str = "finding") -> ThresholdFit:
    """Fit one finding's threshold. y_true, y_score: (n_samples,) with masked entries already removed."""
    m = parse_method(method)
    y = np.asarray(y_true, dtype=np.float64) >= 0.5
    s = np.asarray(y_score, dtype=np.float64)
    n_pos = int(y.sum())
    one_class = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
    if m.kind == "fixed":
        thr, why = float(m.value), None
        if n_pos == 0 or n_pos == y.size:
            warnings.warn(
                f"{finding}: {one_class}: sensitivity/specificity at the fixed threshold undefined",
                UndefinedMetricWarning,
                stacklevel=3,
            )
    elif n_pos == 0 or n_pos == y.size:
        thr, why = math.nan, one_class
    else:
        thr, why = _select(m, y, s)
    if why:
        warnings.warn(
            f"{finding}: threshold for {m} undefined: {why}; set to NaN", UndefinedMetricWarning, stacklevel=3
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        r = binary_metrics_at(y.astype(np.float64), s, thr)
    return ThresholdFit(
        finding=finding,
        method=str(m),
        threshold=thr,
        sensitivity=r["sensitivity"],
        specificity=r["specificity"],
        ppv=r["ppv"],
        npv=r["npv"],
        f1=r["f1"],
        tp=r["tp"],
        fp=r["fp"],
        tn=r["tn"],
        fn=r["fn"],
        n_pos=r["n_pos"],
        n_neg=r["n_neg"],
        prevalence=r["prevalence"],
    )


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
        return [parse_method(method.get(n, default)) for n in names]
    specs = list(method)
    if len(specs) != len(names):
        raise CalibrationError(f"{len(specs)} threshold methods given for {len(names)} findings")
    return [parse_method(sp) for sp in specs]


def fit_thresholds(
    y_true: Any,
    y_score: Any,
    mask: Any,
    method: str | Sequence[str] | Mapping[str, str],
    *,
    findings: Sequence[str] | None = None,
) -> list[ThresholdFit]:
    """Fit one threshold per finding on validation data.

    y_true (n_samples, n_findings) 0/1 (soft labels binarised at >= 0.5), y_score (n_samples,
    n_findings) probabilities, mask (n_samples, n_findings) bool or None (True = label known).
    method: one spec for all, a list with one spec per finding, or a dict finding -> spec (key "*"
    or "default" for the rest; needs ``findings``). findings: names (default "0", "1", ...).
    """
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
    methods = resolve_methods(method, findings)
    return [fit_threshold(y[m[:, j], j], s[m[:, j], j], methods[j], finding=str(findings[j])) for j in range(f)]


def apply_thresholds(y_score: Any, thresholds: Any) -> np.ndarray:
    """0/1 calls (n_samples, n_findings) bool: score >= threshold; a NaN threshold calls nothing."""
    s = np.asarray(y_score, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != t.size:
        raise CalibrationError(f"{t.size} thresholds for scores of shape {s.shape}")
    return s >= np.where(np.isfinite(t), t, np.inf)[None, :]
