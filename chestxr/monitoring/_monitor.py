"""``chestxr.monitor(run, logs, ...)``: a signed-off run's reference profile against its inference logs.

1. the run folder: its typed metadata (findings, the signed thresholds, what each operating point
   guarantees) and ``reference_profile.json`` (made by ``calibrate``); the weights are not loaded;
2. the logs (files or folders, :func:`chestxr.runs.read_inference_logs`): only entries made with this run's
   weights, thresholds and profile are compared (others are counted and left out: a log written before a
   re-calibration is another operating point); torn last lines and duplicates are counted;
3. optionally confirmed labels (``labels``, a manifest of adjudication or report labels) joined to the logged
   images by keyed hash: by the image file when the manifest's path can be read, else by (patient_id,
   study_id); 1 is positive, 0 negative, anything else (uncertain, soft, blank) unknown;
4. :func:`chestxr.monitoring.monitor_samples` per window, Holm within a window;
5. with ``out``: monitor.html, monitor.json and alarms.csv in a folder built aside and swapped in whole.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, cast

import numpy as np

from chestxr.core import KeyedHasher, staged_output_dir
from chestxr.monitoring._battery import MonitorSettings, monitor_samples
from chestxr.monitoring._report import write_monitor_outputs
from chestxr.monitoring._results import LogSummary, MonitorResult
from chestxr.monitoring._sample import METRICS, Metric, MonitorError, Promise, Sample
from chestxr.monitoring._windows import parse_window

if TYPE_CHECKING:
    from chestxr.evaluation import OperatingPoint


def reference_sample(profile: Any) -> Sample:
    """A :class:`chestxr.runs.ReferenceProfile` as a :class:`Sample` (its labels included)."""
    return Sample(
        findings=profile.findings,
        scores=profile.scores,
        calls=profile.calls,
        groups=profile.patients,
        embedding=profile.sketch if profile.sketch.shape[1] else None,
        categorical=dict(profile.fields),
        numeric=dict(profile.numeric),
        time=None,
        labels=profile.labels,
    )


def log_sample(log: Any, labels: Optional[np.ndarray] = None) -> Sample:
    """A :class:`chestxr.runs.InferenceLog` as a :class:`Sample`; ``labels`` (n, F) or None."""
    return Sample(
        findings=log.header.findings,
        scores=log.scores,
        calls=log.calls,
        groups=log.patient,
        embedding=log.sketch if log.sketch.shape[1] else None,
        categorical=dict(log.fields),
        numeric=dict(log.numeric),
        time=log.time,
        labels=labels,
    )


def promises_from_points(points: Sequence[OperatingPoint]) -> tuple[Promise, ...]:
    """The guarantees a run made, from its typed operating points: those whose guarantee was met. A point rule
    (youden, f1, @point) is not a promise. Each keeps its family in words (``Guarantee.family_text``) and its
    prevalence range (PPV / NPV)."""
    out = []
    for p in points or ():
        g = p.guarantee
        if g is None or not g.met or not math.isfinite(float(p.threshold)):
            continue
        metric = cast(Metric, str(g.metric))
        if metric not in METRICS:
            continue
        out.append(Promise(str(p.finding), metric, float(g.target), float(g.level), g.family_text, g.prevalence))
    return tuple(out)


def join_labels(
    log: Any, manifest: str | Path, hasher: KeyedHasher, findings: Sequence[str]
) -> tuple[np.ndarray, int, int]:
    """(labels (n, F) 1 / 0 / NaN for the log's entries, entries labelled, manifest rows that matched no
    entry). Rows are keyed as the log's entries are (:func:`chestxr.runs.label_keys`): by the image file
    when its path can be read, else by (patient_id, study_id); an image match wins over a study match."""
    from chestxr.data import read_manifest
    from chestxr.runs import label_keys

    frame = read_manifest(manifest, findings=list(findings), check_paths=False).frame
    n_f = len(findings)
    by_image: dict[str, np.ndarray] = {}
    by_study: dict[str, np.ndarray] = {}
    values = frame[list(findings)].to_numpy(dtype=np.float64)
    confirmed = np.where(values == 1.0, 1.0, np.where(values == 0.0, 0.0, np.nan))  # uncertain/soft: unknown
    for i, row in enumerate(frame.itertuples(index=False)):
        d = row._asdict()
        img, study = label_keys(hasher, d.get("path"), d.get("patient_id"), d.get("study_id"))
        if img is not None:
            by_image[img] = confirmed[i]
        if study is not None:
            by_study[study] = confirmed[i]
    out = np.full((len(log), n_f), np.nan)
    used_img: set[str] = set()
    used_study: set[str] = set()
    if by_image or by_study:
        image_keys = np.char.decode(log.image, "ascii") if log.image.dtype.kind == "S" else log.image
        study_keys = np.char.decode(log.study, "ascii") if log.study.dtype.kind == "S" else log.study
        for i in range(len(log)):
            img, st = str(image_keys[i]), str(study_keys[i])
            if img in by_image:
                out[i] = by_image[img]
                used_img.add(img)
            elif st in by_study:
                out[i] = by_study[st]
                used_study.add(st)
    labelled = int((~np.isnan(out)).any(axis=1).sum())
    matched_rows = len(used_img) + len(used_study)
    return out, labelled, max(0, len(frame) - matched_rows)


def monitor(
    run: str | os.PathLike[str],
    logs: Sequence[str | os.PathLike[str]],
    *,
    window: str | int = "500",
    alpha: float = 0.01,
    labels: Optional[str | os.PathLike[str]] = None,
    seed: int = 0,
    out: Optional[str | os.PathLike[str]] = None,
    overwrite: bool = False,
) -> MonitorResult:
    """Compare the inference ``logs`` (files or folders) of ``run`` (a run folder or a
    :class:`chestxr.runs.Run`) with its reference profile, window by window (``window``: "500" images or a
    span "7d"), at false-alarm rate ``alpha`` per window; ``labels``: a manifest of confirmed findings.
    Returns a :class:`MonitorResult` (``.quiet``, ``.alarms``, ``.windows``); with ``out`` also writes
    monitor.html, monitor.json and alarms.csv there. Errors (a missing profile, unreadable logs, a bad
    option) are chestxr.core errors with one line naming the file and the fix."""
    from chestxr.runs import (
        LogHeader,
        bound_parts,
        decision_sha256,
        load_reference_profile,
        profile_sha256,
        read_inference_logs,
        read_key,
        read_metadata,
    )

    settings = MonitorSettings(alpha=alpha, window=parse_window(window), seed=seed)
    run_dir = Path(os.fspath(run))
    if out is not None:
        from chestxr.runs import guard_run_output

        guard_run_output(out, run_dir, manifests=[labels], inputs=[os.fspath(p) for p in logs])
    meta = read_metadata(run_dir)
    profile = load_reference_profile(run_dir)
    if tuple(profile.findings) != tuple(meta.findings):
        raise MonitorError(
            f"{run_dir}: the reference profile's findings {list(profile.findings)} are not the run's "
            f"{list(meta.findings)}; calibrate the run again"
        )
    parts = bound_parts(run_dir, meta)
    expected = LogHeader(
        findings=tuple(meta.findings),
        model=str(parts["weights"]),
        thresholds=decision_sha256(parts),
        profile=profile_sha256(run_dir),
        sketch_dim=int(profile.sketch.shape[1]),
        key_id="",
        source="",
    )
    log = read_inference_logs([Path(os.fspath(p)) for p in logs], header=expected)
    label_array, labelled, unmatched = None, 0, 0
    if labels is not None:
        key = read_key(run_dir)
        if key is None:
            raise MonitorError(
                f"{run_dir}: no patient_hash.key; labels are joined to the log by the run's keyed hashes"
            )
        label_array, labelled, unmatched = join_labels(log, Path(os.fspath(labels)), KeyedHasher(key), meta.findings)
    promises = promises_from_points(meta.thresholds or [])
    result = monitor_samples(reference_sample(profile), log_sample(log, label_array), promises, settings)
    summary = LogSummary(
        files=tuple(log.files),
        entries=len(log),
        torn_lines=tuple(log.torn_lines),
        duplicates=log.duplicates,
        other_runs=dict(log.other_headers),
        labelled=labelled,
        labels_unmatched=unmatched,
    )
    result = replace(result, log=summary)
    if out is not None:
        from chestxr.runs import approval_status

        status = approval_status(run_dir, meta)
        context = {
            "run": run_dir.name,
            "approval": status.banner,
            "log entries": f"{len(log):,} from {len(log.files)} file(s); {log.duplicates} duplicates and "
            f"{len(log.torn_lines)} torn line(s) left out"
            + (
                f"; {sum(log.other_headers.values()):,} entries of other weights/thresholds left out"
                if log.other_headers
                else ""
            ),
        }
        if labels is not None:
            context["labels"] = f"{labelled:,} logged images labelled; {unmatched:,} label rows matched no logged image"
        with staged_output_dir(Path(os.fspath(out)), overwrite=overwrite) as staged:
            write_monitor_outputs(result, staged, title=f"chestxr monitor: {run_dir.name}", context=context)
    return result
