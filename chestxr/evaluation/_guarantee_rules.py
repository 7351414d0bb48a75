"""Guaranteed operating points: the threshold for ``sensitivity:X``, ``specificity:X``, ``ppv:X``, ``npv:X``,
with the patient as the unit, jointly over a family of findings, PPV/NPV over a prevalence range.

Per finding (arrays y (n,) bool labels, s (n,) scores, g (n,) patient ids or None; a sample is called
positive when ``s >= threshold``):

* ``sensitivity:X``: thresholds are tested from the lowest up (fixed-sequence testing as in
  Learn-then-Test, Angelopoulos et al. 2021), each with the patient-level bound of
  chestxr/evaluation/_patient_bounds.py on the miss fractions; the statistic is the same at every
  threshold so the walk is "the highest threshold whose miss sum is <= the critical value". With one
  image per patient this is the exact rule of before (the threshold is a positive's order statistic).
  ``specificity:X`` mirrors it on the negatives (from the highest threshold down).
* ``ppv:X`` / ``npv:X`` need a deployment prevalence range [lo, hi]. PPV(pi) = pi Se / (pi Se + (1 - pi)
  (1 - Sp)) rises with pi, so the range's worst case is lo (NPV: hi), and PPV(lo) >= X is Se >= a (1 -
  Sp) with a = X (1 - lo) / (lo (1 - X)). The level is split in two (Bonferroni) between an upper bound on
  the false-positive rate and a lower bound on sensitivity. Candidates are indexed by j = 0, 1, 2, ...:
  t_j = the lowest threshold whose false-call sum over negative patients is <= j; its false-positive rate
  is bounded by U_j (level alpha/2 * w_j) and its sensitivity tested against a U_j (level alpha/2 * w_j),
  with w_j = 1 / ((j + 1)(j + 2)) (sum 1). For each j the two failure events concern fixed (unknown)
  thresholds of the true curves, so a union bound over j makes every candidate valid at once: the lowest
  passing threshold is chosen, with P(PPV(pi) < X for some pi in [lo, hi]) <= alpha. NPV mirrors it with
  the roles of the classes swapped. This replaces the Clopper-Pearson bound on the called images, which
  held only at the calibration split's own prevalence.

Family (``simultaneous``): the findings that carry a guaranteed rule share alpha = 1 - confidence
equally (Bonferroni; each finding's walk is a fixed sequence, so the family-wise error over every
finding and threshold is <= alpha: all guarantees hold together with probability >= confidence). A
finding whose rule cannot be met with its counts even alone at ``confidence`` (too few patients, decided
by the counts only, never by the scores) is left out of the family and refused; the others do not pay for
it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from chestxr.core import CalibrationError
from chestxr.evaluation._patient_bounds import (
    CONVEX,
    EXACT,
    METHOD_TEXT,
    PatientCounts,
    critical_failures,
    failure_rate_upper,
    patient_index,
    patients_needed,
    success_lower_bound,
)

GUARANTEED_KINDS = ("sensitivity", "specificity", "ppv", "npv")
_TOL = 1e-9


# ----------------------------------------------------------------------------------------------- family
@dataclass(frozen=True)
class RuleFamily:
    """Which findings share the confidence, and at what per-finding level.

    members: findings whose guaranteed rules are made jointly; excluded: guaranteed rules left out (the
    counts cannot support them even alone); confidence: the joint level (every member's guarantee holds
    together with at least this probability); simultaneous: False = each finding at ``confidence`` alone."""

    members: tuple[str, ...]
    confidence: float
    simultaneous: bool = True
    excluded: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def per_finding_level(self) -> float:
        """1 - (1 - confidence) / size when simultaneous (Bonferroni), else confidence."""
        if not self.simultaneous or self.size <= 1:
            return self.confidence
        return 1.0 - (1.0 - self.confidence) / self.size

    def describe(self) -> str:
        """One line: e.g. "95% jointly for 3 findings (Atelectasis, Effusion, Nodule; Bonferroni, 98.33% each)"."""
        if not self.members:
            return "no guaranteed rule"
        names = ", ".join(self.members)
        if not self.simultaneous:
            return f"{_pct(self.confidence)} for each finding separately ({names}); not jointly"
        if self.size == 1:
            return f"{_pct(self.confidence)} for the one guaranteed finding ({names})"
        return (
            f"{_pct(self.confidence)} jointly for {self.size} findings ({names}; Bonferroni, "
            f"{_pct(self.per_finding_level)} each)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "size": self.size,
            "confidence": self.confidence,
            "per_finding_level": self.per_finding_level,
            "simultaneous": self.simultaneous,
            "excluded": list(self.excluded),
            "allocation": "bonferroni" if self.simultaneous else "none",
            "text": self.describe(),
        }


def _pct(x: float) -> str:
    s = f"{100 * x:.2f}".rstrip("0").rstrip(".")
    return f"{s}%"


def allocate_family(
    candidates: Sequence[str], feasible_alone: Sequence[bool], confidence: float, simultaneous: bool = True
) -> RuleFamily:
    """The family from the findings with a guaranteed rule (``candidates``) and whether each could be met
    by its counts alone at ``confidence`` (:func:`feasibility`)."""
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
    members = tuple(c for c, ok in zip(candidates, feasible_alone) if ok)
    excluded = tuple(c for c, ok in zip(candidates, feasible_alone) if not ok)
    return RuleFamily(members, float(confidence), bool(simultaneous), excluded)


# ----------------------------------------------------------------------------------------- prevalence
def check_prevalence(prevalence: Any) -> tuple[float, float]:
    """(lo, hi) with 0 < lo <= hi < 1, or CalibrationError saying what is wrong."""
    try:
        lo, hi = (float(v) for v in prevalence)
    except (TypeError, ValueError):
        raise CalibrationError(f"prevalence must be a range (lo, hi), got {prevalence!r}") from None
    if not (0.0 < lo <= hi < 1.0):
        raise CalibrationError(f"prevalence range must satisfy 0 < lo <= hi < 1, got ({lo:g}, {hi:g})")
    return lo, hi


def ppv_at(prevalence: float, sensitivity: float, specificity: float) -> float:
    """PPV at ``prevalence`` from sensitivity and specificity (NaN when nothing would be called)."""
    num = prevalence * sensitivity
    den = num + (1.0 - prevalence) * (1.0 - specificity)
    return num / den if den > 0 else math.nan


def npv_at(prevalence: float, sensitivity: float, specificity: float) -> float:
    """NPV at ``prevalence`` from sensitivity and specificity (NaN when nothing would be called negative)."""
    num = (1.0 - prevalence) * specificity
    den = num + prevalence * (1.0 - sensitivity)
    return num / den if den > 0 else math.nan


def predictive_bound(kind: str, sens_lower: float, spec_lower: float, prevalence: tuple[float, float]) -> float:
    """The worst PPV (at lo) or NPV (at hi) over the range given lower bounds on sensitivity and specificity."""
    lo, hi = check_prevalence(prevalence)
    if kind == "ppv":
        return ppv_at(lo, sens_lower, spec_lower)
    if kind == "npv":
        return npv_at(hi, sens_lower, spec_lower)
    raise CalibrationError(f"predictive_bound is for ppv/npv, not {kind!r}")


def likelihood_ratio_needed(kind: str, target: float, prevalence: tuple[float, float]) -> float:
    """ppv: Se >= a (1 - Sp); npv: Sp >= b (1 - Se). a, b from the range's worst prevalence."""
    lo, hi = prevalence
    if target >= 1.0:
        return math.inf
    if kind == "ppv":
        return target * (1.0 - lo) / (lo * (1.0 - target))
    return target * hi / ((1.0 - hi) * (1.0 - target))


