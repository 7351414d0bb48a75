"""The run contract: :class:`RunMetadata`, the typed content of a run folder's ``model.json``, and its records.

Every workflow reads and writes a run's self-description through this one dataclass: :func:`chestxr.runs.train`
builds it, :func:`chestxr.runs.save_model` writes it, :func:`chestxr.runs.read_metadata` / ``load_model`` parse
and validate it (one place, :meth:`RunMetadata.from_json`, with the CheckpointError messages users see), and
``calibrate`` / ``approve`` (:func:`chestxr.runs.update_metadata`) write new versions of it.

What it holds, each part typed: the model's identity (findings, mode, task, backbone, in_channels, dropout,
the weights' sha256), how to turn pixels into inputs (``preprocessing``) and labels into targets
(``label_policy``), the per-finding operating points (``thresholds``: :class:`chestxr.evaluation.OperatingPoint`,
each with its guarantee), the probability calibrator (:class:`chestxr.evaluation.ProbabilityCalibrator`), the
last calibration's :class:`CalibrationSummary` (with the :class:`CalibrationPlan` it applied), the current
:class:`Approval`, the resolved training config, the hashed training patients and their
:class:`PatientHashScheme`, versions, and the version history of the file itself (:class:`HistoryEntry`).

Two fields stay plain JSON on purpose: ``config`` is the resolved training config as the run wrote it (the
same document as config.yaml; the calibration rules in it are read typed by :meth:`RunMetadata.calibration_config`),
and ``extra`` keeps keys this version does not know, written back unchanged.

Old files still load: ``chestxr_version``/``torch_version`` at the top level (written beside ``versions``
before 0.2) are folded into ``versions``; a legacy bare-number threshold list maps to the findings in order;
records written before a field existed load with its default and are written back as they were.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from chestxr.core import (
    CalibrationConfig,
    CalibrationError,
    CheckpointError,
    ConfigError,
    LabelPolicy,
    PreprocessConfig,
    config_to_dict,
    fields_set,
    section_from_dict,
    to_jsonable,
    written_keys,
)
from chestxr.evaluation import NOT_CALIBRATED, UNCALIBRATED_RUN, OperatingPoint, ProbabilityCalibrator

FORMAT = "chestxr-model"
FORMAT_VERSION = 1
#: fields tied to the weights; update_metadata refuses to change them.
FROZEN_FIELDS = (
    "findings",
    "mode",
    "backbone",
    "in_channels",
    "dropout",
    "weights_sha256",
    "version",
    "history",
)
#: top-level keys of old files that are read but no longer written.
_LEGACY_KEYS = ("chestxr_version", "torch_version", "format", "format_version")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_or_none(v: Any) -> Optional[float]:
    """A finite float, or None for None/NaN/inf."""
    if v is None or not _is_number(v) or not math.isfinite(float(v)):
        return None
    return float(v)


def _int_or_none(v: Any) -> Optional[int]:
    return int(v) if _is_number(v) and math.isfinite(float(v)) else None


def _str_or_none(v: Any) -> Optional[str]:
    return None if v is None else str(v)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PatientHashScheme:
    """How ``training_patients_sha`` was hashed: ``scheme`` (hmac-sha256-v1), the ``key_file`` in the run
    folder and the ``key_id`` fingerprint of its key (see chestxr/runs/_patients.py)."""

    scheme: str
    key_file: str
    key_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "key_file": self.key_file, "key_id": self.key_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PatientHashScheme":
        return cls(str(d.get("scheme", "")), str(d.get("key_file", "")), _str_or_none(d.get("key_id")))


@dataclass(frozen=True)
class HistoryEntry:
    """One version of model.json: its number, why it was written, when (local time stamp), the fields changed."""

    version: int
    reason: str
    time: Optional[str] = None
    changed: Optional[list[str]] = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "reason": self.reason, "time": self.time}
        if self.changed is not None:
            out["changed"] = list(self.changed)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HistoryEntry":
        changed = d.get("changed")
        return cls(
            version=int(d.get("version") or 0),
            reason=str(d.get("reason") or ""),
            time=_str_or_none(d.get("time")),
            changed=None if changed is None else [str(c) for c in changed],
        )


@dataclass(frozen=True)
class ApprovedThreshold:
    """One finding's operating point as a reviewer approved it."""

    finding: str
    method: Optional[str]
    threshold: Optional[float]
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding, "method": self.method, "threshold": self.threshold, "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ApprovedThreshold":
        return cls(
            str(d.get("finding")),
            _str_or_none(d.get("method")),
            _number_or_none(d.get("threshold")),
            str(d.get("status")),
        )


