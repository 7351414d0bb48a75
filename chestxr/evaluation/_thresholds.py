"""Operating points: per-finding decision thresholds fitted on a calibration split, with guarantees.

Rules are specs parsed by :func:`chestxr.evaluation.parse_method` (table there). A sample
is positive when ``score >= threshold``; candidates are the distinct calibration scores plus one
finite value above all of them (call nothing positive).

Guaranteed rules (``sensitivity:X``, ``specificity:X``, ``ppv:X``, ``npv:X``) are chosen by
:func:`chestxr.evaluation._guarantee_rules.choose_threshold` (method and proofs in that module and in
chestxr/evaluation/_patient_bounds.py):

* The PATIENT is the independent unit (``groups`` = patient ids; None = every image its own patient).
  With one image per patient of the class the bound is the exact binomial (Clopper-Pearson) bound and the
  threshold is exactly the one of fixed-sequence testing before (Learn-then-Test, Angelopoulos et al.
  2021: walk from the safe end, stop at the first candidate whose bound is < X): for sensitivity the k-th
  highest positive score, whose true sensitivity is Beta(k, n - k + 1) distributed. With several images
  per patient the bound is the Bentkus (2004) bound on the per-patient failure fractions: valid however
  many images each patient has and however correlated they are; no design effect is estimated from the
  data and nothing is clamped. The estimand stays image-level (detected positive images / positive images).
* ``simultaneous=True`` (the default; ``chestxr calibrate`` without ``--per-finding``): the findings carrying
  a guaranteed rule form one family (:func:`chestxr.evaluation._guarantee_rules.allocate_family`) and share
  alpha = 1 - confidence by Bonferroni, so every member's guarantee holds TOGETHER with probability >=
  ``confidence``. A finding whose counts cannot support its rule even alone at ``confidence``, or then not
  at its Bonferroni share (decided by the numbers of patients only, never by the scores, so the family is
  fixed before any score is seen), is left out and refused; the others do not pay for it.
* ``ppv:X`` / ``npv:X`` need the deployment prevalence range ``prevalence=(lo, hi)`` (CLI
  ``--prevalence LO:HI``) and hold at every prevalence of the range, from joint lower bounds on
  sensitivity and specificity (PPV(pi) >= pi Se_L / (pi Se_L + (1 - pi)(1 - Sp_L)) at the worst pi).
  Without a range they are refused with a CalibrationError.

When the counts are too few (fewer patients of the class than ``n_needed`` =
``patients_needed(X, level)``, 29 for 0.9 at 95 %) the finding gets NO threshold (NaN), ``status =
"insufficient_data"`` and a one-line :class:`InsufficientDataWarning`. ``youden`` / ``f1`` / ``cost`` /
``fixed`` / ``...@point`` report their achieved values with exact intervals and ``status =
"not_a_guarantee"``; they take no part in a family. Youden / F1 / cost compare integer counts, so ties are
exact and the highest tied threshold wins.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence, cast

import numpy as np

from chestxr.core import CalibrationError
from chestxr.evaluation._guarantee_rules import (
    GuaranteedChoice,
    RuleFamily,
    allocate_family,
    check_prevalence,
    choose_threshold,
    feasibility,
)
from chestxr.evaluation._intervals import confusion_intervals
from chestxr.evaluation._methods import TARGETED, Method, parse_method
from chestxr.evaluation._metrics import UndefinedMetricWarning, as_matrices
from chestxr.evaluation._operating_point import Guarantee, OperatingPoint, PatientTally
from chestxr.evaluation._patient_bounds import METHOD_TEXT, patient_counts, patient_tally, success_lower_bound
from chestxr.evaluation._planning import plan_command

_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
#: the references every guaranteed record names (method_text)
_REFERENCES = {
    "clopper-pearson": "Clopper & Pearson 1934",
    "bentkus-patient": "Bentkus 2004, Ann. Probab. 32",
}
_SEQUENCE = "fixed-sequence testing over thresholds (Learn-then-Test, Angelopoulos et al. 2021)"


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
    prevalence: Any = None,
) -> OperatingPoint:
    """Fit one finding's operating point. y_true, y_score, groups: (n_samples,), masked entries removed.

    confidence: of the one-sided bound behind a guaranteed rule (this finding alone: a family of one,
    not jointly; :func:`fit_thresholds` makes families); level: of the two-sided exact intervals reported
    beside every rate; prevalence: (lo, hi) deployment range, required by ppv:X / npv:X. Warns
    (InsufficientDataWarning) when a guarantee is refused for too few patients, UndefinedMetricWarning when a
    threshold is undefined otherwise."""
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
    m = parse_method(method)
    prev = _prevalence_for(m, finding, prevalence)
    return _fit_one(
        np.asarray(y_true, dtype=np.float64) >= 0.5,
        np.asarray(y_score, dtype=np.float64),
        None if groups is None else np.asarray(groups).reshape(-1),
        m,
        finding=finding,
        confidence=confidence,
        level=level,
        prevalence=prev,
        family=None,
    )


def _prevalence_for(m: Method, finding: str, prevalence: Any) -> tuple[float, float] | None:
    """The checked range for a ppv/npv guarantee (CalibrationError, one line, without one); None otherwise."""
    if not (m.guarantee and m.kind in ("ppv", "npv")):
        return None
    if prevalence is None:
        raise CalibrationError(
            f"{finding}: {m} needs the deployment prevalence range it must hold over: pass --prevalence LO:HI "
            "(chestxr calibrate) or prevalence=(lo, hi) (fit_thresholds), e.g. 0.05:0.20"
        )
    return check_prevalence(prevalence)


def _fit_one(
    y: np.ndarray,
    s: np.ndarray,
    g: np.ndarray | None,
    m: Method,
    *,
    finding: str,
    confidence: float,
    level: float,
    prevalence: tuple[float, float] | None,
    family: RuleFamily | None,
    refuse_at: float | None = None,
) -> OperatingPoint:
    n_pos = int(y.sum())
    one_class = n_pos == 0 or n_pos == y.size
    lb, note = math.nan, ""
    guarantee = None
    if m.kind == "fixed":
        thr, status = float(m.value if m.value is not None else math.nan), "not_a_guarantee"
        if one_class:
            note = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
            warnings.warn(f"{finding}: {note}: rates at the fixed threshold are undefined", UndefinedMetricWarning, 4)
    elif m.kind in TARGETED and m.guarantee:
        if family is None:  # fit_threshold: this finding alone
            family = RuleFamily((finding,), float(confidence), simultaneous=False)
        choice = _guaranteed(m, y, s, g, finding, confidence, prevalence, family, refuse_at)
        thr, status, lb, note = choice.threshold, choice.status, choice.lower_bound, choice.note
        guarantee = _guarantee_record(choice, n_pos, confidence, finding, family)
        if status == "insufficient_data":
            warnings.warn(f"{finding}: no threshold: {note} (status insufficient_data)", InsufficientDataWarning, 4)
        elif status == "unreachable":
            warnings.warn(f"{finding}: no threshold: {note} (status unreachable)", UndefinedMetricWarning, 4)
    elif one_class:
        thr, status = math.nan, "undefined"
        note = f"only one class ({n_pos} positive, {y.size - n_pos} negative)"
        warnings.warn(f"{finding}: threshold for {m} undefined: {note}; set to NaN", UndefinedMetricWarning, 4)
    else:
        thr, note = _point_threshold(m, y, s)
        status = "not_a_guarantee" if math.isfinite(thr) else "undefined"
        if note:
            warnings.warn(f"{finding}: threshold for {m} undefined: {note}; set to NaN", UndefinedMetricWarning, 4)
    return _record(finding, m, thr, y, s, g, status=status, lb=lb, guarantee=guarantee, note=note,
                   conf=confidence, level=level)  # fmt: skip


def _class_patients(m: Method, col: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> int:
    """Patients with an image of the class a rule is limited by (positives: sensitivity, PPV; negatives:
    specificity, NPV)."""
    y, _, g = col
    rows = y if m.kind in ("sensitivity", "ppv") else ~y
    return int(rows.sum()) if g is None else int(np.unique(g[rows].astype(str)).size)


def _guaranteed(
    m: Method,
    y: np.ndarray,
    s: np.ndarray,
    g: np.ndarray | None,
    finding: str,
    confidence: float,
    prevalence: tuple[float, float] | None,
    family: RuleFamily,
    refuse_at: float | None = None,
) -> GuaranteedChoice:
    """The guaranteed rule at this finding's share of the family's level. A finding left out of the family
    (``refuse_at``: the level its counts fell short at) is refused by its counts at that level."""
    if m.target is None:
        raise CalibrationError(f"{m.kind} rule without a target value")
    member = finding in family.members
    each = family.per_finding_level if member else (refuse_at if refuse_at is not None else confidence)
    choice = choose_threshold(m.kind, float(m.target), y, s, g, level=each, prevalence=prevalence)
    if not member and choice.status == "guaranteed":  # cannot happen: the family was made from these counts
        raise CalibrationError(f"{finding}: left out of the family but its counts support {m} at {_pct(each)}")
    if choice.status != "guaranteed":
        if not member and each == confidence:
            choice.note += " (left out of the joint family: too few patients even alone)"
        elif not member:
            choice.note += (
                f" (left out of the joint family: too few patients for its share of {_pct(confidence)} jointly; "
                "--per-finding / simultaneous=False would make it alone)"
            )
        elif family.simultaneous and family.size > 1:
            choice.note += f" (its share of {_pct(confidence)} jointly for {family.size} findings)"
    if choice.status == "insufficient_data":  # name the command that says how many patients to collect
        n = len(family.members) + len(family.excluded) if family.simultaneous else 1
        cmd = plan_command(f"{m.kind}:{float(m.target):g}", confidence, n)
        if prevalence is not None:
            cmd = cmd.replace("LO:HI", f"{prevalence[0]:g}:{prevalence[1]:g}")
        choice.note += f"; plan the collection with `{cmd}`"
    return choice


def _guarantee_record(
    choice: GuaranteedChoice, n_pos: int, confidence: float, finding: str, family: RuleFamily
) -> Guarantee:
    member = finding in family.members
    ref = _REFERENCES.get(choice.method, "")
    text = f"{METHOD_TEXT[choice.method]} ({ref}); {_SEQUENCE}"
    if member and family.simultaneous and family.size > 1:
        text += f"; Bonferroni over {family.size} findings (family-wise error <= {1 - confidence:.3g})"
    if choice.prevalence is not None:
        text += "; PPV/NPV at the range's worst prevalence from joint lower bounds on sensitivity and specificity"
    return Guarantee(
        metric=choice.kind,
        target=float(choice.target),
        level=float(confidence),
        method=choice.method,
        status=choice.status,
        lower_bound=choice.lower_bound if math.isfinite(choice.lower_bound) else None,
        n_pos=n_pos,
        n_needed=int(choice.n_needed),
        family=family.members if member else (finding,),
        family_size=family.size if member else 1,
        simultaneous=bool(family.simultaneous and member),
        per_finding_level=float(choice.level),
        method_text=text,
        prevalence=choice.prevalence,
        sensitivity_lower=choice.sensitivity_lower if math.isfinite(choice.sensitivity_lower) else None,
        specificity_lower=choice.specificity_lower if math.isfinite(choice.specificity_lower) else None,
    )


def _pct(x: float) -> str:
    t = f"{100 * x:.2f}".rstrip("0").rstrip(".")
    return f"{t}%"


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
    guarantee: Guarantee | None,
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
            lb = _point_bound(m.kind, y, pred, g, conf)
        rec["patient_tally"] = _patient_tally(y, pred, g)
    target = float(m.target) if m.target is not None else math.nan
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


def _patient_tally(y: np.ndarray, pred: np.ndarray, g: np.ndarray | None) -> PatientTally | None:
    """Per-patient counts at the threshold (positives: detected / positive images; negatives: correctly
    negative / negative images), only when some patient has several images of a class (else None)."""
    if g is None:
        return None
    pos, neg = patient_tally(pred[y], g[y]), patient_tally(~pred[~y], g[~y])
    return None if pos is None and neg is None else PatientTally(positives=pos, negatives=neg)


def _point_bound(kind: str, y: np.ndarray, pred: np.ndarray, g: np.ndarray | None, conf: float) -> float:
    """The patient-level one-sided bound at the point rule's threshold (information only; PPV/NPV at the
    calibration split's own prevalence)."""
    rows, ok = {"sensitivity": (y, pred), "specificity": (~y, ~pred), "ppv": (pred, y), "npv": (~pred, ~y)}[kind]
    counts = patient_counts(ok[rows], None if g is None else g[rows])
    return success_lower_bound(counts, conf) if counts.k else math.nan


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
    simultaneous: bool = True,
    prevalence: Any = None,
) -> list[OperatingPoint]:
    """Fit one operating point per finding on calibration data.

    y_true (n_samples, n_findings) 0/1 (binarised at >= 0.5), y_score (n_samples, n_findings)
    scores, mask (n_samples, n_findings) bool or None (True = label known), groups (n_samples,)
    patient ids or None (each row its own patient). method: one spec for all, a list with one per finding,
    or a dict finding -> spec (key "*" or "default" for the rest; needs ``findings``). confidence: of the
    guarantees; with ``simultaneous`` (default) it holds JOINTLY for every finding with a guaranteed rule
    (Bonferroni; module docstring), else per finding. prevalence: (lo, hi) deployment prevalence range,
    required by ppv:X / npv:X (CalibrationError without it). Returns one
    :class:`~chestxr.evaluation.OperatingPoint` per finding (``.threshold`` NaN when refused, ``.status``,
    ``.lower_bound``, ``.guarantee`` with the family, its size and the per-finding level)."""
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
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
    names = [str(x) for x in findings]
    prev = [_prevalence_for(methods[j], names[j], prevalence) for j in range(f)]
    cols = [(y[m[:, j], j] >= 0.5, s[m[:, j], j], None if g is None else g[m[:, j]]) for j in range(f)]
    guaranteed = [j for j in range(f) if methods[j].kind in TARGETED and methods[j].guarantee]
    family, refuse_at = _family(guaranteed, methods, cols, names, prev, confidence, simultaneous)
    return [
        _fit_one(
            cols[j][0],
            cols[j][1],
            cols[j][2],
            methods[j],
            finding=names[j],
            confidence=confidence,
            level=level,
            prevalence=prev[j],
            family=family,
            refuse_at=refuse_at.get(names[j]),
        )
        for j in range(f)
    ]