def other_class_minimum(kind: str, target: float, prevalence: tuple[float, float], level: float) -> int:
    """Patients of the other class (negatives for PPV, positives for NPV) without which no ``kind:target``
    guarantee over the range is possible: zero failures among k bound the other error rate by
    1 - (alpha / 4) ** (1 / k) (candidate level 0), which must be below 1 / ratio."""
    ratio = likelihood_ratio_needed(kind, target, prevalence)
    if not math.isfinite(ratio):
        return 2**31 - 1
    if ratio <= 1.0:  # X is below what calling everything gives at the worst prevalence
        return 1
    a0 = (1.0 - level) / 2.0 * level_weight(0)
    return math.floor(math.log(a0) / math.log1p(-1.0 / ratio)) + 1


def limiting_class_needed(kind: str, target: float, prevalence: tuple[float, float], level: float, k_other: int) -> int:
    """Patients of the limiting class (positives for PPV, negatives for NPV) needed with no failure, given
    k_other patients of the other class without failure; -1 when k_other is below the minimum."""
    ratio = likelihood_ratio_needed(kind, target, prevalence)
    a0 = (1.0 - level) / 2.0 * level_weight(0)
    if k_other <= 0 or not math.isfinite(ratio):
        return -1
    required = ratio * (1.0 - a0 ** (1.0 / k_other))
    return patients_needed(required, 1.0 - a0) if required < 1.0 else -1


