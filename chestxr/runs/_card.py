"""``chestxr card``: gather a run folder's records and write its model card (model_card.html + .md).

What is read, all from the run folder unless said otherwise: model.json (recipe, label policy, operating
points with their guarantees or refusals, calibration summary, versions), the approval status
(:func:`chestxr.runs.approval_status`), RUN/splits.csv when training made the split (else the training manifest
named in model.json's config, if it still exists) for the training-data table, and each ``--eval DIR``'s
metrics.json (written by ``chestxr evaluate``, read by :func:`chestxr.runs.read_evaluation`). The intended-use
text comes from an optional YAML (:func:`chestxr.reporting.load_intended_use`; defaults: research use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from chestxr.core import ManifestError, OutputExistsError
from chestxr.data import manifest_hash, read_manifest, relabel
from chestxr.reporting import age_band, build_card, load_intended_use, write_model_card
from chestxr.runs._approval import approval_status
from chestxr.runs._approval import require_approval as ensure_approved
from chestxr.runs._evaluate import read_evaluation
from chestxr.runs._folder import RunFolder
from chestxr.runs._metadata import RunMetadata
from chestxr.runs._output_guard import guard_run_output
from chestxr.runs._run import RunLike, as_run


def data_summary(run_dir: Path, meta: RunMetadata) -> dict[str, Any]:
    """{source, recorded_train_hash, splits: [{split, n_images, n_patients, positives, views, sex, age, hash}]}."""
    candidates = [RunFolder(run_dir).splits]
    named = ((meta.config or {}).get("data") or {}).get("manifest")
    if named:
        candidates.append(Path(named))
    path = next((p for p in candidates if p.exists()), None)
    recorded = meta.training_manifest_hash
    if path is None:
        return {
            "source": f"not available (no splits.csv in the run folder; training manifest {named!r} not found)",
            "splits": [],
        }
    try:
        manifest = read_manifest(path, check_paths=False)
    except ManifestError as exc:
        return {"source": f"{path}: unreadable ({exc})", "splits": []}
    manifest = relabel(manifest, list(meta.findings))  # as training hashed it
    frame = manifest.frame
    findings = [f for f in meta.findings if f in frame.columns]
    groups = frame.groupby("split") if "split" in frame.columns else [("all", frame)]
    splits, matched = [], False
    for name, part in groups:
        sub = type(manifest)(frame=part, findings=manifest.findings, source=manifest.source)
        h = manifest_hash(sub)
        matched |= h == recorded
        pos = {f: int((part[f] >= 0.5).sum()) for f in findings}

        def counts(col: str, values: Any = None, part: Any = part) -> str:
            if values is None:
                if col not in part.columns:
                    return "-"
                values = part[col].fillna("unknown").astype(str)
            vc = pd.Series(values).value_counts()
            return ", ".join(f"{k} {v}" for k, v in vc.items())

        splits.append(
            {
                "split": str(name),
                "n_images": int(len(part)),
                "n_patients": int(part["patient_id"].nunique()),
                "positives": ", ".join(f"{f} {n}" for f, n in pos.items()),
                "views": counts("view"),
                "sex": counts("sex"),
                "age": counts("age", age_band(part["age"])) if "age" in part.columns else "-",
                "hash": h,
            }
        )
    where = "the run folder's splits.csv" if path.parent == run_dir else f"the training manifest {path}"
    check = (
        "matches"
        if matched
        else (
            "differs (expected for the run's splits.csv, whose paths are relative to the run folder; "
            "otherwise the manifest changed since training)"
        )
    )
    return {
        "source": f"{where}; manifest sha256 of the training split recorded in model.json {check}",
        "recorded_train_hash": recorded,
        "splits": splits,
    }


def card_run(
    run: RunLike,
    out_dir: str | Path,
    *,
    evals: Sequence[str | Path] = (),
    intended_use: str | Path | None = None,
    overwrite: bool = False,
    require_approval: bool = False,
) -> dict[str, Path]:
    """Write model_card.html and model_card.md for ``run`` (a Run or a run folder) into ``out_dir``; returns
    their paths. ``require_approval``: refuse (ApprovalError) a run that is not approved, before writing anything."""
    run = as_run(run)
    meta = run.metadata
    if require_approval:
        ensure_approved(run, meta)
    out = Path(out_dir)
    guard_run_output(out, run.run_dir, inputs=[*evals, intended_use])
    if out.exists() and any((out / n).exists() for n in ("model_card.html", "model_card.md")) and not overwrite:
        raise OutputExistsError(f"{out}: already holds a model card; pass --overwrite or another --out")
    evaluations = [(Path(d).name, read_evaluation(d)) for d in evals]
    card = build_card(
        meta.to_json(),  # the report floor renders the document
        operating_points=meta.thresholds or [],
        evaluations=evaluations,
        approval=approval_status(run).to_dict(),
        data_summary=data_summary(run.run_dir, meta),
        intended_use=load_intended_use(intended_use),
    )
    return write_model_card(out, card)