@dataclass(frozen=True)
class Approval:
    """A reviewer's sign-off of the run as it stands (``chestxr approve``), bound by a keyed HMAC.

    binding_hmac_sha256: HMAC-SHA256 under the run's key (``patient_hash.key``, identified by ``key_id``) of
    everything that changes a call (:data:`chestxr.runs.BOUND_PARTS`); ``bound``: an unkeyed sha256 of each part
    (they say which part changed, never that nothing did); binding_scheme 2. Records written before issue 24 have
    only ``binding_sha256`` (an unkeyed sha256 of weights + thresholds + calibrator; scheme 1) and read as void.
    model_version: the model.json version the approval created; approved_thresholds_version: the version whose
    thresholds it approved; time: UTC, ISO 8601."""

    reviewer: str
    time: str
    model_version: int
    approved_thresholds_version: int
    weights_sha256: str
    binding_sha256: str = ""
    thresholds: list[ApprovedThreshold] = field(default_factory=list)
    note: Optional[str] = None
    binding_scheme: int = 1
    binding_hmac_sha256: str = ""
    key_id: Optional[str] = None
    bound: dict[str, str] = field(default_factory=dict)
    reference_profile_sha256: Optional[str] = None
    findings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reviewer": self.reviewer,
            "note": self.note,
            "time": self.time,
            "model_version": self.model_version,
            "approved_thresholds_version": self.approved_thresholds_version,
            "weights_sha256": self.weights_sha256,
        }
        if self.binding_sha256:  # a record of the old scheme keeps what it had
            out["binding_sha256"] = self.binding_sha256
        if self.binding_scheme >= 2:
            out.update(
                binding_scheme=self.binding_scheme,
                binding_hmac_sha256=self.binding_hmac_sha256,
                key_id=self.key_id,
                bound=dict(self.bound),
                reference_profile_sha256=self.reference_profile_sha256,
                findings=list(self.findings),
            )
        out["thresholds"] = [t.to_dict() for t in self.thresholds]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Approval":
        bound = d.get("bound")
        try:
            scheme = int(d.get("binding_scheme") or 1)
        except (TypeError, ValueError):
            scheme = 0  # unreadable: never a valid binding
        return cls(
            reviewer=str(d.get("reviewer") or ""),
            note=_str_or_none(d.get("note")),
            time=str(d.get("time") or ""),
            model_version=int(d.get("model_version") or 0),
            approved_thresholds_version=int(d.get("approved_thresholds_version") or 0),
            weights_sha256=str(d.get("weights_sha256") or ""),
            binding_sha256=str(d.get("binding_sha256") or ""),
            thresholds=[ApprovedThreshold.from_dict(t) for t in d.get("thresholds") or [] if isinstance(t, Mapping)],
            binding_scheme=scheme,
            binding_hmac_sha256=str(d.get("binding_hmac_sha256") or ""),
            key_id=_str_or_none(d.get("key_id")),
            bound={str(k): str(v) for k, v in bound.items()} if isinstance(bound, Mapping) else {},
            reference_profile_sha256=_str_or_none(d.get("reference_profile_sha256")),
            findings=[str(f) for f in d.get("findings") or [] if isinstance(f, str)],
        )