def level_weight(j: int) -> float:
    """The share of alpha given to candidate level j of a PPV/NPV rule: 1 / ((j + 1)(j + 2)), summing to 1."""
    return 1.0 / ((j + 1) * (j + 2))


# ------------------------------------------------------------------------------------------ candidates
@dataclass
class _Curve:
    """Candidate thresholds (descending; index 0 calls nothing) with per-patient weighted sums.

    det: sum over positive patients of the detected fraction at each threshold (k_pos at the lowest);
    fcall: sum over negative patients of the falsely-called fraction; tp, fp: image counts."""

    thr: np.ndarray
    det: np.ndarray
    fcall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    k_pos: int
    k_neg: int
    single_pos: bool
    single_neg: bool
    n_pos: int
    n_neg: int

    def misses(self) -> np.ndarray:
        return self.k_pos - self.det

    def counts(self, cls: str, i: int) -> PatientCounts:
        """Per-patient successes at candidate i: detected (positives) or correctly not called (negatives)."""
        if cls == "pos":
            return PatientCounts(self.k_pos, self.n_pos, float(self.det[i]), int(self.tp[i]), self.single_pos)
        return PatientCounts(
            self.k_neg, self.n_neg, float(self.k_neg - self.fcall[i]), int(self.n_neg - self.fp[i]), self.single_neg
        )


def _class_weights(y: np.ndarray, g: np.ndarray | None) -> tuple[np.ndarray, int, int, bool, bool]:
    """Per image 1 / (its patient's images of the same class); patients and single-ness per class."""
    w = np.zeros(y.size, dtype=np.float64)
    out = []
    for cls in (y, ~y):
        idx = np.flatnonzero(cls)
        inv, k = patient_index(None if g is None else g[idx], idx.size)
        sizes = np.bincount(inv, minlength=k) if k else np.zeros(0, dtype=np.int64)
        w[idx] = 1.0 / sizes[inv] if k else 0.0
        out.append((k, bool(k == 0 or sizes.max() == 1)))
    return w, out[0][0], out[1][0], out[0][1], out[1][1]


