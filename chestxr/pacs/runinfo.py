"""What a run's metadata says about its thresholds, their guarantees and their approval, read tolerantly.

model.json's per-finding threshold records (``calibrate``) may carry a guarantee (a one-sided confidence
bound on sensitivity/specificity/PPV/NPV and whether it was met) and the run may carry an approval record
(who signed the thresholds off). Older runs lack both: they read as "no guarantee" / "not approved".
The SR and the listener's results state exactly this, never more than the run holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class ThresholdInfo:
    """One finding's stored operating point: ``threshold`` (0.5 when none was calibrated), how it was
    chosen, and its guarantee (method, status, one-sided lower bound, level) when the run holds one."""

    finding: str
    threshold: float
    calibrated: bool
    method: Optional[str] = None
    guarantee_method: Optional[str] = None
    guarantee_status: Optional[str] = None
    lower_bound: Optional[float] = None
    level: Optional[float] = None

    @property
    def guarantee_text(self) -> str:
        """A short line for people, status first: "met: sensitivity Clopper-Pearson, bound 0.812, 95%
        one-sided" ("no guarantee" when the run has none)."""
        if not self.guarantee_method:
            return "no guarantee"
        parts = [f"{self.guarantee_status or 'status unknown'}: {self.guarantee_method}"]
        if self.lower_bound is not None:
            parts.append(f"bound {self.lower_bound:.3f}")
        if self.level is not None:
            parts.append(f"{self.level:.0%} one-sided")
        return ", ".join(parts)

    @property
    def guarantee_code(self) -> str:
        """MET / NOT-MET / NONE / UNKNOWN (an SR code value)."""
        if not self.guarantee_method:
            return "NONE"
        status = (self.guarantee_status or "").strip().lower().replace("_", " ")
        return {"met": "MET", "not met": "NOT-MET", "failed": "NOT-MET"}.get(status, "UNKNOWN")


@dataclass(frozen=True)
class ApprovalInfo:
    """Whether the run's thresholds were approved (signed off), by whom and when, as the run records it."""

    status: str  # "approved" | "not approved" | whatever the record says
    by: Optional[str] = None
    time: Optional[str] = None

    @property
    def approved(self) -> bool:
        return self.status.lower() == "approved"


def _number(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _get(meta: Any, key: str) -> Any:
    """``meta[key]`` for a dict, ``meta.key`` for a typed metadata object (RunMetadata), else None."""
    if isinstance(meta, Mapping):
        return meta.get(key)
    return getattr(meta, key, None)


def threshold_infos(meta: Any) -> list[ThresholdInfo]:
    """One :class:`ThresholdInfo` per finding of ``meta`` (model.json as a dict or a typed object)."""
    findings = list(_get(meta, "findings") or [])
    records = {}
    for rec in _get(meta, "thresholds") or []:
        rec = rec if isinstance(rec, Mapping) else getattr(rec, "__dict__", {})
        if rec.get("finding") is not None:
            records[str(rec["finding"])] = rec
    out = []
    for finding in findings:
        rec = records.get(finding, {})
        thr = _number(rec.get("threshold"))
        g = rec.get("guarantee")
        g = g if isinstance(g, Mapping) else getattr(g, "__dict__", None) or {}
        method = g.get("method") or rec.get("guarantee_method")
        status = g.get("status") or rec.get("guarantee_status")
        lower = _number(g.get("lower_bound", rec.get("lower_bound")))
        level = _number(g.get("level", rec.get("guarantee_level")))
        target = g.get("target") or g.get("metric")
        if method and target and str(target) not in str(method):
            method = f"{target} {method}"
        out.append(
            ThresholdInfo(
                finding=finding,
                threshold=0.5 if thr is None else thr,
                calibrated=thr is not None,
                method=rec.get("method"),
                guarantee_method=str(method) if method else None,
                guarantee_status=str(status) if status else None,
                lower_bound=lower,
                level=level,
            )
        )
    return out


def approval_info(meta: Any) -> ApprovalInfo:
    """The run's approval record, or "not approved" when it has none."""
    rec = _get(meta, "approval")
    if rec is None:
        return ApprovalInfo("not approved")
    rec = rec if isinstance(rec, Mapping) else getattr(rec, "__dict__", {})
    status = rec.get("status")
    if status is None and "approved" in rec:
        status = "approved" if rec.get("approved") else "not approved"
    by = rec.get("by") or rec.get("approved_by") or rec.get("approver")
    time = rec.get("time") or rec.get("approved_at") or rec.get("date")
    return ApprovalInfo(str(status or "not approved"), str(by) if by else None, str(time) if time else None)


def model_identity(meta: Any) -> dict[str, str]:
    """name, version and weights hash of a run, for the SR's algorithm identification."""
    backbone = _get(meta, "backbone") or (_get(meta, "config") or {}).get("model", {}).get("backbone") or "model"
    return {
        "name": str(_get(meta, "name") or f"chestxr {backbone}"),
        "version": str(_get(meta, "version") or 1),
        "weights_sha256": str(_get(meta, "weights_sha256") or "unknown"),
    }
