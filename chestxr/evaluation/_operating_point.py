"""Operating points: the one record of a finding's decision threshold, from the fit to every output.

An :class:`OperatingPoint` is what :func:`chestxr.evaluation.fit_thresholds` returns for one finding, what
``thresholds.json`` and model.json store (``to_dict`` / ``from_dict``: the same keys in both files), what the
evaluation report checks its promise against, what the model card lists and what the PACS SR states. Its
:class:`Guarantee` (for a guaranteed rule, whatever its outcome) says which one-sided bound was asked for and
whether the calibration data met it. Consumers read typed attributes and :meth:`OperatingPoint.describe` /
:meth:`Guarantee.describe` / :meth:`Guarantee.summary`, never the dict keys, so a field added to either
record (issue 22: the family a guarantee holds jointly for, its size, the per-finding level, the prevalence
range) reaches every report by extending the record and its ``describe``.

Words every report and CSV uses: :data:`NOT_CALIBRATED` beside a finding whose threshold is NaN (refused or
undefined: it calls nothing), :data:`UNCALIBRATED_RUN` beside every finding of a run never calibrated (0.5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from chestxr.core import fields_set, written_keys

#: what every report and CSV shows for a finding whose threshold is NaN (it calls nothing)
NOT_CALIBRATED = "not calibrated"
#: the status of every finding of a run that was never calibrated (0.5 default, logit 0)
UNCALIBRATED_RUN = "uncalibrated run (default 0.5)"
#: ``OperatingPoint.status`` values
STATUSES = ("guaranteed", "not_a_guarantee", "insufficient_data", "unreachable", "undefined")
#: ``Guarantee.code()`` per status (an SR code value)
_CODES = {
    "guaranteed": "MET",
    "insufficient_data": "INSUFFICIENT",
    "unreachable": "UNREACHABLE",
    "undefined": "UNDEFINED",
}
_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
_COUNTS = ("tp", "fp", "tn", "fn")


def _nan2() -> list[float]:
    return [math.nan, math.nan]


def _finite(v: Any) -> Optional[float]:
    """A finite float, or None (None, NaN, inf, non-numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
    return float(v) if math.isfinite(float(v)) else None


def _float(v: Any) -> float:
    f = _finite(v)
    return math.nan if f is None else f


def _int(v: Any) -> Optional[int]:
    f = _finite(v)
    return None if f is None else int(f)


def _pair(v: Any) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return _nan2()
    return [_float(x) for x in v]


@dataclass(frozen=True)
class Guarantee:
    """A one-sided guarantee asked of an operating point: P(true ``metric`` >= ``target``) >= ``level``, made on
    the calibration data with the PATIENT as the independent unit (:mod:`chestxr.evaluation._patient_bounds`):
    ``method`` "clopper-pearson" (every patient has one image of the class: the exact binomial bound) or
    "bentkus-patient" (several images per patient: the Bentkus 2004 bound on per-patient failure fractions,
    valid whatever the number of images and their correlation; no design effect is estimated). The estimand is
    image-level (detected positive images / positive images), as everywhere in chestxr.

    status: "guaranteed" (the bound reached the target at the chosen threshold), "insufficient_data" (fewer
    than ``n_needed`` patients of the relevant class: no threshold) or "unreachable" (no threshold reaches it).
    lower_bound: the bound at the chosen threshold, at ``per_finding_level`` (None when refused; PPV/NPV: at
    the range's worst prevalence); n_pos: positive images it was fitted on; n_needed: patients of the
    relevant class a guarantee needs at all.

    Family (issue 22): ``level`` is the confidence asked for. ``simultaneous`` True: it holds JOINTLY for every
    finding of ``family`` (``family_size`` findings, Bonferroni: ``per_finding_level`` = 1 - (1 - level) /
    family_size each); False: for this finding alone (``per_finding_level`` = level); None: a record written
    before families existed (per finding, legacy). ``prevalence``: the deployment prevalence range (lo, hi) a
    PPV/NPV guarantee holds over (None for sensitivity / specificity and legacy records, which held only at
    the calibration prevalence); ``sensitivity_lower`` / ``specificity_lower``: the joint bounds behind it.
    ``method_text``: the bound in words with its reference. Fields added later (with defaults) are read and
    written by :meth:`to_dict` / :meth:`from_dict` unchanged; records without them still load.
    """

    metric: str
    target: float
    level: float
    method: str = "clopper-pearson"
    status: str = "guaranteed"
    lower_bound: Optional[float] = None
    n_pos: Optional[int] = None
    n_needed: Optional[int] = None
    family: Optional[tuple[str, ...]] = None
    family_size: Optional[int] = None
    simultaneous: Optional[bool] = None
    per_finding_level: Optional[float] = None
    method_text: Optional[str] = None
    prevalence: Optional[tuple[float, float]] = None
    sensitivity_lower: Optional[float] = None
    specificity_lower: Optional[float] = None

    @property
    def met(self) -> bool:
        """True when the calibration data met the bound (a threshold was chosen under it)."""
        return self.status == "guaranteed"

    @property
    def legacy(self) -> bool:
        """True for a record written before families existed (no ``simultaneous`` key): per finding."""
        return self.simultaneous is None

    @property
    def joint(self) -> bool:
        """True when the level holds jointly with other findings (a simultaneous family of 2 or more)."""
        return bool(self.simultaneous) and (self.family_size or 0) > 1

    @property
    def joint_confidence(self) -> float:
        """The confidence every member's guarantee holds at together (``level``)."""
        return self.level

    @property
    def family_text(self) -> str:
        """The family in words: "jointly for 4 findings (Bonferroni, 98.75% each)", "this finding alone",
        "per finding (legacy record)"."""
        if self.legacy:
            return "per finding (legacy record)"
        if self.joint:
            each = _pct(self.per_finding_level if self.per_finding_level is not None else self.level)
            return f"jointly for {self.family_size} findings (Bonferroni, {each} each)"
        if self.simultaneous:
            return "the one guaranteed finding"
        return "this finding alone (per finding, not jointly)"

    def _what(self) -> str:
        name = {"ppv": "PPV", "npv": "NPV"}.get(self.metric, self.metric)
        what = f"{name} >= {self.target:.2f}"
        if self.prevalence is not None:
            what += f" at every prevalence in {_prev(self.prevalence)}"
        return what

    def describe(self) -> str:
        """One sentence: the promise, for whom, and its outcome. E.g. "sensitivity >= 0.90 for each of 4
        findings jointly with 95% confidence (Bonferroni, 98.75% each); patient-level bound (Bentkus 2004) 0.912"
        or "PPV >= 0.80 at every prevalence in 0.05-0.2 for this finding alone with 95% confidence; ...".
        A legacy record keeps its old sentence ("... with 95% confidence (one-sided Clopper-Pearson bound ...)")."""
        if self.legacy:
            what = f"{self.metric} >= {self.target:.2f} with {self.level:.0%} confidence"
            if not self.met:
                return f"{what}: not met ({self.status}; n_pos {self.n_pos}, n_needed {self.n_needed})"
            bound = "-" if self.lower_bound is None else f"{self.lower_bound:.3f}"
            return f"{what} (one-sided {_method_name(self.method)} bound {bound})"
        what = self._what()
        if self.joint:
            each = _pct(self.per_finding_level if self.per_finding_level is not None else self.level)
            text = (
                f"{what} for each of {self.family_size} findings jointly with {_pct(self.level)} confidence "
                f"(Bonferroni, {each} each)"
            )
        elif self.simultaneous:
            text = f"{what} with {_pct(self.level)} confidence (the one guaranteed finding)"
        else:
            text = f"{what} with {_pct(self.level)} confidence for this finding alone (not jointly)"
        if not self.met:
            return f"{text}: not met ({self.status}; n_pos {self.n_pos}, n_needed {self.n_needed})"
        bound = "-" if self.lower_bound is None else f"{self.lower_bound:.3f}"
        return f"{text}; {_bound_words(self.method)} {bound}"

    def summary(self, limit: int = 64) -> str:
        """At most ``limit`` characters, status first (an SR code meaning):
        "guaranteed: sensitivity >= 0.9, bound 0.912 (95% joint, 4 findings)";
        PPV/NPV name the range: "guaranteed: ppv >= 0.8 prev 0.05-0.2, bound 0.81 (95% joint, 4)"."""
        text = f"{self.status or 'status unknown'}: {self.metric} >= {self.target:g}"
        if self.prevalence is not None:
            text += f" prev {_prev(self.prevalence)}"
        if self.lower_bound is not None:
            text += f", bound {self.lower_bound:.3f}"
        if self.joint:
            long = f" ({self.level:.0%} joint, {self.family_size} findings)"
            text += long if len(text) + len(long) <= limit else f" ({self.level:.0%} joint, {self.family_size})"
        else:
            text += f" ({self.level:.0%} one-sided)"
        if self.method and len(text) + len(self.method) + 1 <= limit:
            text += f" {self.method}"
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def code(self) -> str:
        """An SR code value: MET, INSUFFICIENT, UNREACHABLE, UNDEFINED or UNKNOWN."""
        return _CODES.get(str(self.status or "").lower(), "UNKNOWN")

    def to_dict(self) -> dict[str, Any]:
        """The nested ``guarantee`` record of thresholds.json / model.json (NaN written as None, tuples as
        lists). A legacy record (``simultaneous`` None) writes only the keys it was read with."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _FAMILY_FIELDS and v is None and self.legacy:
                continue
            out[f.name] = _json(list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Guarantee":
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored, keys it knows but the record
        lacks (a thresholds.json from before issue 22) take their defaults: a legacy per-finding guarantee."""
        convert = {
            "target": _float,
            "level": _float,
            "lower_bound": _finite,
            "n_pos": _int,
            "n_needed": _int,
            "family": lambda v: None if v is None else tuple(str(x) for x in v),
            "family_size": _int,
            "simultaneous": lambda v: None if v is None else bool(v),
            "per_finding_level": _finite,
            "prevalence": lambda v: None if not isinstance(v, (list, tuple)) or len(v) != 2 else tuple(_pair(v)),
            "sensitivity_lower": _finite,
            "specificity_lower": _finite,
        }
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kw[f.name] = convert.get(f.name, lambda v: v)(d[f.name])
        kw.setdefault("metric", "?")
        kw.setdefault("target", math.nan)
        kw.setdefault("level", math.nan)
        return cls(**kw)


#: Guarantee fields added by issue 22 (absent from older records)
_FAMILY_FIELDS = (
    "family",
    "family_size",
    "simultaneous",
    "per_finding_level",
    "method_text",
    "prevalence",
    "sensitivity_lower",
    "specificity_lower",
)


def _pct(x: float) -> str:
    """95% / 98.75% / 99.64%: at most two decimals, no trailing zeros."""
    s = f"{100 * x:.2f}".rstrip("0").rstrip(".")
    return f"{s}%"


def _prev(p: tuple[float, float]) -> str:
    return f"{p[0]:g}-{p[1]:g}"


def _bound_words(method: str) -> str:
    return {
        "clopper-pearson": "exact binomial bound (Clopper-Pearson, one image per patient)",
        "bentkus-patient": "patient-level bound (Bentkus 2004)",
    }.get(method, f"{_method_name(method)} bound")


def _method_name(method: str) -> str:
    return {"clopper-pearson": "Clopper-Pearson", "wilson": "Wilson"}.get(method, method)


def _tally(v: Any) -> Optional[tuple[tuple[int, int, int], ...]]:
    """A stored tally ([[k, m, patients], ...]) as a tuple of int triples; None when absent or malformed."""
    if not isinstance(v, (list, tuple)):
        return None
    out = []
    for row in v:
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            return None
        k, m, c = (_int(x) for x in row)
        if k is None or m is None or c is None or not (0 <= k <= m and m >= 1 and c >= 1):
            return None
        out.append((k, m, c))
    return tuple(out)


@dataclass(frozen=True)
class PatientTally:
    """Per-patient counts at an operating point on the calibration data, for a check that counts patients
    (:mod:`chestxr.evaluation._promise`: a point rule's two-sample test). Counts only, never an identifier.

    positives: the multiset of (detected positive images k, positive images m) over patients with a positive
    image, as ((k, m, number of such patients), ...), sorted; negatives: likewise (correctly negative images,
    negative images). A class is None when every patient has one image of it (its image counts, tp/fn or
    tn/fp, then are patient counts). The record stores a tally only when calibration had patient ids and some
    patient had several images of a class (records stay small)."""

    positives: Optional[tuple[tuple[int, int, int], ...]] = None
    negatives: Optional[tuple[tuple[int, int, int], ...]] = None

    def to_dict(self) -> dict[str, Any]:
        """{"positives": [[k, m, patients], ...] or None, "negatives": ...}."""
        return {
            "positives": None if self.positives is None else [list(r) for r in self.positives],
            "negatives": None if self.negatives is None else [list(r) for r in self.negatives],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PatientTally":
        return cls(positives=_tally(d.get("positives")), negatives=_tally(d.get("negatives")))


@dataclass(frozen=True)
class EceChange:
    """Expected calibration error of a finding's scores before and after probability calibration."""

    before: float
    after: float


@dataclass(frozen=True)
class OperatingPoint:
    """One finding's operating point and what it achieved on the calibration data.

    threshold: probability threshold (a score >= it is a positive call); NaN when refused or undefined (the
    finding then calls nothing and is shown as :data:`NOT_CALIBRATED`). method: the rule spec
    (``"sensitivity:0.9"``, ``"youden"``, ...; None in records written by hand). status: one of
    :data:`STATUSES`. target / confidence: the rule's X and the confidence of its one-sided bound;
    lower_bound: that bound at the threshold (for a ``@point`` rule given as information). Rates with
    two-sided exact intervals (``<rate>_ci``, at ``level`` by ``interval``), confusion counts, n_pos / n_neg
    and prevalence are measured at the threshold on the calibration data; note: why a threshold is missing.
    guarantee: the :class:`Guarantee` of a guaranteed rule (whatever its outcome), else None.
    From ``chestxr calibrate``: auroc_ci / f1_ci (percentile bootstrap by patient, with the number of
    resamples where defined), ece (before / after probability calibration), and, for a threshold kept from an
    earlier calibration because the new split had no usable labels, kept_from_version / kept_note.
    patient_tally: the :class:`PatientTally` at the threshold when calibration had patient ids and some patient
    had several images of a class (None otherwise and in records written before it existed).
    """

    finding: str
    method: Optional[str] = None
    threshold: float = math.nan
    sensitivity: float = math.nan
    specificity: float = math.nan
    ppv: float = math.nan
    npv: float = math.nan
    f1: float = math.nan
    tp: float = math.nan
    fp: float = math.nan
    tn: float = math.nan
    fn: float = math.nan
    n_pos: Optional[int] = None
    n_neg: Optional[int] = None
    prevalence: float = math.nan
    status: str = "not_a_guarantee"
    target: float = math.nan
    confidence: float = 0.95
    lower_bound: float = math.nan
    accuracy: float = math.nan
    sensitivity_ci: list[float] = field(default_factory=_nan2)
    specificity_ci: list[float] = field(default_factory=_nan2)
    ppv_ci: list[float] = field(default_factory=_nan2)
    npv_ci: list[float] = field(default_factory=_nan2)
    accuracy_ci: list[float] = field(default_factory=_nan2)
    level: float = 0.95
    interval: str = "clopper-pearson"
    note: str = ""
    guarantee: Optional[Guarantee] = None
    auroc_ci: Optional[list[float]] = None
    auroc_ci_n_valid: Optional[int] = None
    f1_ci: Optional[list[float]] = None
    f1_ci_n_valid: Optional[int] = None
    ece: Optional[EceChange] = None
    kept_from_version: Optional[int] = None
    kept_note: Optional[str] = None
    patient_tally: Optional[PatientTally] = None
    #: the JSON keys of the record this one was read from (None: made in memory); see chestxr.core.written_keys
    present: Optional[tuple[str, ...]] = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ views

    @property
    def calibrated(self) -> bool:
        """True when the finding has a finite threshold (it can call)."""
        return math.isfinite(self.threshold)

    @property
    def guaranteed(self) -> bool:
        """True when the one-sided lower bound reached the target (the promise is a guarantee)."""
        return self.status == "guaranteed"

    @property
    def n_needed(self) -> Optional[int]:
        """Samples of the relevant class a guarantee needs (None for rules that promise none)."""
        return self.guarantee.n_needed if self.guarantee is not None else None

    def describe(self) -> str:
        """One line: the guarantee and its outcome, the refusal and why, or "not a guarantee"."""
        if self.status in ("insufficient_data", "unreachable"):
            return f"REFUSED ({self.status}): {self.note} (n_pos {self.n_pos}, n_needed {self.n_needed})"
        if self.guaranteed and self.guarantee is not None:
            return self.guarantee.describe()
        if not self.calibrated:
            return f"{NOT_CALIBRATED}: {self.note}" if self.note else NOT_CALIBRATED
        return "not a guarantee (point estimate on the calibration split)"

    def replace(self, **changes: Any) -> "OperatingPoint":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the thresholds.json / model.json record

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (NaN -> None; counts as ints where defined): the fields in order, with
        ``guaranteed`` and ``n_needed`` after ``status``/``lower_bound``, the nested ``guarantee`` (None for
        rules that promise none), then the calibrate-only fields that are set. ``method`` is left out when None.
        A record read from a file writes back the keys it had plus the fields set since (an older record
        stays as it was)."""
        out: dict[str, Any] = {"finding": self.finding}
        if self.method is not None:
            out["method"] = self.method
        out["threshold"] = _json(self.threshold)
        for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            out[name] = _json(getattr(self, name))
        for name in _COUNTS:
            v = _finite(getattr(self, name))
            out[name] = None if v is None else int(v)
        out.update(n_pos=self.n_pos, n_neg=self.n_neg, prevalence=_json(self.prevalence), status=self.status)
        out.update(guaranteed=self.guaranteed, target=_json(self.target), confidence=_json(self.confidence))
        out.update(lower_bound=_json(self.lower_bound), n_needed=self.n_needed, accuracy=_json(self.accuracy))
        for rate in _RATES:
            out[f"{rate}_ci"] = _json(getattr(self, f"{rate}_ci"))
        out.update(level=_json(self.level), interval=self.interval, note=self.note)
        out["guarantee"] = self.guarantee.to_dict() if self.guarantee is not None else None
        for key in ("auroc", "f1"):
            if getattr(self, f"{key}_ci") is not None:
                out[f"{key}_ci"] = _json(getattr(self, f"{key}_ci"))
                out[f"{key}_ci_n_valid"] = getattr(self, f"{key}_ci_n_valid")
        if self.ece is not None:
            out["ece"] = {"before": _json(self.ece.before), "after": _json(self.ece.after)}
        if self.kept_from_version is not None:
            out["kept_from_version"] = self.kept_from_version
            out["kept_note"] = self.kept_note
        if self.patient_tally is not None:
            out["patient_tally"] = self.patient_tally.to_dict()
        return written_keys(out, self.present, fields_set(self), {"guaranteed": "status", "n_needed": "guarantee"})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OperatingPoint":
        """Inverse of :meth:`to_dict` (None -> NaN). Lenient with older records: missing keys take their
        defaults, a bare ``"guarantee": true`` (before the nested record) is rebuilt from the flat keys, and
        keys this version does not know are ignored."""
        kw: dict[str, Any] = {"finding": str(d["finding"]), "present": tuple(d)}
        method = d.get("method")
        kw["method"] = None if method is None else str(method)
        for name in ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "prevalence", "target",
                     "lower_bound", "accuracy", *_COUNTS):  # fmt: skip
            if name in d:
                kw[name] = _float(d[name])
        for name in ("n_pos", "n_neg", "auroc_ci_n_valid", "f1_ci_n_valid", "kept_from_version"):
            if d.get(name) is not None:
                kw[name] = _int(d[name])
        for name in ("confidence", "level"):
            if _finite(d.get(name)) is not None:
                kw[name] = _float(d[name])
        for rate in _RATES:
            if f"{rate}_ci" in d:
                kw[f"{rate}_ci"] = _pair(d[f"{rate}_ci"])
        for key in ("auroc", "f1"):
            if d.get(f"{key}_ci") is not None:
                kw[f"{key}_ci"] = _pair(d[f"{key}_ci"])
        for name in ("interval", "note", "kept_note"):
            if d.get(name) is not None:
                kw[name] = str(d[name])
        status = d.get("status")
        if status is None and d.get("guaranteed") is True:
            status = "guaranteed"
        if status is not None:
            kw["status"] = str(status)
        ece = d.get("ece")
        if isinstance(ece, Mapping):
            kw["ece"] = EceChange(_float(ece.get("before")), _float(ece.get("after")))
        tally = d.get("patient_tally")
        if isinstance(tally, Mapping):
            kw["patient_tally"] = PatientTally.from_dict(tally)
        g = d.get("guarantee")
        if isinstance(g, Mapping):
            kw["guarantee"] = Guarantee.from_dict(g)
        elif (g is True or d.get("n_needed") is not None) and method:
            kw["guarantee"] = Guarantee(  # an older record: the guarantee is in the flat keys
                metric=str(method).split(":", 1)[0],
                target=_float(d.get("target")),
                level=_float(d.get("confidence", 0.95)),
                status=str(kw.get("status", "guaranteed")),
                lower_bound=_finite(d.get("lower_bound")),
                n_pos=_int(d.get("n_pos")),
                n_needed=_int(d.get("n_needed")),
            )
        return cls(**kw)


def guarantee_statement(points: Sequence["OperatingPoint"]) -> str:
    """The guarantees of ``points`` in one sentence for the card: their joint level, the family size and the
    per-finding level, the prevalence range of PPV/NPV rules and the bound ("" when no finding has a
    guarantee). E.g. "sensitivity/specificity rules hold jointly for 4 findings with 95% confidence
    (Bonferroni, 98.75% each); PPV/NPV at every prevalence in 0.05-0.2; patient-level bound (Bentkus 2004)"."""
    held = [p.guarantee for p in points if p.guarantee is not None and p.guaranteed]
    refused = [p.finding for p in points if p.guarantee is not None and not p.guaranteed]
    if not held and not refused:
        return ""
    parts = []
    if held:
        g = held[0]
        if g.legacy:
            parts.append(f"each finding's guarantee holds alone at its stated confidence (recorded before joint "
                         f"guarantees; not jointly: with {len(held)} findings all hold together less often)")  # fmt: skip
        elif g.joint:
            each = g.family_text.split("(", 1)[1].rstrip(")")
            parts.append(f"all {g.family_size} guaranteed findings hold jointly with {g.level:.0%} confidence ({each})")
        elif g.simultaneous:
            parts.append(f"one guaranteed finding, at {g.level:.0%} confidence")
        else:
            parts.append(f"each finding's guarantee holds alone at {g.level:.0%} (per finding, not jointly)")
        ranges = sorted({f"{h.prevalence[0]:g}-{h.prevalence[1]:g}" for h in held if h.prevalence is not None})
        if ranges:
            parts.append(f"PPV/NPV at every prevalence in {', '.join(ranges)}")
        methods = sorted({h.method for h in held if not h.legacy})
        if methods:
            words = {"clopper-pearson": "exact binomial (Clopper-Pearson, one image per patient)",
                     "bentkus-patient": "patient-level bound (Bentkus 2004)"}  # fmt: skip
            parts.append("method: " + ", ".join(words.get(m, m) for m in methods)
                         + "; fixed-sequence testing (Learn-then-Test, Angelopoulos et al. 2021)")  # fmt: skip
    if refused:
        parts.append(f"refused (too few patients or unreachable): {', '.join(refused)}")
    return "; ".join(parts)


def _json(v: Any) -> Any:
    """NaN/inf -> None (also inside lists)."""
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