def _family(
    guaranteed: list[int],
    methods: list[Method],
    cols: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    names: list[str],
    prev: list[tuple[float, float] | None],
    confidence: float,
    simultaneous: bool,
) -> tuple[RuleFamily, dict[str, float]]:
    """The family of the guaranteed rules, decided by the numbers of patients only (never the scores), and
    for each finding left out the level its counts fell short at.

    First the findings whose counts cannot support the rule even alone at ``confidence`` are left out
    (:func:`allocate_family`). When simultaneous and some member cannot reach its Bonferroni share
    (1 - alpha / size) by its counts, the short member with the fewest patients of its rule's class is left
    out and the share recomputed, one at a time, until every member can: a finding that would only be
    refused does not take alpha from the others. Every decision uses counts only, so the family is fixed
    before any score is looked at and the joint guarantee holds."""

    def feasible(j: int, lvl: float) -> bool:
        m = methods[j]
        return feasibility(m.kind, float(cast(float, m.target)), cols[j][0], cols[j][2], lvl, prev[j])[0]

    alone = [feasible(j, confidence) for j in guaranteed]
    refuse_at = {names[j]: confidence for j, ok in zip(guaranteed, alone) if not ok}
    family = allocate_family([names[j] for j in guaranteed], alone, confidence, simultaneous)
    while simultaneous and family.size > 1:
        lvl = family.per_finding_level
        short = [j for j in guaranteed if names[j] in family.members and not feasible(j, lvl)]
        if not short:
            break
        # leave out the one with the fewest patients of its rule's class, then recompute the share
        out = min(short, key=lambda j: (_class_patients(methods[j], cols[j]), names[j]))
        refuse_at[names[out]] = lvl
        keep = [names[j] in family.members and j != out for j in guaranteed]
        family = allocate_family([names[j] for j in guaranteed], keep, confidence, simultaneous)
    return family, refuse_at


# ----------------------------------------------------------------------------- choosing a threshold
# Arrays: y (n,) bool labels, s (n,) float scores; integer counts at every candidate (the point rules).


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
