"""Which rules ``calibrate`` applies: the run's own ``calibration`` config, overridden by arguments.

A run folder stores its resolved training config (``model.json`` ``config``), including the
``calibration`` section of the preset it was trained with, e.g. configs/nih14-densenet121.yaml::

    calibration:
      method: youden
      per_finding:
        Pneumothorax: "sensitivity:0.9"

:func:`plan_calibration` merges that with what the caller passed (``chestxr calibrate`` flags):
``method`` replaces the default rule; ``per_finding`` rules replace or add to the config's, finding by
finding (names matched with aliases); ``probability`` ("none" switches a configured calibrator off),
``n_boot`` and ``level`` replace the config's values. ``None`` means "not given": the config decides.
Config rules for findings the run does not have (a preset's 14 findings, a run trained on fewer) are
dropped with a warning; a rule given explicitly for an unknown finding is an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from chestxr.core.config import CalibrationConfig, section_from_dict
from chestxr.core.errors import CalibrationError, CheckpointError, ConfigError
from chestxr.data.findings import match_findings
from chestxr.modeling.run_metadata import RunMetadata

PROBABILITY_METHODS = ("temperature", "platt", "isotonic")


@dataclass(frozen=True)
class CalibrationPlan:
    """The resolved rules. ``source`` says where each came from: "config" or "argument"
    (keys "method", "probability", "n_boot", "level" and each finding of ``per_finding``)."""

    method: str
    per_finding: dict[str, str]
    probability: Optional[str]
    n_boot: int
    level: float
    source: dict[str, str] = field(default_factory=dict)

    def spec(self) -> str | dict[str, str]:
        """What :func:`chestxr.evaluation.thresholds.fit_thresholds` takes as ``method``."""
        return {"*": self.method, **self.per_finding} if self.per_finding else self.method

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "per_finding": dict(self.per_finding),
            "probability": self.probability,
            "n_boot": self.n_boot,
            "level": self.level,
            "source": dict(self.source),
        }

    def describe(self) -> str:
        """One line for the CLI: the default rule and each per-finding rule, with its source."""
        parts = [f"default {self.method} ({self.source.get('method', 'config')})"]
        parts += [f"{f}={r} ({self.source.get(f, 'config')})" for f, r in self.per_finding.items()]
        if self.probability:
            parts.append(f"probability {self.probability} ({self.source.get('probability', 'config')})")
        return ", ".join(parts)


def run_calibration_config(meta: RunMetadata, where: str | Path) -> CalibrationConfig:
    """The ``calibration`` section of the run's stored config (defaults for runs without one)."""
    section = (meta.config or {}).get("calibration") or {}
    if not isinstance(section, Mapping):
        raise CheckpointError(f"{where}: config.calibration must be a JSON object, got {section!r:.60}")
    try:
        return section_from_dict(CalibrationConfig, section, "config.calibration")
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: invalid {exc}") from None


def _match(findings: list[str], rules: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Rules keyed by the run's own finding names (aliases resolved); names that match nothing."""
    matched = match_findings(findings, list(rules))
    out, unknown = {}, []
    for name, rule in rules.items():
        col = matched[name]
        if col is None:
            unknown.append(name)
        else:
            out[col] = rule
    return out, unknown


def plan_calibration(
    meta: RunMetadata,
    where: str | Path,
    *,
    method: Optional[str] = None,
    per_finding: Optional[Mapping[str, str]] = None,
    probability: Optional[str] = None,
    n_boot: Optional[int] = None,
    level: Optional[float] = None,
) -> CalibrationPlan:
    """Merge the run's calibration config with the given overrides (None: not given)."""
    cfg = run_calibration_config(meta, where)
    findings = list(meta.findings)
    source: dict[str, str] = {}
    from_config, unknown_cfg = _match(findings, cfg.per_finding)
    if unknown_cfg:
        warnings.warn(
            f"{where}: the run's calibration config has rules for {unknown_cfg}, which the model does not "
            f"predict (findings {findings}); they are not used",
            stacklevel=3,
        )
    rules = dict(from_config)
    source.update({f: "config" for f in from_config})
    given, unknown = _match(findings, per_finding or {})
    if unknown:
        raise CalibrationError(f"rules given for unknown findings {unknown}; the model predicts {findings}")
    rules.update(given)
    source.update({f: "argument" for f in given})
    source["method"] = "argument" if method is not None else "config"
    if probability is not None:
        chosen: Optional[str] = None if probability == "none" else probability
        source["probability"] = "argument"
    else:
        chosen, source["probability"] = cfg.probability, "config"
    if chosen is not None and chosen not in PROBABILITY_METHODS:
        raise CalibrationError(
            f"probability calibration must be one of {list(PROBABILITY_METHODS)} or none, got {chosen!r}"
        )
    source["n_boot"] = "argument" if n_boot is not None else "config"
    source["level"] = "argument" if level is not None else "config"
    return CalibrationPlan(
        method=method if method is not None else cfg.method,
        per_finding={f: rules[f] for f in findings if f in rules},
        probability=chosen,
        n_boot=int(n_boot if n_boot is not None else cfg.n_bootstrap),
        level=float(level if level is not None else cfg.ci_level),
        source=source,
    )
