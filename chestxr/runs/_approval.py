"""Sign-off of a run: who approved which model, thresholds and preprocessing, bound by a keyed HMAC.

``chestxr approve RUN --reviewer TEXT [--note TEXT]`` (:func:`approve_run`) writes an :class:`~chestxr.runs.Approval`
into a new version of model.json (key ``approval``; the history gains "approved by ..."):

    {"reviewer", "note", "time" (UTC, ISO 8601), "model_version" (model.json version approved),
     "binding_scheme": 2, "binding_hmac_sha256", "key_id", "bound": {part: sha256}, "weights_sha256",
     "reference_profile_sha256", "findings", "thresholds": [{finding, method, threshold, status}]}

What is bound (:data:`BOUND_PARTS`): everything that changes a call. The weights (sha256 of
model.safetensors itself), the findings in their order (swapping two names would label every probability
with another finding), the task and mode, the architecture (backbone, input channels, dropout), the
preprocessing (size, channels, resize, normalisation, VOI, colour, header checks...), the stored thresholds
(finding, method, value), the guarantees they carry (joint level, family, per-finding level, prevalence
range: the statement signed), the decision thresholds they give, the probability calibration, and the
reference profile (``RUN/reference_profile.json``, issue 23; its absence is bound too). The binding is
HMAC-SHA256 under the run's secret key (``RUN/patient_hash.key``, made at train or at the first approve,
0600; :class:`chestxr.core.KeyedHasher`), so a record cannot be forged or copied to another run by anyone
who does not hold the key; the record also keeps an (unkeyed) sha256 of each part, so a void approval says
which part changed.

:func:`approval_status` recomputes the binding: when anything changed since (re-calibration, new
weights, a hand edit of model.json, another reference profile) the approval is VOID, and so is an approval
that cannot be checked (the key file is missing or is another run's key) or one recorded by an older
chestxr (an unkeyed sha256 of weights and thresholds only: it bound neither the findings nor the
preprocessing and anyone could recompute it; approve the run again). Nothing has to remember to revoke it.
``predict`` and every report show the status (:attr:`ApprovalStatus.banner`); ``--require-approval``
(predict, predict --dicomweb, listen, evaluate, card) refuses a run that is not approved (ApprovalError,
exit 2) before any work.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, TypeGuard

from chestxr.core import ApprovalError, CheckpointError, KeyedHasher, hash_file
from chestxr.runs._checkpoint import read_metadata, update_metadata
from chestxr.runs._folder import KEY_FILE, REFERENCE_PROFILE_FILE, RunFolder
from chestxr.runs._metadata import Approval, ApprovedThreshold, RunMetadata
from chestxr.runs._patients import load_or_create_key, read_key

if TYPE_CHECKING:  # Run loads models (torch); reading an approval or the bound parts stays light (chestxr monitor)
    from chestxr.runs._run import Run, RunLike


def _is_run(obj: object) -> TypeGuard[Run]:
    """``obj`` is a :class:`~chestxr.runs.Run`, without importing it (no Run exists unless its module is loaded)."""
    module = sys.modules.get("chestxr.runs._run")
    return module is not None and isinstance(obj, module.Run)


STATES = ("approved", "void", "not_approved")
MAX_TEXT = 500
BINDING_SCHEME = 2
#: what the binding covers, in this order; the record keeps an unkeyed sha256 of each (to say what changed)
BOUND_PARTS = (
    "weights",
    "findings",
    "task",
    "architecture",
    "preprocessing",
    "thresholds",
    "probability_calibration",
    "reference_profile",
)
_PART_TEXT = {
    "weights": "the weights (model.safetensors)",
    "findings": "the findings or their order",
    "task": "the task/mode",
    "architecture": "the architecture (backbone, input channels, dropout)",
    "preprocessing": "the preprocessing",
    "thresholds": "the thresholds",
    "probability_calibration": "the probability calibration",
    "reference_profile": f"the reference profile ({REFERENCE_PROFILE_FILE})",
}
_DOMAIN = "chestxr-approval-binding-v2\x1f"


def _clean(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()
    if len(cleaned) > MAX_TEXT:
        raise ApprovalError(f"{what} is {len(cleaned)} characters; keep it under {MAX_TEXT}")
    return cleaned


def _finite_or_none(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def bound_parts(run: RunLike, meta: RunMetadata) -> dict[str, Any]:
    """The values an approval binds (:data:`BOUND_PARTS`) for ``run`` described by ``meta``, as plain JSON data.
    CheckpointError when the weights file is missing."""
    folder = RunFolder(Path(run))
    doc = meta.to_json()
    profile = folder.path / REFERENCE_PROFILE_FILE
    return {
        "weights": _weights_sha(folder.path),
        "findings": list(meta.findings),
        "task": {"task": meta.task, "mode": meta.mode},
        "architecture": {"backbone": meta.backbone, "in_channels": meta.in_channels, "dropout": meta.dropout},
        "preprocessing": doc.get("preprocessing"),
        "thresholds": _thresholds_part(meta),
        "probability_calibration": doc.get("probability_calibration"),
        "reference_profile": hash_file(profile) if profile.is_file() else None,
    }


def _thresholds_part(meta: RunMetadata) -> dict[str, Any]:
    """The stored thresholds and what they promise. Since issue 22 the guarantee statements (joint or per
    finding, family, per-finding level, prevalence range, bound) are bound too: the sentence the reviewer
    signs. Records written before (legacy guarantees) bind as before, so their approvals stay valid. The
    per-patient tallies a point rule's check counts (``patient_tally``) are bound when a record has one; a
    record without one binds as before."""
    records = meta.thresholds or []
    part: dict[str, Any] = {
        "records": [[r.finding, r.method, r.threshold if r.calibrated else None] for r in records],
        "decision": [_finite_or_none(t) for t in meta.decision_thresholds()],
    }
    stated = [[r.finding, r.guarantee.to_dict()] for r in records if r.guarantee is not None and not r.guarantee.legacy]
    if stated:
        part["guarantees"] = stated
    tallies = [[r.finding, r.patient_tally.to_dict()] for r in records if r.patient_tally is not None]
    if tallies:
        part["patient_tallies"] = tallies
    return part


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def part_digests(parts: Mapping[str, Any]) -> dict[str, str]:
    """sha256 of each bound part (unkeyed: they say WHAT changed; only the HMAC says that nothing did)."""
    return {k: hashlib.sha256(_canonical(parts[k]).encode("utf-8")).hexdigest() for k in BOUND_PARTS}


def binding_hmac(parts: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 under the run's key of every bound part (canonical JSON, domain-separated)."""
    return KeyedHasher(key).digest(
        _DOMAIN + _canonical({"scheme": BINDING_SCHEME, **{k: parts[k] for k in BOUND_PARTS}})
    )


