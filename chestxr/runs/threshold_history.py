"""A stored threshold is never lost without the user asking (``chestxr calibrate``, issue 17.4)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from chestxr.core.errors import CalibrationError

if TYPE_CHECKING:
    from chestxr.runs.run import Run

__all__ = ["keep_previous_thresholds"]


def keep_previous_thresholds(
    run: "Run",
    records: list[dict[str, Any]],
    prob_record: Optional[dict[str, Any]],
    *,
    manifest: str | Path,
    split: Optional[str],
    force: bool,
) -> list[str]:
    """Never lose a stored threshold without the user asking (in place on ``records``).

    For a finding whose new threshold is null while the current model.json holds a finite one:
    when the split has no usable labels for it (one class or none) and the score scale is unchanged
    (same probability calibration), the previous record is kept, marked ``kept_from_version`` /
    ``kept_note``, with a warning; otherwise (a rule the split cannot meet, or another probability
    scale) CalibrationError, nothing written, unless ``force`` (then stored null, with a warning).
    Returns the names of the findings whose threshold was kept."""
    import json
    import math

    meta = run.metadata
    version = meta.version
    same_scale = json.dumps(prob_record, sort_keys=True, default=str) == json.dumps(
        meta.probability_calibration, sort_keys=True, default=str
    )
    where = f"{Path(manifest).name}" + (f" split={split}" if split else "")
    kept, refused = [], []
    for j, rec in enumerate(records):
        old = meta.threshold_for(rec["finding"])
        old_t = old.threshold if old is not None else None
        if rec.get("threshold") is not None or not isinstance(old_t, (int, float)) or not math.isfinite(old_t):
            continue
        name, n_pos, n_neg = rec["finding"], int(rec.get("n_pos") or 0), int(rec.get("n_neg") or 0)
        if (n_pos == 0 or n_neg == 0) and same_scale:
            note = (
                f"{where} has no usable labels for {name} ({n_pos} positive, {n_neg} negative); "
                f"kept the previous threshold {old_t:.4g} from model version {version}"
            )
            records[j] = {**old.to_dict(), "kept_from_version": version, "kept_note": note}  # type: ignore[union-attr]
            kept.append(name)
            warnings.warn(f"{name}: {note}", stacklevel=3)
            continue
        why = "the probability calibration changed" if not same_scale else f"{rec.get('status')}: {rec.get('note')}"
        text = f"{name}: the new calibration gives no threshold ({why}) and would replace the stored {old_t:.4g}"
        if force:
            warnings.warn(f"{text}; stored as not calibrated (--force)", stacklevel=3)
        else:
            refused.append(text)
    if refused:
        raise CalibrationError(
            "; ".join(refused) + f" (model version {version}); nothing was written. Use a rule this split can "
            "meet, or pass --force to store such findings as not calibrated"
        )
    return kept
