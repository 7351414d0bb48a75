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
from typing import Any, Mapping, Optional

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
    """A one-sided guarantee asked of an operating point: P(true ``metric`` >= ``target``) >= ``level``, by a
    ``method`` lower bound (Clopper-Pearson, on effective counts by patient) on the calibration data.

    status: "guaranteed" (the bound reached the target at the chosen threshold), "insufficient_data" (fewer
    than ``n_needed`` samples of the relevant class: no threshold) or "unreachable" (no threshold reaches it).
    lower_bound: the bound at the chosen threshold (None when refused); n_pos: positives it was fitted on;
    n_needed: samples of the relevant class a guarantee at ``level`` needs at all.
    Fields added later (with defaults) are read and written by :meth:`to_dict` / :meth:`from_dict` unchanged.
    """

    metric: str
    target: float
    level: float
    method: str = "clopper-pearson"
    status: str = "guaranteed"
    lower_bound: Optional[float] = None
    n_pos: Optional[int] = None
    n_needed: Optional[int] = None

    @property
    def met(self) -> bool:
        """True when the calibration data met the bound (a threshold was chosen under it)."""
        return self.status == "guaranteed"

    def describe(self) -> str:
        """One sentence: the promise and its outcome ("sensitivity >= 0.90 with 95% confidence (one-sided
        Clopper-Pearson bound 0.912)"; a refusal says why in the operating point's note)."""
        what = f"{self.metric} >= {self.target:.2f} with {self.level:.0%} confidence"
        if not self.met:
            return f"{what}: not met ({self.status}; n_pos {self.n_pos}, n_needed {self.n_needed})"
        bound = "-" if self.lower_bound is None else f"{self.lower_bound:.3f}"
        return f"{what} (one-sided {_method_name(self.method)} bound {bound})"

    def summary(self, limit: int = 64) -> str:
        """At most ``limit`` characters, status first (an SR code meaning):
        "guaranteed: sensitivity >= 0.9, bound 0.912 (95% one-sided)"."""
        text = f"{self.status or 'status unknown'}: {self.metric} >= {self.target:g}"
        if self.lower_bound is not None:
            text += f", bound {self.lower_bound:.3f}"
        text += f" ({self.level:.0%} one-sided)"
        if self.method and len(text) + len(self.method) + 1 <= limit:
            text += f" {self.method}"
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def code(self) -> str:
        """An SR code value: MET, INSUFFICIENT, UNREACHABLE, UNDEFINED or UNKNOWN."""
        return _CODES.get(str(self.status or "").lower(), "UNKNOWN")

    def to_dict(self) -> dict[str, Any]:
        """The nested ``guarantee`` record of thresholds.json / model.json (NaN written as None)."""
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Guarantee":
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        convert = {"target": _float, "level": _float, "lower_bound": _finite, "n_pos": _int, "n_needed": _int}
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kw[f.name] = convert.get(f.name, lambda v: v)(d[f.name])
        kw.setdefault("metric", "?")
        kw.setdefault("target", math.nan)
        kw.setdefault("level", math.nan)
        return cls(**kw)


def _method_name(method: str) -> str:
    return {"clopper-pearson": "Clopper-Pearson", "wilson": "Wilson"}.get(method, method)


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


def _json(v: Any) -> Any:
    """NaN/inf -> None (also inside lists)."""
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