def build_curve(y: Any, s: Any, g: Any = None) -> _Curve:
    """The candidates and per-patient sums for labels y (n,), scores s (n,), patient ids g (n,) or None."""
    y = np.asarray(y, dtype=bool).reshape(-1)
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    if s.size != y.size:
        raise CalibrationError(f"{y.size} labels for {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise CalibrationError("scores must be finite")
    gg = None if g is None else np.asarray(g).reshape(-1)
    w, k_pos, k_neg, single_pos, single_neg = _class_weights(y, gg)
    order = np.argsort(-s, kind="stable")
    ss, yy, ww = s[order], y[order], w[order]
    last = np.flatnonzero(np.append(ss[1:] != ss[:-1], True)) if ss.size else np.zeros(0, dtype=np.int64)
    top = float(np.nextafter(ss[0], np.inf)) if ss.size else 0.0
    det = np.cumsum(ww * yy)
    fcall = np.cumsum(ww * ~yy)
    tp = np.cumsum(yy, dtype=np.int64)
    return _Curve(
        thr=np.concatenate([[top], ss[last]]),
        det=np.concatenate([[0.0], det[last]]),
        fcall=np.concatenate([[0.0], fcall[last]]),
        tp=np.concatenate([[0], tp[last]]),
        fp=np.concatenate([[0], (last + 1) - tp[last]]),
        k_pos=k_pos,
        k_neg=k_neg,
        single_pos=single_pos,
        single_neg=single_neg,
        n_pos=int(y.sum()),
        n_neg=int(y.size - y.sum()),
    )


# ------------------------------------------------------------------------------------------- choosing
@dataclass
class GuaranteedChoice:
    """The outcome of one guaranteed rule on one finding.

    threshold: NaN when refused. status: "guaranteed" | "insufficient_data" | "unreachable".
    lower_bound: the one-sided bound on the rule's metric at the threshold (PPV/NPV: at the range's worst
    prevalence), at ``level``. n_needed: patients of the limiting class needed with no failure (for PPV:
    positives, given the negatives there are; NPV: negatives). sensitivity_lower / specificity_lower:
    the joint bounds behind a PPV/NPV rule (NaN otherwise). method: the bound (``_patient_bounds``)."""

    kind: str
    target: float
    threshold: float
    status: str
    lower_bound: float
    n_needed: int
    note: str
    level: float
    method: str
    k_pos: int
    k_neg: int
    prevalence: tuple[float, float] | None = None
    sensitivity_lower: float = math.nan
    specificity_lower: float = math.nan
    candidate_level: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method_text(self) -> str:
        return METHOD_TEXT[self.method]


def _describe(kind: str, target: float, level: float, prevalence: tuple[float, float] | None) -> str:
    what = {"ppv": "PPV", "npv": "NPV"}.get(kind, kind)
    rng = f" at every prevalence in {prevalence[0]:g}-{prevalence[1]:g}" if prevalence else ""
    return f"{what} >= {target:g}{rng} at {_pct(level)} confidence"


def _have(k: int, n: int) -> str:
    return f"{n}" if k == n else f"{n} images from {k} patients"


def _cls(kind: str) -> str:
    return "positive" if kind in ("sensitivity", "ppv") else "negative"


def feasibility(
    kind: str, target: float, y: Any, g: Any, level: float, prevalence: tuple[float, float] | None = None
) -> tuple[bool, int, str]:
    """(could the rule pass with perfectly separated scores, patients needed, note when not): decided by
    the numbers of patients of each class only (never by the scores)."""
    c = build_curve(y, np.asarray(y, dtype=np.float64), g)
    return _feasible(kind, float(target), c, level, prevalence)


def _feasible(
    kind: str, target: float, c: _Curve, level: float, prevalence: tuple[float, float] | None
) -> tuple[bool, int, str]:
    desc = _describe(kind, target, level, prevalence)
    if kind in ("sensitivity", "specificity"):
        need = patients_needed(target, level)
        k, n = (c.k_pos, c.n_pos) if kind == "sensitivity" else (c.k_neg, c.n_neg)
        if k >= need:
            return True, need, ""
        cls = ("positives" if kind == "sensitivity" else "negatives") if k == n else f"{_cls(kind)} patients"
        note = f"{desc} needs at least {need} {cls} with no misses; has {_have(k, n)}"
        if k != n:
            note += " (images of one patient are not independent)"
        return False, need, note
    if prevalence is None:
        raise CalibrationError(f"{kind}:{target:g} needs a deployment prevalence range (prevalence=(lo, hi))")
    ratio = likelihood_ratio_needed(kind, target, prevalence)
    # the other class bounds the rate the limiting class must beat: negatives for PPV, positives for NPV
    k_other, n_other, k_lim, n_lim = (
        (c.k_neg, c.n_neg, c.k_pos, c.n_pos) if kind == "ppv" else (c.k_pos, c.n_pos, c.k_neg, c.n_neg)
    )
    other_needed = other_class_minimum(kind, target, prevalence, level)
    other_cls = "negative" if kind == "ppv" else "positive"
    if k_other < other_needed:
        note = (
            f"{desc} needs at least {other_needed} {other_cls} patients (to bound the "
            f"{'false-positive' if kind == 'ppv' else 'false-negative'} rate below 1/{ratio:.0f}); "
            f"has {_have(k_other, n_other)}"
        )
        return False, other_needed, note
    need = limiting_class_needed(kind, target, prevalence, level, k_other)
    if k_lim >= need:
        return True, need, ""
    note = (
        f"{desc} needs at least {need} {_cls(kind)} patients with no misses (with {k_other} {other_cls} "
        f"patients); has {_have(k_lim, n_lim)}"
    )
    return False, need, note


def choose_threshold(
    kind: str,
    target: float,
    y: Any,
    s: Any,
    g: Any = None,
    *,
    level: float = 0.95,
    prevalence: Any = None,
) -> GuaranteedChoice:
    """The guaranteed rule ``kind:target`` on one finding at per-finding confidence ``level``.

    y (n,) 0/1 labels, s (n,) finite scores, g (n,) patient ids or None (each image its own patient).
    prevalence: (lo, hi), required for ppv / npv, ignored otherwise."""
    if kind not in GUARANTEED_KINDS:
        raise CalibrationError(f"{kind!r} is not a guaranteed rule; one of {GUARANTEED_KINDS}")
    if not 0.0 < level < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {level!r}")
    target = float(target)
    if kind in ("ppv", "npv") and prevalence is None:
        raise CalibrationError(f"{kind}:{target:g} needs a deployment prevalence range (prevalence=(lo, hi))")
    prev = check_prevalence(prevalence) if kind in ("ppv", "npv") else None
    yy = np.asarray(y, dtype=np.float64).reshape(-1) >= 0.5
    c = build_curve(yy, s, g)
    ok, need, note = _feasible(kind, target, c, level, prev)
    base: dict[str, Any] = dict(kind=kind, target=target, level=level, k_pos=c.k_pos, k_neg=c.k_neg, prevalence=prev)
    single = {"sensitivity": c.single_pos, "specificity": c.single_neg}.get(kind, c.single_pos and c.single_neg)
    method = EXACT if single else CONVEX
    if not ok:
        return GuaranteedChoice(
            threshold=math.nan, status="insufficient_data", lower_bound=math.nan, n_needed=need, note=note,
            method=method, **base,
        )  # fmt: skip
    alpha = 1.0 - level
    if kind in ("sensitivity", "specificity"):
        return _single_rate(kind, target, c, alpha, need, method, base)
    return _predictive(kind, target, c, alpha, need, method, base)


def _single_rate(
    kind: str, target: float, c: _Curve, alpha: float, need: int, method: str, base: dict[str, Any]
) -> GuaranteedChoice:
    if kind == "sensitivity":
        crit = critical_failures(c.k_pos, 1.0 - target, alpha, c.single_pos)
        ok = np.flatnonzero(c.misses() <= crit + _TOL)
        i = int(ok[0]) if ok.size else None  # the highest threshold (fewest calls) within the critical sum
        cls = "pos"
    else:
        crit = critical_failures(c.k_neg, 1.0 - target, alpha, c.single_neg)
        ok = np.flatnonzero(c.fcall <= crit + _TOL)
        i = int(ok[-1]) if ok.size else None  # the lowest threshold
        cls = "neg"
    desc = _describe(kind, target, 1.0 - alpha, None)
    if i is None:
        return GuaranteedChoice(
            threshold=math.nan, status="unreachable", lower_bound=math.nan, n_needed=need,
            note=f"no threshold reaches {desc}", method=method, **base,
        )  # fmt: skip
    lb = success_lower_bound(c.counts(cls, i), 1.0 - alpha)
    return GuaranteedChoice(
        threshold=float(c.thr[i]), status="guaranteed", lower_bound=lb, n_needed=need, note="", method=method,
        **base,
    )  # fmt: skip


def _predictive(
    kind: str, target: float, c: _Curve, alpha: float, need: int, method: str, base: dict[str, Any]
) -> GuaranteedChoice:
    prev = base["prevalence"]
    ratio = likelihood_ratio_needed(kind, target, prev)
    half = alpha / 2.0
    # ppv: levels on the negatives' false-call sum, sensitivity tested; npv: levels on the misses, specificity tested
    level_cls, test_cls = ("neg", "pos") if kind == "ppv" else ("pos", "neg")
    k_level = c.k_neg if kind == "ppv" else c.k_pos
    single_level = c.single_neg if kind == "ppv" else c.single_pos
    k_test = c.k_pos if kind == "ppv" else c.k_neg
    single_test = c.single_pos if kind == "ppv" else c.single_neg
    level_stat = c.fcall if kind == "ppv" else c.misses()
    test_fail = c.misses() if kind == "ppv" else c.fcall
    best: tuple[int, int, float, float] | None = None
    for j in range(0, k_level + 1):
        a_j = half * level_weight(j)
        u = failure_rate_upper(k_level, float(j), 1.0 - a_j, single_level)  # the other error rate, <= u
        required = ratio * u
        if required >= 1.0:  # u grows with j: no later level can pass
            break
        if kind == "ppv":  # fcall rises along the candidates: the last one with fcall <= j (lowest threshold)
            i = int(np.searchsorted(level_stat, j + _TOL, side="right")) - 1
        else:  # misses fall along the candidates: the first one with misses <= j (highest threshold)
            i = int(np.searchsorted(-level_stat, -(j + _TOL), side="left"))
        if i < 0 or i >= level_stat.size:
            continue
        crit = critical_failures(k_test, 1.0 - required, a_j, single_test)
        if test_fail[i] <= crit + _TOL:
            best = (j, i, u, a_j)  # every level is valid at once: keep the one reaching furthest
    desc = _describe(kind, target, 1.0 - alpha, prev)
    if best is None:
        return GuaranteedChoice(
            threshold=math.nan, status="unreachable", lower_bound=math.nan, n_needed=need,
            note=f"no threshold reaches {desc}", method=method, **base,
        )  # fmt: skip
    j, i, u, a_j = best
    tested = success_lower_bound(c.counts(test_cls, i), 1.0 - a_j)
    se_l, sp_l = (tested, 1.0 - u) if kind == "ppv" else (1.0 - u, tested)
    lb = predictive_bound(kind, se_l, sp_l, prev)
    return GuaranteedChoice(
        threshold=float(c.thr[i]), status="guaranteed", lower_bound=lb, n_needed=need, note="", method=method,
        sensitivity_lower=se_l, specificity_lower=sp_l, candidate_level=j, **base,
    )  # fmt: skip
