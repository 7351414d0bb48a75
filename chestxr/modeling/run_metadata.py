"""The run contract: :class:`RunMetadata`, the typed content of a run folder's ``model.json``.

Every workflow reads and writes a run's self-description through this one dataclass:
``training.train`` builds it, :func:`chestxr.modeling.checkpoint.save_model` writes it,
:func:`~chestxr.modeling.checkpoint.read_metadata` / ``load_model`` parse and validate it (one
place, :meth:`RunMetadata.from_json`, with the CheckpointError messages users see), and
``calibrate`` (``update_metadata``) writes new versions of it. It lives in ``modeling`` because
the training loop writes it; ``runs`` (calibrate/evaluate/predict/export) imports it from here.

What it holds: the model's identity (findings, mode, task, backbone, in_channels, dropout, the
weights' sha256), how to turn pixels into inputs (``preprocessing``) and labels into targets
(``label_policy``), the per-finding operating points (``thresholds``: :class:`ThresholdRecord`,
with the guarantee each one carries), the probability calibrator (its ``to_dict`` form),
the last calibration's summary, an approval record, the resolved training config, hashed training
patients, versions, and the version history of the file itself.

Old files still load: ``chestxr_version``/``torch_version`` at the top level (written beside
``versions`` before 0.2) are folded into ``versions``; a legacy bare-number threshold list maps to
the findings in order; keys this version does not know are kept in ``extra`` and written back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from chestxr.core.config import LabelPolicy, PreprocessConfig, config_to_dict, section_from_dict
from chestxr.core.errors import CheckpointError, ConfigError
from chestxr.core.fileio import to_jsonable

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


#: what every report and CSV shows for a finding whose threshold is NaN (it calls nothing)
NOT_CALIBRATED = "not calibrated"
#: the status of every finding of a run that was never calibrated (0.5 default, logit 0)
UNCALIBRATED_RUN = "uncalibrated run (default 0.5)"


@dataclass
class ThresholdRecord:
    """One finding's operating point: probability ``threshold`` (None: refused / not defined) by ``method``.

    ``stats`` holds everything else calibration recorded there, flat as thresholds.json has it
    (:meth:`chestxr.evaluation.thresholds.ThresholdFit.to_dict`): ``status``, ``guaranteed``,
    ``target``, ``confidence``, ``lower_bound``, ``n_pos``, ``n_neg``, ``n_needed``, ``note``, the rates
    with their ``*_ci`` intervals, counts, ece..., and ``guarantee``: for a guaranteed rule the nested
    record {method, metric, target, level, status, lower_bound, n_pos, n_needed}, else None. The
    properties read these typed; a record from before guarantees existed reads as status
    "not_a_guarantee", not guaranteed, no guarantee record.
    """

    finding: str
    threshold: Optional[float] = None
    method: Optional[str] = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def guarantee(self) -> Optional[dict[str, Any]]:
        """The guarantee record of a guaranteed rule (whatever its outcome), else None."""
        g = self.stats.get("guarantee")
        return dict(g) if isinstance(g, Mapping) else None

    def _get(self, key: str) -> Any:
        g = self.guarantee or {}
        return self.stats[key] if key in self.stats else g.get(key)

    @property
    def status(self) -> str:
        return str(self._get("status") or "not_a_guarantee")

    @property
    def guaranteed(self) -> bool:
        """True when the lower confidence bound reaches the target (the promise is a guarantee)."""
        return self.stats.get("guaranteed") is True or self.stats.get("guarantee") is True

    @property
    def lower_bound(self) -> Optional[float]:
        return _number_or_none(self._get("lower_bound"))

    @property
    def target(self) -> Optional[float]:
        return _number_or_none(self._get("target"))

    @property
    def n_pos(self) -> Optional[int]:
        v = self._get("n_pos")
        return int(v) if _is_number(v) else None

    @property
    def n_needed(self) -> Optional[int]:
        v = self._get("n_needed")
        return int(v) if _is_number(v) else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"finding": self.finding}
        if self.method is not None:
            out["method"] = self.method
        out["threshold"] = self.threshold
        out.update(self.stats)
        return to_jsonable(out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThresholdRecord:
        rest = {k: v for k, v in d.items() if k not in ("finding", "threshold", "method")}
        return cls(
            finding=str(d["finding"]),
            threshold=_number_or_none(d.get("threshold")),
            method=d.get("method"),
            stats=rest,
        )


@dataclass
class RunMetadata:
    """The typed ``model.json`` of a run folder (see the module docstring for what each part is).

    ``preprocessing``/``label_policy`` are the training config's sections (None only for models saved
    by hand without them); ``probability_calibration`` is ``ProbabilityCalibrator.to_dict()``;
    ``calibration`` the summary of the last ``calibrate`` (manifest, split, counts, training-patient
    overlap); ``approval`` the current sign-off record (None: not approved), earlier ones in ``history``.
    ``training_patients_sha`` are keyed hashes described by ``patient_hash`` ({scheme, key_file, key_id};
    None for runs hashed with the old fixed salt), see :mod:`chestxr.core.patient_ids`.
    """

    findings: list[str]
    backbone: str
    mode: str
    task: str = "multilabel"
    in_channels: int = 3
    dropout: float = 0.0
    preprocessing: Optional[PreprocessConfig] = None
    label_policy: Optional[LabelPolicy] = None
    thresholds: Optional[list[ThresholdRecord]] = None
    probability_calibration: Optional[dict[str, Any]] = None
    calibration: Optional[dict[str, Any]] = None
    approval: Optional[dict[str, Any]] = None
    config: Optional[dict[str, Any]] = None
    training_patients_sha: list[str] = field(default_factory=list)
    patient_hash: Optional[dict[str, Any]] = None
    training_manifest_hash: Optional[str] = None
    best_epoch: Optional[int] = None
    best_val_mean_auroc: Optional[float] = None
    best_val_auroc_per_finding: Optional[list[Optional[float]]] = None
    versions: dict[str, str] = field(default_factory=dict)
    created: Optional[str] = None
    weights_sha256: Optional[str] = None
    version: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views

    @property
    def n_findings(self) -> int:
        return len(self.findings)

    @property
    def seed(self) -> int:
        """The training seed (0 when the config is not stored)."""
        return int((self.config or {}).get("seed", 0) or 0)

    def threshold_for(self, finding: str) -> Optional[ThresholdRecord]:
        for rec in self.thresholds or []:
            if rec.finding == finding:
                return rec
        return None

    def decision_thresholds(self) -> list[float]:
        """(f,) probability thresholds in finding order.

        One rule everywhere: in a calibrated run, a finding without a finite stored threshold
        (calibration refused it or had no usable labels, or no record) is NaN, which calls nothing
        and is shown as "not calibrated" (never replaced by 0.5). Only a run that was never
        calibrated (``thresholds`` None/empty) uses 0.5 (logit 0) for every finding."""
        if not self.thresholds:
            return [0.5] * len(self.findings)
        out = []
        for f in self.findings:
            rec = self.threshold_for(f)
            t = rec.threshold if rec is not None else None
            out.append(float(t) if isinstance(t, (int, float)) and math.isfinite(t) else math.nan)
        return out

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
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name in ("preprocessing", "label_policy") and v is not None:
                v = config_to_dict(v)
            elif f.name == "thresholds" and v is not None:
                v = [r.to_dict() for r in v]
            out[f.name] = v
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return to_jsonable(out)

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> RunMetadata:
        """Parse and validate a model.json document; ``where`` (its path) prefixes every error.

        Raises CheckpointError: not an object, missing findings/backbone/mode, wrong JSON types,
        invalid preprocessing or label policy, or written by a newer format.
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
        kw["label_policy"] = _section(LabelPolicy, data.get("label_policy"), where, "label_policy")
        kw["thresholds"] = _thresholds(data.get("thresholds"), kw["findings"])
        versions = dict(data.get("versions") or {})
        for key, name in (("chestxr_version", "chestxr"), ("torch_version", "torch")):
            if data.get(key) and name not in versions:
                versions[name] = data[key]
        kw["versions"] = versions
        kw["dropout"] = float(data.get("dropout", 0.0))
        kw["history"] = list(data.get("history") or [])
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
    if isinstance(v, ThresholdRecord):
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


def _thresholds(value: Any, findings: list[str]) -> Optional[list[ThresholdRecord]]:
    if value is None:
        return None
    out = []
    for j, r in enumerate(value):
        if isinstance(r, dict):
            out.append(ThresholdRecord.from_dict(r))
        elif j < len(findings):  # a legacy bare list of numbers, in finding order
            out.append(ThresholdRecord(finding=findings[j], threshold=_number_or_none(r)))
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
