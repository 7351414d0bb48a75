"""What a run says about its thresholds, their guarantees and their sign-off, for the SR.

Read from the typed :class:`~chestxr.runs.run.Run`: the decision thresholds are ``run.thresholds``
(the same numbers predictions.csv calls with: NaN = "not calibrated", 0.5 for a run never calibrated);
each finding's guarantee comes from its threshold record (the nested ``guarantee`` that ``calibrate``
writes for a guaranteed rule: metric, target, one-sided level, status, lower bound); the sign-off is
:func:`chestxr.runs.approval.approval_status` (approved / void / not approved, recomputed against the
weights and thresholds). Runs from before guarantees or approvals read as "no guarantee" / "not approved".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

_CODES = {
    "guaranteed": "MET",
    "insufficient_data": "INSUFFICIENT",
    "unreachable": "UNREACHABLE",
    "undefined": "UNDEFINED",
}


@dataclass(frozen=True)
class ThresholdInfo:
    """One finding's stored operating point (``threshold`` NaN: not calibrated, calls nothing) and, when
    the run holds one, its guarantee: metric >= target at a one-sided ``level``, ``status`` and bound."""

    finding: str
    threshold: float
    method: Optional[str] = None
    metric: Optional[str] = None
    target: Optional[float] = None
    level: Optional[float] = None
    guarantee_status: Optional[str] = None
    lower_bound: Optional[float] = None
    interval: Optional[str] = None

    @property
    def calibrated(self) -> bool:
        return math.isfinite(self.threshold)

    @property
    def has_guarantee(self) -> bool:
        return self.metric is not None

    @property
    def guarantee_text(self) -> str:
        """At most 64 characters (an SR code meaning), status first:
        "guaranteed: sensitivity >= 0.9, bound 0.912 (95% one-sided)"; "no guarantee" without one."""
        if not self.has_guarantee:
            return "no guarantee"
        text = f"{self.guarantee_status or 'status unknown'}: {self.metric}"
        if self.target is not None:
            text += f" >= {self.target:g}"
        if self.lower_bound is not None:
            text += f", bound {self.lower_bound:.3f}"
        if self.level is not None:
            text += f" ({self.level:.0%} one-sided)"
        if self.interval and len(text) + len(self.interval) + 1 <= 64:
            text += f" {self.interval}"
        return text if len(text) <= 64 else text[:61] + "..."

    @property
    def guarantee_code(self) -> str:
        """An SR code value: NONE, MET, INSUFFICIENT, UNREACHABLE, UNDEFINED or UNKNOWN."""
        if not self.has_guarantee:
            return "NONE"
        return _CODES.get(str(self.guarantee_status or "").lower(), "UNKNOWN")


@dataclass(frozen=True)
class ApprovalInfo:
    """The run's sign-off as :func:`chestxr.runs.approval.approval_status` states it."""

    state: str  # "approved" | "void" | "not_approved"
    reviewer: Optional[str] = None
    time: Optional[str] = None

    @property
    def approved(self) -> bool:
        return self.state == "approved"

    @property
    def text(self) -> str:
        """At most 64 characters: "approved by X on T", "void (approval by X no longer matches)", "not approved"."""
        if self.state == "approved":
            text = f"approved by {self.reviewer} on {self.time}"
        elif self.state == "void":
            text = f"void: approval by {self.reviewer} no longer matches the run"
        else:
            text = "not approved"
        return text if len(text) <= 64 else text[:61] + "..."


def _number(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def threshold_infos(run: Any) -> list[ThresholdInfo]:
    """One :class:`ThresholdInfo` per finding of ``run`` (a :class:`chestxr.runs.run.Run`), in order."""
    out = []
    for finding, thr in zip(run.findings, run.thresholds):
        rec = run.metadata.threshold_for(finding)
        d: Mapping[str, Any] = rec.to_dict() if rec is not None else {}
        g = d.get("guarantee") if isinstance(d.get("guarantee"), Mapping) else None
        out.append(
            ThresholdInfo(
                finding=finding,
                threshold=float(thr),
                method=d.get("method"),
                metric=str(g.get("metric")) if g and g.get("metric") else None,
                target=_number(g.get("target")) if g else None,
                level=_number(g.get("level")) if g else None,
                guarantee_status=str(g.get("status") or d.get("status")) if g else None,
                lower_bound=_number(g.get("lower_bound", d.get("lower_bound"))) if g else None,
                interval=str(g.get("method")) if g and g.get("method") else None,
            )
        )
    return out


def approval_info(run: Any) -> ApprovalInfo:
    """The run's sign-off (recomputed: an approval whose weights/thresholds changed since is "void")."""
    from chestxr.runs.approval import approval_status

    status = approval_status(run.run_dir, run.metadata)
    return ApprovalInfo(str(status.get("state") or "not_approved"), status.get("reviewer"), status.get("time"))


def model_identity(run: Any) -> dict[str, str]:
    """name, version and weights hash of ``run``, for the SR's algorithm identification."""
    meta = run.metadata
    return {
        "name": f"chestxr {meta.backbone} ({run.run_dir.name})",
        "version": str(meta.version),
        "weights_sha256": str(meta.weights_sha256 or "unknown"),
    }
