"""Sign-off of a run's operating points: who approved which thresholds, bound to a hash.

``chestxr approve RUN --reviewer TEXT [--note TEXT]`` (:func:`approve_run`) writes an :class:`~chestxr.runs.Approval`
into a new version of model.json (key ``approval``; the history gains "approved by ..."):

    {"reviewer", "note", "time" (UTC, ISO 8601), "model_version" (model.json version approved),
     "binding_sha256", "weights_sha256", "thresholds": [{finding, method, threshold, status}]}

``binding_sha256`` is the sha256 of the canonical JSON of the weights' sha256 (hashed from
model.safetensors itself), the stored thresholds (finding, method, threshold) and the probability
calibrator -- everything that decides a call. :func:`approval_status` recomputes it: when anything
changed since (re-calibration, new weights, a hand edit) the approval is VOID. Nothing has to
remember to revoke it. ``predict`` and every report show the status (:attr:`ApprovalStatus.banner`);
``predict --require-approval`` refuses a run that is not approved (ApprovalError, exit 2).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from chestxr.core import ApprovalError, CheckpointError, hash_file
from chestxr.runs._checkpoint import read_metadata, update_metadata
from chestxr.runs._folder import RunFolder
from chestxr.runs._metadata import Approval, ApprovedThreshold, RunMetadata
from chestxr.runs._run import Run, RunLike

STATES = ("approved", "void", "not_approved")
MAX_TEXT = 500


def _clean(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()
    if len(cleaned) > MAX_TEXT:
        raise ApprovalError(f"{what} is {len(cleaned)} characters; keep it under {MAX_TEXT}")
    return cleaned


def binding_hash(meta: RunMetadata, weights_sha256: str) -> str:
    """sha256 of what decides a call: weights hash, thresholds (finding, method, value), calibrator.

    (Issue 23 will add the reference profile here, RUN/reference_profile.json, so that an approval is void
    once the profile changes too; see :data:`chestxr.runs.REFERENCE_PROFILE_FILE`.)"""
    cal = meta.probability_calibration
    doc = {
        "weights_sha256": weights_sha256,
        "thresholds": [[r.finding, r.method, r.threshold if r.calibrated else None] for r in meta.thresholds or []],
        "probability_calibration": cal.to_dict() if cal is not None else None,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _weights_sha(run_dir: Path) -> str:
    path = RunFolder(run_dir).weights
    if not path.exists():
        raise CheckpointError(f"{path}: missing; an approval is bound to the weights")
    return hash_file(path)


def approve_run(run: RunLike, *, reviewer: str, note: str | None = None) -> Approval:
    """Record that ``reviewer`` approved the run's current thresholds; returns the approval record.

    ``run``: a :class:`~chestxr.runs.Run` (updated in place: ``run.metadata.approval`` is the new record) or a
    run folder. Raises ApprovalError when the reviewer is empty or the run has no thresholds (calibrate first),
    CheckpointError when the weights do not match model.json."""
    run_dir = Path(run)
    who = _clean(reviewer, "--reviewer")
    if not who:
        raise ApprovalError("--reviewer is empty: give the name (and role) of the person signing off")
    meta = read_metadata(run_dir)
    if not meta.thresholds:
        raise ApprovalError(f"{run_dir}: no thresholds to approve; run `chestxr calibrate` first")
    weights = _weights_sha(run_dir)
    if meta.weights_sha256 and meta.weights_sha256 != weights:
        raise CheckpointError(f"{run_dir}: model.safetensors does not match model.json (sha256 differs)")
    version = meta.version
    record = Approval(
        reviewer=who,
        note=_clean(note, "--note") or None,
        time=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_version=version + 1,  # the version this write creates, with these thresholds
        approved_thresholds_version=version,
        weights_sha256=weights,
        binding_sha256=binding_hash(meta, weights),
        thresholds=[
            ApprovedThreshold(r.finding, r.method, r.threshold if r.calibrated else None, r.status)
            for r in meta.thresholds
        ],
    )
    new = update_metadata(run_dir, {"approval": record}, reason=f"approved by {who}")
    if isinstance(run, Run):
        run._updated(new)
    return record


@dataclass(frozen=True)
class ApprovalStatus:
    """A run's sign-off as it stands now (recomputed against the weights and thresholds): ``state``
    "approved" | "void" (an approval exists but what decides a call changed since) | "not_approved";
    reviewer, time and note of the approval; reason (why void / not approved); banner (one line)."""

    state: str
    reviewer: Optional[str] = None
    time: Optional[str] = None
    note: Optional[str] = None
    reason: str = ""
    banner: str = ""

    @property
    def approved(self) -> bool:
        return self.state == "approved"

    def short(self, limit: int = 64) -> str:
        """At most ``limit`` characters (an SR code meaning): "approved by X on T", "void: ...", "not approved"."""
        if self.state == "approved":
            text = f"approved by {self.reviewer} on {self.time}"
        elif self.state == "void":
            text = f"void: approval by {self.reviewer} no longer matches the run"
        else:
            text = "not approved"
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def to_dict(self) -> dict[str, Any]:
        """{state, reviewer, time, note, reason, banner}: what the reports show and metrics.json stores."""
        return {
            "state": self.state,
            "reviewer": self.reviewer,
            "time": self.time,
            "note": self.note,
            "reason": self.reason,
            "banner": self.banner,
        }


def approval_status(run: RunLike, meta: RunMetadata | None = None) -> ApprovalStatus:
    """The approval status of ``run`` (a Run or a run folder; ``meta``: its metadata, read when not given)."""
    run_dir = Path(run)
    m = meta if meta is not None else (run.metadata if isinstance(run, Run) else read_metadata(run_dir))
    rec = m.approval
    if rec is None or not rec.binding_sha256:
        return _status("not_approved", reason="no approval recorded (chestxr approve RUN --reviewer NAME)")
    reason = ""
    try:
        now: Optional[str] = binding_hash(m, _weights_sha(run_dir))
    except CheckpointError as exc:
        now, reason = None, str(exc)
    if now == rec.binding_sha256:
        return _status("approved", rec, reason)
    reason = reason or (
        "thresholds, probability calibration or weights changed since the approval "
        f"(approved version {rec.model_version}, now version {m.version})"
    )
    return _status("void", rec, reason)


def _status(state: str, rec: Optional[Approval] = None, reason: str = "") -> ApprovalStatus:
    who = dict(reviewer=rec.reviewer, time=rec.time, note=rec.note) if rec is not None else {}
    status = ApprovalStatus(state=state, reason=reason, **who)  # type: ignore[arg-type]
    return ApprovalStatus(**{**status.to_dict(), "banner": banner(status)})


def banner(status: ApprovalStatus) -> str:
    """One line for reports and the console."""
    if status.state == "approved":
        note = f" ({status.note})" if status.note else ""
        return f"Approved for clinical use by {status.reviewer} on {status.time}{note}"
    if status.state == "void":
        return (
            f"NOT APPROVED FOR CLINICAL USE: the approval by {status.reviewer} on {status.time} "
            f"is void ({status.reason})"
        )
    return "NOT APPROVED FOR CLINICAL USE (research use only): no reviewer has signed off these thresholds"


def require_approval(run: RunLike, meta: RunMetadata | None = None) -> ApprovalStatus:
    """The status when approved; ApprovalError (CLI exit 2) otherwise."""
    status = approval_status(run, meta)
    if status.state != "approved":
        raise ApprovalError(f"{Path(run)}: {status.banner}; refusing (--require-approval)")
    return status