@dataclass(frozen=True)
class CalibrationPlan:
    """The rules ``calibrate`` applied: the run's own ``calibration`` config overridden by arguments.
    ``source`` says where each came from: "config" or "argument" (keys "method", "probability", "n_boot",
    "level", "simultaneous", "prevalence" and each finding of ``per_finding``). simultaneous: the guaranteed
    rules were made jointly (False in a plan recorded before issue 22: per finding); prevalence: the
    deployment range of ppv/npv rules (None: none given)."""

    method: str
    per_finding: dict[str, str]
    probability: Optional[str]
    n_boot: int
    level: float
    source: dict[str, str] = field(default_factory=dict)
    simultaneous: bool = False
    prevalence: Optional[tuple[float, float]] = None

    def spec(self) -> str | dict[str, str]:
        """What :func:`chestxr.evaluation.fit_thresholds` takes as ``method``."""
        return {"*": self.method, **self.per_finding} if self.per_finding else self.method

    def describe(self) -> str:
        """One line for the CLI: the default rule and each per-finding rule, with its source."""
        parts = [f"default {self.method} ({self.source.get('method', 'config')})"]
        parts += [f"{f}={r} ({self.source.get(f, 'config')})" for f, r in self.per_finding.items()]
        if self.probability:
            parts.append(f"probability {self.probability} ({self.source.get('probability', 'config')})")
        joint = "guarantees jointly (simultaneous)" if self.simultaneous else "guarantees per finding"
        parts.append(f"{joint} ({self.source.get('simultaneous', 'config')})")
        if self.prevalence is not None:
            lo, hi = self.prevalence
            parts.append(f"prevalence {lo:g}-{hi:g} ({self.source.get('prevalence', 'config')})")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "per_finding": dict(self.per_finding),
            "probability": self.probability,
            "n_boot": self.n_boot,
            "level": self.level,
            "source": dict(self.source),
            "simultaneous": self.simultaneous,
            "prevalence": list(self.prevalence) if self.prevalence is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationPlan":
        return cls(
            method=str(d.get("method") or ""),
            per_finding={str(k): str(v) for k, v in (d.get("per_finding") or {}).items()},
            probability=_str_or_none(d.get("probability")),
            n_boot=int(d.get("n_boot") or 0),
            level=float(d.get("level") or 0.0),
            source={str(k): str(v) for k, v in (d.get("source") or {}).items()},
            simultaneous=bool(d.get("simultaneous", False)),
            prevalence=_range_or_none(d.get("prevalence")),
        )


def _range_or_none(v: Any) -> Optional[tuple[float, float]]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_number(x) for x in v):
        return None
    return (float(v[0]), float(v[1]))


