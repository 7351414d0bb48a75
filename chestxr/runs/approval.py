"""Sign-off of a run's operating points: who approved which thresholds, bound to a hash.

``chestxr approve RUN --reviewer TEXT [--note TEXT]`` writes an approval record into a new version
of model.json (key ``approval``; the history gains "approved by ..."):

    {"reviewer", "note", "time" (UTC, ISO 8601), "model_version" (model.json version approved),
     "binding_sha256", "weights_sha256", "thresholds": [{finding, method, threshold, status}]}

``binding_sha256`` is the sha256 of the canonical JSON of the weights' sha256 (hashed from
model.safetensors itself), the stored thresholds (finding, method, threshold) and the probability
calibrator -- everything that decides a call. :func:`approval_status` recomputes it: when anything
changed since (re-calibration, new weights, a hand edit) the approval is VOID. Nothing has to
remember to revoke it. ``predict`` and every report show the status (:func:`banner`);
``predict --require-approval`` refuses a run that is not approved (ApprovalError, exit 2).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from chestxr.core.errors import ApprovalError, CheckpointError
from chestxr.core.fileio import hash_file
from chestxr.modeling.run_metadata import RunMetadata

STATES = ("approved", "void", "not_approved")
MAX_TEXT = 500


def _clean(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()
    if len(cleaned) > MAX_TEXT:
        raise ApprovalError(f"{what} is {len(cleaned)} characters; keep it under {MAX_TEXT}")
    return cleaned


MetaLike = RunMetadata | Mapping[str, Any]


def _typed(meta: MetaLike) -> RunMetadata:
    """``meta`` as RunMetadata (a model.json document is parsed and validated like read_metadata)."""
    return meta if isinstance(meta, RunMetadata) else RunMetadata.from_json(dict(meta), "model.json")


def binding_hash(meta: MetaLike, weights_sha256: str) -> str:
    """sha256 of what decides a call: weights hash, thresholds (finding, method, value), calibrator."""
    m = _typed(meta)
    doc = {
        "weights_sha256": weights_sha256,
        "thresholds": [[r.finding, r.method, r.threshold] for r in m.thresholds or []],
        "probability_calibration": m.probability_calibration,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _weights_sha(run_dir: Path) -> str:
    from chestxr.modeling.checkpoint import MODEL_FILE

    path = run_dir / MODEL_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing; an approval is bound to the weights")
    return hash_file(path)


def approve_run(run_dir: str | Path, *, reviewer: str, note: str | None = None) -> dict[str, Any]:
    """Record that ``reviewer`` approved the run's current thresholds; returns the approval record.

    Raises ApprovalError when the reviewer is empty or the run has no thresholds (calibrate first),
    CheckpointError when the weights do not match model.json."""
    from chestxr.modeling.checkpoint import read_metadata, update_metadata

    run_dir = Path(run_dir)
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
    record = {
        "reviewer": who,
        "note": _clean(note, "--note") or None,
        "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model_version": version + 1,  # the version this write creates, with these thresholds
        "approved_thresholds_version": version,
        "weights_sha256": weights,
        "binding_sha256": binding_hash(meta, weights),
        "thresholds": [
            {"finding": r.finding, "method": r.method, "threshold": r.threshold, "status": r.status}
            for r in meta.thresholds
        ],
    }
    update_metadata(run_dir, {"approval": record}, reason=f"approved by {who}")
    return record


def approval_status(run_dir: str | Path, meta: MetaLike | None = None) -> dict[str, Any]:
    """{state: "approved" | "void" | "not_approved", reviewer, time, note, reason, banner}.

    "void": an approval exists but the weights, thresholds or calibrator changed since."""
    from chestxr.modeling.checkpoint import read_metadata

    run_dir = Path(run_dir)
    m = _typed(meta) if meta is not None else read_metadata(run_dir)
    rec = m.approval
    out: dict[str, Any] = {"state": "not_approved", "reviewer": None, "time": None, "note": None, "reason": ""}
    if not isinstance(rec, Mapping) or not rec.get("binding_sha256"):
        out["reason"] = "no approval recorded (chestxr approve RUN --reviewer NAME)"
    else:
        out.update(reviewer=rec.get("reviewer"), time=rec.get("time"), note=rec.get("note"))
        try:
            now = binding_hash(m, _weights_sha(run_dir))
        except CheckpointError as exc:
            now, out["reason"] = None, str(exc)
        if now == rec.get("binding_sha256"):
            out["state"] = "approved"
        else:
            out["state"] = "void"
            out["reason"] = out["reason"] or (
                "thresholds, probability calibration or weights changed since the approval "
                f"(approved version {rec.get('model_version')}, now version {m.version})"
            )
    out["banner"] = banner(out)
    return out


def banner(status: Mapping[str, Any]) -> str:
    """One line for reports and the console."""
    if status.get("state") == "approved":
        note = f" ({status['note']})" if status.get("note") else ""
        return f"Approved for clinical use by {status.get('reviewer')} on {status.get('time')}{note}"
    if status.get("state") == "void":
        return (
            f"NOT APPROVED FOR CLINICAL USE: the approval by {status.get('reviewer')} on {status.get('time')} "
            f"is void ({status.get('reason')})"
        )
    return "NOT APPROVED FOR CLINICAL USE (research use only): no reviewer has signed off these thresholds"


def require_approval(run_dir: str | Path, meta: MetaLike | None = None) -> dict[str, Any]:
    """The status when approved; ApprovalError (CLI exit 2) otherwise."""
    status = approval_status(run_dir, meta)
    if status["state"] != "approved":
        raise ApprovalError(f"{Path(run_dir)}: {status['banner']}; refusing (--require-approval)")
    return status
