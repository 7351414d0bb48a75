"""Predict staged PACS studies with the folder predict workflow, then build their SRs and heat maps.

``predict --dicomweb`` and ``listen`` both end here: the instances lie under a staging folder in the
chestxr/pacs/_staging.py layout; non-images and images the run's header checks refuse are listed
(skipped.csv) and removed from the staging copy; :func:`chestxr.runs.predict_run` runs on the
folder exactly as ``chestxr predict FOLDER`` would, so the outputs are the same; the SR of each study is
built from the CSVs it wrote (so SR and CSV values agree to the last digit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from chestxr.core import escape_frame, prepare_output_dir, write_text_atomic
from chestxr.imaging import LoaderOptions, ReadOptions
from chestxr.pacs._staging import ScreenedStudy, read_evidence, screen_study
from chestxr.runs import Run, approval_status, predict_run

#: how staged studies are loaded: in this process, unreadable images skipped (listed in skipped.csv)
STAGED = LoaderOptions(num_workers=0, on_bad_image="skip")


@dataclass
class StudyResult:
    """One study's outcome: how many images were predicted / skipped, and the DICOM objects to store."""

    key: str
    n_images: int = 0
    n_skipped: int = 0
    datasets: list[Any] = field(default_factory=list)  # SR and heat-map SCs (carry identifiers: never written)


def screen_staging(run: Run, staging: Path) -> tuple[list[ScreenedStudy], list[tuple[str, str]]]:
    """Screen every study folder under ``staging``; skipped files are removed from it.

    Returns (screened studies, skipped (path relative to staging, reason))."""
    options = ReadOptions.from_config(run.preprocessing)
    studies, skipped = [], []
    for folder in sorted(p for p in staging.iterdir() if p.is_dir()):
        screened = screen_study(folder, options)
        for path, reason in screened.skipped:
            skipped.append((f"{folder.name}/{path.name}", reason))
            path.unlink()
        studies.append(screened)
    return studies, skipped


def predict_staging(
    run: Run,
    staging: Path,
    out: Path,
    *,
    study_reduce: str = "max",
    explain: bool = False,
    overwrite: bool = False,
    loading: LoaderOptions = STAGED,
    make_sr: bool = False,
    make_heatmaps: bool = False,
    skipped_studies: Sequence[tuple[str, str]] = (),
    require_approval: bool = False,
    inference_log: bool | str | Path = True,
) -> tuple[dict[str, Path], list[StudyResult]]:
    """Predict the staged studies into ``out`` (predictions.csv, study_predictions.csv, review.html,
    skipped.csv) and return one :class:`StudyResult` per study (with its SR / heat maps when asked).
    ``skipped_studies``: (study key, reason) of studies that never reached the staging folder (a failed
    retrieval); they head skipped.csv. ``require_approval``: ApprovalError before any work unless the run is
    approved as it stands (the listener checks every study, so an approval that turns void files no SR).
    ``inference_log``: as :func:`chestxr.runs.predict_run`'s (the listener passes its one append-only log).

    A study none of whose instances the run accepts gets n_images 0 and no SR. When no study has an
    image at all, only skipped.csv is written and ``written`` has just that.
    """
    if require_approval:
        from chestxr.runs import require_approval as ensure_approved

        ensure_approved(run, run.metadata)
    studies, skipped = screen_staging(run, staging)
    skipped = [*((str(k), str(r)) for k, r in skipped_studies), *skipped]
    results = {s.folder.name: StudyResult(s.folder.name, n_skipped=len(s.skipped)) for s in studies}
    if not any(s.images for s in studies):
        import pandas as pd

        out = prepare_output_dir(out, overwrite=overwrite)
        frame = pd.DataFrame({"path": [p for p, _ in skipped], "reason": [r for _, r in skipped]})
        write_text_atomic(out / "skipped.csv", escape_frame(frame).to_csv(index=False))
        return {"skipped": out / "skipped.csv"}, list(results.values())
    heat: dict = {}
    written = predict_run(
        run,
        out,
        inputs=[str(staging)],
        study_reduce=study_reduce,
        explain=explain or make_heatmaps,
        overwrite=overwrite,
        loading=loading,
        skipped=skipped,
        heatmaps_out=heat,
        inference_log=inference_log,
        log_source="listen" if not isinstance(inference_log, bool) else "predict",
    ).files()
    _fill_results(
        run, staging, written, results, study_reduce=study_reduce, make_sr=make_sr, heat=heat if make_heatmaps else None
    )
    return written, list(results.values())


def _fill_results(
    run: Run,
    staging: Path,
    written: dict[str, Path],
    results: dict[str, StudyResult],
    *,
    study_reduce: str,
    make_sr: bool,
    heat: Optional[dict],
) -> None:
    import pandas as pd

    from chestxr.pacs._sr import model_identity

    images = pd.read_csv(written["predictions_csv"], dtype={"image_id": str, "study_id": str})
    studies = pd.read_csv(written["study_predictions_csv"], dtype={"study_id": str})
    points, approval, identity = run.operating_points, approval_status(run), model_identity(run)
    findings = run.findings
    images["_folder"] = [str(i).split("/", 1)[0] for i in images["image_id"]]
    for key, rows in images.groupby("_folder", sort=False):
        res = results.setdefault(key, StudyResult(key))
        res.n_images = len(rows)
        if not (make_sr or heat is not None):
            continue
        paths = [staging / str(i) for i in rows["image_id"]]
        evidence = read_evidence(paths)
        uid_of = {str(i): str(ds.SOPInstanceUID) for i, ds in zip(rows["image_id"], evidence)}
        if make_sr:
            from chestxr.pacs._sr import build_sr

            srow = studies[studies["study_id"] == rows["study_id"].iloc[0]].iloc[0]
            image_probs = {
                uid_of[str(r["image_id"])]: {f: float(r[f"prob_{f}"]) for f in findings} for _, r in rows.iterrows()
            }
            res.datasets.append(
                build_sr(
                    evidence,
                    identity=identity,
                    study_calls={f: str(srow[f"call_{f}"]) for f in findings},
                    points=points,
                    approval=approval,
                    study_probs={f: float(srow[f"prob_{f}"]) for f in findings},
                    image_probs=image_probs,
                    study_reduce=study_reduce,
                )
            )
        if heat is not None:
            res.datasets.extend(_heatmaps(run, rows, paths, evidence, heat))


def _heatmaps(run: Run, rows: Any, paths: list[Path], evidence: list[Any], heat: dict) -> list[Any]:
    from chestxr.imaging import build_image_loader
    from chestxr.pacs._heatmaps import build_heatmap_sc, overlay_rgb

    pre = run.preprocessing
    loader = build_image_loader(pre, cache_dir=None)
    sha = str(run.metadata.weights_sha256 or "unknown")
    out, number = [], 1
    for image_id, path, ds in zip(rows["image_id"].astype(str), paths, evidence):
        for finding in run.findings:
            cam = heat.get((image_id, finding))
            if cam is None:
                continue
            rgb = overlay_rgb(loader(str(path)), cam, size=pre.size, resize=pre.resize, finding=finding)
            out.append(build_heatmap_sc(ds, rgb, finding=finding, weights_sha256=sha, number=number))
            number += 1
    return out