def _weights_sha(run_dir: Path) -> str:
    path = RunFolder(run_dir).weights
    if not path.exists():
        raise CheckpointError(f"{path}: missing; an approval is bound to the weights")
    return hash_file(path)


def approve_run(run: RunLike, *, reviewer: str, note: str | None = None) -> Approval:
    """Record that ``reviewer`` approved the run as it stands; returns the approval record.

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
    parts = bound_parts(run_dir, meta)
    if meta.weights_sha256 and meta.weights_sha256 != parts["weights"]:
        raise CheckpointError(f"{run_dir}: model.safetensors does not match model.json (sha256 differs)")
    key = load_or_create_key(run_dir)
    version = meta.version
    record = Approval(
        reviewer=who,
        note=_clean(note, "--note") or None,
        time=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_version=version + 1,  # the version this write creates, with these thresholds
        approved_thresholds_version=version,
        weights_sha256=parts["weights"],
        thresholds=[
            ApprovedThreshold(r.finding, r.method, r.threshold if r.calibrated else None, r.status)
            for r in meta.thresholds
        ],
        binding_scheme=BINDING_SCHEME,
        binding_hmac_sha256=binding_hmac(parts, key),
        key_id=KeyedHasher(key).key_id,
        bound=part_digests(parts),
        reference_profile_sha256=parts["reference_profile"],
        findings=list(meta.findings),
    )
    new = update_metadata(run_dir, {"approval": record}, reason=f"approved by {who}")
    if _is_run(run):
        run._updated(new)
    return record


@dataclass(frozen=True)
class ApprovalStatus:
    """A run's sign-off as it stands now (recomputed against the run): ``state`` "approved" | "void" (an
    approval exists but no longer matches the run, cannot be checked, or is of the old unkeyed scheme) |
    "not_approved"; reviewer, time and note of the approval; reason (why void / not approved); ``changed``:
    the :data:`BOUND_PARTS` that differ from the approved ones; banner (one line)."""

    state: str
    reviewer: Optional[str] = None
    time: Optional[str] = None
    note: Optional[str] = None
    reason: str = ""
    banner: str = ""
    changed: tuple[str, ...] = ()

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
        """{state, reviewer, time, note, reason, banner, changed}: what the reports show and metrics.json stores."""
        return {
            "state": self.state,
            "reviewer": self.reviewer,
            "time": self.time,
            "note": self.note,
            "reason": self.reason,
            "banner": self.banner,
            "changed": list(self.changed),
        }


def approval_status(run: RunLike, meta: RunMetadata | None = None) -> ApprovalStatus:
    """The approval status of ``run`` (a Run or a run folder; ``meta``: its metadata, read when not given)."""
    run_dir = Path(run)
    m = meta if meta is not None else (run.metadata if _is_run(run) else read_metadata(run_dir))
    rec = m.approval
    if rec is None or not (rec.binding_hmac_sha256 or rec.binding_sha256):
        return _status("not_approved", reason="no approval recorded (chestxr approve RUN --reviewer NAME)")
    if rec.binding_scheme != BINDING_SCHEME or not rec.binding_hmac_sha256:
        return _status(
            "void",
            rec,
            "recorded by an older chestxr whose binding (an unkeyed sha256 of the weights and thresholds) covered "
            "neither the findings and their order nor the preprocessing and could be recomputed by anyone; approve "
            "the run again (chestxr approve)",
        )
    try:
        key = read_key(run_dir)
        parts = bound_parts(run_dir, m)
    except CheckpointError as exc:
        return _status("void", rec, str(exc))
    if key is None:
        return _status(
            "void",
            rec,
            f"{run_dir / KEY_FILE} is missing, so the approval cannot be verified (it is bound with the run's key); "
            "restore the key file or approve the run again",
        )
    if rec.key_id and rec.key_id != KeyedHasher(key).key_id:
        return _status(
            "void",
            rec,
            f"{run_dir / KEY_FILE} is not the key the approval was made with (copied from another run?); restore "
            "the run's own key or approve the run again",
        )
    if hmac.compare_digest(binding_hmac(parts, key), rec.binding_hmac_sha256):
        return _status("approved", rec)
    now = part_digests(parts)
    changed = tuple(k for k in BOUND_PARTS if rec.bound.get(k) != now[k])
    if changed:
        reason = (
            f"{', '.join(_PART_TEXT[k] for k in changed)} changed since the approval (approved version "
            f"{rec.model_version}, now version {m.version})"
        )
    else:
        reason = (
            "the approval record does not match the run: it was edited, or made without the run's key; approve "
            "the run again (chestxr approve)"
        )
    return _status("void", rec, reason, changed)


def _status(
    state: str, rec: Optional[Approval] = None, reason: str = "", changed: tuple[str, ...] = ()
) -> ApprovalStatus:
    who = dict(reviewer=rec.reviewer, time=rec.time, note=rec.note) if rec is not None else {}
    status = ApprovalStatus(state=state, reason=reason, changed=changed, **who)  # type: ignore[arg-type]
    return ApprovalStatus(**{**status.to_dict(), "changed": changed, "banner": banner(status)})


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