@dataclass(frozen=True)
class CalibrationSummary:
    """What the last ``calibrate`` did (model.json ``calibration``; thresholds.json holds the same fields).

    run, manifest, split, manifest_hash: the data it calibrated on; n_images / n_skipped / n_patients: what
    was scored; ci_level, confidence, interval_method, n_boot: the statistics; training_patient_overlap (None:
    unknown) and its text; forced: calibrated on training patients with --force; probability_calibration: the
    calibrator's method (None: none); kept_previous: findings whose previous threshold was kept (no usable
    labels); rules: the :class:`CalibrationPlan` applied; guarantee_family: the family the guaranteed rules
    were made in (members, size, joint confidence, per-finding level, simultaneous, excluded, text; None when
    no finding had a guaranteed rule or before issue 22). Written back with the keys it was read with."""

    run: Optional[str] = None
    manifest: Optional[str] = None
    split: Optional[str] = None
    manifest_hash: Optional[str] = None
    n_images: Optional[int] = None
    n_skipped: Optional[int] = None
    n_patients: Optional[int] = None
    ci_level: Optional[float] = None
    confidence: Optional[float] = None
    interval_method: Optional[str] = None
    n_boot: Optional[int] = None
    training_patient_overlap: Optional[int] = None
    training_patient_overlap_text: Optional[str] = None
    forced: Optional[bool] = None
    probability_calibration: Optional[str] = None
    kept_previous: Optional[list[str]] = None
    rules: Optional[CalibrationPlan] = None
    guarantee_family: Optional[dict[str, Any]] = None
    present: Optional[tuple[str, ...]] = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        full = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "present"}
        full["rules"] = self.rules.to_dict() if self.rules is not None else None
        return written_keys(to_jsonable(full), self.present, fields_set(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationSummary":
        names = {f.name for f in dataclasses.fields(cls)} - {"rules", "present"}
        kw: dict[str, Any] = {k: d[k] for k in names if k in d}
        for k in ("n_images", "n_skipped", "n_patients", "n_boot", "training_patient_overlap"):
            if k in kw:
                kw[k] = _int_or_none(kw[k])
        for k in ("ci_level", "confidence"):
            if k in kw:
                kw[k] = _number_or_none(kw[k])
        for k in ("run", "manifest", "split", "manifest_hash", "interval_method", "probability_calibration"):
            if k in kw:
                kw[k] = _str_or_none(kw[k])
        if "training_patient_overlap_text" in kw:
            kw["training_patient_overlap_text"] = _str_or_none(kw["training_patient_overlap_text"])
        if "forced" in kw:
            kw["forced"] = None if kw["forced"] is None else bool(kw["forced"])
        if kw.get("kept_previous") is not None:
            kw["kept_previous"] = [str(x) for x in kw["kept_previous"]]
        if not isinstance(kw.get("guarantee_family"), Mapping):
            kw.pop("guarantee_family", None)
        rules = d.get("rules")
        if isinstance(rules, Mapping):
            kw["rules"] = CalibrationPlan.from_dict(rules)
        return cls(**kw, present=tuple(d))


@dataclass(frozen=True)
class CalibrationResult:
    """What ``calibrate`` wrote, the content of RUN/thresholds.json: the :class:`CalibrationSummary`, one
    :class:`chestxr.evaluation.OperatingPoint` per finding, and the model.json version written with it."""

    summary: CalibrationSummary
    thresholds: list[OperatingPoint]
    model_version: Optional[int] = None

    def threshold_for(self, finding: str) -> Optional[OperatingPoint]:
        return next((p for p in self.thresholds if p.finding == finding), None)

    def to_json(self) -> dict[str, Any]:
        """The thresholds.json document: the summary's keys, ``thresholds`` (records), ``model_version``."""
        doc = self.summary.to_dict()
        doc["thresholds"] = [p.to_dict() for p in self.thresholds]
        if self.model_version is not None:
            doc["model_version"] = self.model_version
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str | Path) -> "CalibrationResult":
        """Parse a thresholds.json document; CheckpointError naming ``where`` when it is not one."""
        records = doc.get("thresholds")
        if not isinstance(records, list) or not all(isinstance(r, Mapping) and "finding" in r for r in records):
            raise CheckpointError(f"{where}: 'thresholds' must be a list of records with a 'finding'")
        summary = CalibrationSummary.from_dict(
            {k: v for k, v in doc.items() if k not in ("thresholds", "model_version")}
        )
        return cls(summary, [OperatingPoint.from_dict(r) for r in records], _int_or_none(doc.get("model_version")))


# ----------------------------------------------------------------------------- model.json


@dataclass
class RunMetadata:
    """The typed ``model.json`` of a run folder (see the module docstring for what each part is).

    ``preprocessing``/``label_policy`` are the training config's sections (None only for models saved by hand
    without them); ``thresholds`` None: never calibrated; ``approval`` None: not approved (earlier approvals
    are in model.vN.json). ``training_patients_sha`` are keyed hashes described by ``patient_hash`` (None for
    runs hashed with the old fixed salt), see chestxr/runs/_patients.py.
    """

    findings: list[str]
    backbone: str
    mode: str
    task: str = "multilabel"
    in_channels: int = 3
    dropout: float = 0.0
    preprocessing: Optional[PreprocessConfig] = None
    label_policy: Optional[LabelPolicy] = None
    thresholds: Optional[list[OperatingPoint]] = None
    probability_calibration: Optional[ProbabilityCalibrator] = None
    calibration: Optional[CalibrationSummary] = None
    approval: Optional[Approval] = None
    config: Optional[dict[str, Any]] = None
    training_patients_sha: list[str] = field(default_factory=list)
    patient_hash: Optional[PatientHashScheme] = None
    training_manifest_hash: Optional[str] = None
    best_epoch: Optional[int] = None
    best_val_mean_auroc: Optional[float] = None
    best_val_auroc_per_finding: Optional[list[Optional[float]]] = None
    versions: dict[str, str] = field(default_factory=dict)
    created: Optional[str] = None
    weights_sha256: Optional[str] = None
    version: int = 1
    history: list[HistoryEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views

    @property
    def n_findings(self) -> int:
        return len(self.findings)

    @property
    def seed(self) -> int:
        """The training seed (0 when the config is not stored)."""
        return int((self.config or {}).get("seed", 0) or 0)

    def calibration_config(self, where: str | Path = "model.json") -> CalibrationConfig:
        """The ``calibration`` section of the stored training config (defaults for runs without one);
        CheckpointError naming ``where`` when it is invalid."""
        section = (self.config or {}).get("calibration") or {}
        if not isinstance(section, Mapping):
            raise CheckpointError(f"{where}: config.calibration must be a JSON object, got {section!r:.60}")
        try:
            return section_from_dict(CalibrationConfig, section, "config.calibration")
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid {exc}") from None

    def threshold_for(self, finding: str) -> Optional[OperatingPoint]:
        for rec in self.thresholds or []:
            if rec.finding == finding:
                return rec
        return None

    def operating_points(self) -> list[OperatingPoint]:
        """One operating point per finding, in finding order, the run decides with.

        One rule everywhere: in a calibrated run, a finding without a finite stored threshold (calibration
        refused it or had no usable labels, or no record) has a NaN threshold, which calls nothing and is shown
        as "not calibrated" (never replaced by 0.5). Only a run that was never calibrated (``thresholds``
        None/empty) uses 0.5 (logit 0) for every finding, as a ``fixed:0.5`` point noted UNCALIBRATED_RUN."""
        if not self.thresholds:
            return [OperatingPoint(f, method="fixed:0.5", threshold=0.5, note=UNCALIBRATED_RUN) for f in self.findings]
        return [self.threshold_for(f) or OperatingPoint(f, status="undefined", note="no record") for f in self.findings]

    def decision_thresholds(self) -> list[float]:
        """(f,) probability thresholds in finding order (see :meth:`operating_points`; NaN: calls nothing)."""
        return [p.threshold if p.calibrated else math.nan for p in self.operating_points()]

    def threshold_status(self) -> list[str]:
        """Per finding: "calibrated", NOT_CALIBRATED (NaN threshold: calls nothing) or, for a run never
        calibrated, UNCALIBRATED_RUN (the 0.5 default)."""
        if not self.thresholds:
            return [UNCALIBRATED_RUN] * len(self.findings)
        return [NOT_CALIBRATED if math.isnan(t) else "calibrated" for t in self.decision_thresholds()]

    # ------------------------------------------------------------------ (de)serialisation

    def to_json(self) -> dict[str, Any]:
        """The model.json document (JSON-able; NaN -> null)."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = _json_value(getattr(self, f.name))
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return to_jsonable(out)

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> RunMetadata:
        """Parse and validate a model.json document; ``where`` (its path) prefixes every error.

        Raises CheckpointError: not an object, missing findings/backbone/mode, wrong JSON types, invalid
        preprocessing, label policy or probability calibrator, or written by a newer format.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object at the top level")
        missing = [k for k in ("findings", "backbone", "mode") if k not in data]
        if missing:
            raise CheckpointError(f"{where}: missing key(s) {missing}")
        _check_types(where, data)
        fmt_version = data.get("format_version", 1)
        if int(fmt_version) > FORMAT_VERSION:
            raise CheckpointError(f"{where}: written by a newer chestxr (format {fmt_version}); upgrade")
        if data.get("format", FORMAT) != FORMAT:
            raise CheckpointError(
                f"{where}: 'format' is {data['format']!r:.40}, not {FORMAT!r}; not a chestxr model.json"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw: dict[str, Any] = {k: data[k] for k in names if k in data and data[k] is not None}
        kw["findings"] = list(data["findings"])
        kw["preprocessing"] = _section(PreprocessConfig, data.get("preprocessing"), where, "preprocessing")
        in_channels = kw.get("in_channels", 3)
        if kw["preprocessing"] is not None and kw["preprocessing"].channels != in_channels:
            raise CheckpointError(
                f"{where}: preprocessing.channels is {kw['preprocessing'].channels} but the model takes "
                f"{in_channels} input channel(s) (in_channels); model.json was edited: restore it"
            )
        kw["label_policy"] = _section(LabelPolicy, data.get("label_policy"), where, "label_policy")
        kw["thresholds"] = _thresholds(data.get("thresholds"), kw["findings"])
        kw["probability_calibration"] = _calibrator(data.get("probability_calibration"), where)
        if data.get("calibration") is not None:
            kw["calibration"] = CalibrationSummary.from_dict(data["calibration"])
        if data.get("approval") is not None:
            kw["approval"] = Approval.from_dict(data["approval"])
        if data.get("patient_hash") is not None:
            kw["patient_hash"] = PatientHashScheme.from_dict(data["patient_hash"])
        versions = dict(data.get("versions") or {})
        for key, name in (("chestxr_version", "chestxr"), ("torch_version", "torch")):
            if data.get(key) and name not in versions:
                versions[name] = data[key]
        kw["versions"] = versions
        kw["dropout"] = float(data.get("dropout", 0.0))
        kw["history"] = [HistoryEntry.from_dict(h) for h in data.get("history") or []]
        kw["training_patients_sha"] = list(data.get("training_patients_sha") or [])
        extra = {k: v for k, v in data.items() if k not in names and k not in _LEGACY_KEYS}
        return cls(**kw, extra=extra)

    def replace(self, **changes: Any) -> RunMetadata:
        """A copy with ``changes`` applied (field names; values typed or in their JSON form), validated."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise CheckpointError(f"RunMetadata: unknown field(s) {unknown}")
        doc = {**self.to_json(), **{k: _json_value(v) for k, v in changes.items()}}
        return RunMetadata.from_json(doc, "RunMetadata")


def _json_value(v: Any) -> Any:
    """A field's JSON form: records by their ``to_dict``, config sections as dicts, the rest as is."""
    if isinstance(v, (OperatingPoint, ProbabilityCalibrator, CalibrationSummary, Approval, PatientHashScheme)):
        return v.to_dict()
    if isinstance(v, HistoryEntry):
        return v.to_dict()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return to_jsonable(v)


def _section(cls: type, value: Any, where: str | Path, key: str) -> Any:
    if value is None:
        return None
    try:
        return section_from_dict(cls, value, key)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: invalid {key}: {exc}") from None


def _calibrator(value: Any, where: str | Path) -> Optional[ProbabilityCalibrator]:
    if value is None:
        return None
    try:
        return ProbabilityCalibrator.from_dict(value)
    except (CalibrationError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: invalid probability_calibration: {exc}") from None


def _thresholds(value: Any, findings: list[str]) -> Optional[list[OperatingPoint]]:
    if value is None:
        return None
    out = []
    for j, r in enumerate(value):
        if isinstance(r, dict):
            out.append(OperatingPoint.from_dict(r))
        elif j < len(findings):  # a legacy bare list of numbers, in finding order
            t = _number_or_none(r)
            out.append(
                OperatingPoint(findings[j], threshold=math.nan if t is None else t, present=("finding", "threshold"))
            )
    return out


def _check_types(path: str | Path, meta: dict[str, Any]) -> None:
    """Refuse a model.json whose fields have the wrong JSON types (hand-edited or crafted file)."""

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: {key!r} must be {expected}, got {meta[key]!r:.80}; the file was edited or is not a chestxr model.json"
        )

    findings = meta["findings"]
    if not (isinstance(findings, list) and findings and all(isinstance(f, str) and f for f in findings)):
        raise bad("findings", "a non-empty list of finding names")
    if len(set(findings)) != len(findings):
        raise bad("findings", "a list of distinct names")
    for key in ("backbone", "mode"):
        if not isinstance(meta[key], str):
            raise bad(key, "a string")
    for key in ("in_channels", "format_version", "version"):
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], int)):
            raise bad(key, "an integer")
    if "dropout" in meta and not _is_number(meta["dropout"]):
        raise bad("dropout", "a number")
    if meta.get("preprocessing") is not None and not isinstance(meta["preprocessing"], dict):
        raise bad("preprocessing", "a JSON object")
    for key in (
        "label_policy",
        "probability_calibration",
        "config",
        "calibration",
        "approval",
        "versions",
        "patient_hash",
    ):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(key, "a JSON object or null")
    for key in ("task", "weights_sha256", "created", "training_manifest_hash"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "a string or null")
    for key in ("history", "training_patients_sha"):
        if meta.get(key) is not None and not isinstance(meta[key], list):
            raise bad(key, "a list")
    if meta.get("history") and not all(isinstance(h, dict) for h in meta["history"]):
        raise bad("history", "a list of JSON objects")

    def number_or_null(v: Any) -> bool:
        return v is None or _is_number(v)

    thresholds = meta.get("thresholds")
    if thresholds is not None:
        ok = isinstance(thresholds, list) and all(
            number_or_null(r)
            or (
                isinstance(r, dict)
                and isinstance(r.get("finding"), str)
                and number_or_null(r.get("threshold"))
                and (r.get("method") is None or isinstance(r["method"], str))
                and (r.get("guarantee") is None or isinstance(r["guarantee"], (dict, bool)))
            )
            for r in thresholds
        )
        if not ok:
            raise bad("thresholds", 'null or a list of {"finding": name, "threshold": number or null}')
        for r in thresholds:  # a probability threshold outside [0, 1] calls a finding always or never
            t = r.get("threshold") if isinstance(r, dict) else r
            if t is not None and math.isfinite(float(t)) and not 0.0 <= float(t) <= 1.0:
                name = r.get("finding") if isinstance(r, dict) else "?"
                raise CheckpointError(
                    f"{path}: threshold of {name!r} is {t!r}, outside [0, 1] (a probability threshold); the file "
                    "was edited by hand: recalibrate with `chestxr calibrate` or restore model.vN.json"
                )
