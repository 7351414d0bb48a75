"""``predict_run``: predict a manifest or image files/folders with a run and write the review worklist.

review.html (per-image and per-study cards, thumbnails, optional Grad-CAM maps), predictions.csv,
study_predictions.csv, skipped.csv and inference_log.jsonl (for chestxr monitor); the output folder is staged and
swapped in only when complete. The PACS
floor (chestxr.pacs) calls it per study. Inputs without a manifest (files, folders, their study keys) are read by
:func:`chestxr.imaging.walk_inputs` and :func:`chestxr.imaging.study_keys_for_files`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core import (
    ConfigError,
    ImageReadError,
    ManifestError,
    escape_frame,
    rebase_paths,
    staged_output_dir,
    write_text_atomic,
)
from chestxr.data import read_manifest, relative_paths
from chestxr.evaluation import decide
from chestxr.imaging import (
    LoaderOptions,
    build_image_loader,
    build_transform,
    resize_to,
    study_keys_for_files,
    walk_inputs,
)
from chestxr.reporting import grad_cam, image_table, write_review_report
from chestxr.runs._approval import ApprovalStatus, approval_status
from chestxr.runs._approval import require_approval as refuse_unapproved
from chestxr.runs._inference_log import LOG_FILE, log_predictions
from chestxr.runs._observations import call_codes
from chestxr.runs._output_guard import guard_run_output, refuse_run_folder
from chestxr.runs._ray_predict import RayOptions
from chestxr.runs._run import Run, RunLike, as_run


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict_run` wrote into ``out_dir``: review.html, predictions.csv (per image),
    study_predictions.csv (per study) and skipped.csv (None when nothing was left out)."""

    out_dir: Path
    html: Path
    predictions_csv: Path
    study_predictions_csv: Path
    skipped: Optional[Path] = None
    #: engine="ray" only: the job's job.json and predictions.csv as Parquet parts (a folder)
    job: Optional[Path] = None
    predictions_parquet: Optional[Path] = None
    inference_log: Optional[Path] = None

    def files(self) -> dict[str, Path]:
        """{"html", "predictions_csv", "study_predictions_csv"[, "skipped", "predictions_parquet", "job",
        "inference_log"]} -> paths."""
        out = {"html": self.html, "predictions_csv": self.predictions_csv}
        out["study_predictions_csv"] = self.study_predictions_csv
        for name in ("skipped", "predictions_parquet", "job", "inference_log"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def predict_run(
    run: RunLike,
    out_dir: str | Path,
    *,
    manifest: Optional[str | Path] = None,
    inputs: Sequence[str] = (),
    study_reduce: str = "max",
    explain: bool = False,
    overwrite: bool = False,
    loading: LoaderOptions = LoaderOptions(),
    max_thumbnails: int = 500,
    require_approval: bool = False,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
    engine: str = "plain",
    ray: Optional[RayOptions] = None,
    inference_log: bool | str | Path = True,
    log_source: str = "predict",
) -> PredictionResult:
    """Predict a manifest or files/folders (DICOM folders need no manifest) and write the review worklist.

    ``engine="ray"``: the same files from a Ray Data job (chestxr/runs/_ray_predict.py, options ``ray``;
    ``loading.batch_size``, ``cache_dir`` and ``on_bad_image`` apply, ``num_workers`` does not) in a resumable
    job folder (chestxr/runs/_ray_job.py): decoding in Ray tasks, inference in model actors, results kept per
    image + model + thresholds hash, so a rerun scores only what is missing; ``out_dir`` also gets job.json,
    store/ and predictions/*.parquet. No Grad-CAM (``explain``) and no thumbnails: the driver never reads an
    image; review.html shows the first RAY_REVIEW_CARDS studies.

    skipped: (path, reason) of files the caller already left out (a PACS study's non-image instances),
    added to skipped.csv. heatmaps_out: with ``explain``, filled with the Grad-CAM maps
    {(image_id, finding): (h, w) [0, 1]} (the PACS floor turns them into Secondary Captures).

    A run with ``task: multiclass`` gets one class per image and per study: the argmax of the
    calibrated scores, ties to the first class (predicted_class / predicted_score columns); the
    per-class thresholds are used only with ``abstain`` (no class when the top score is below its
    class's threshold). ``abstain`` on any other task is a ConfigError.

    review.html carries the run's approval status (:func:`chestxr.runs.approval_status`); with
    ``require_approval`` a run that is not approved is refused (ApprovalError) before any work.

    ``inference_log``: for ``chestxr monitor`` (:mod:`chestxr.runs._inference_log`), one entry per predicted
    image: True (default) writes ``out_dir/inference_log.jsonl``; a path appends to that log instead (the
    listener's one log across studies); False writes none. A run never calibrated logs nothing (no signed
    operating point to monitor); one calibrated before chestxr made reference profiles logs nothing, with a
    warning: calibrate it again to monitor it. ``engine="ray"`` writes no log yet (its workers return no
    penultimate features, which the log's embedding sketch needs).

    ``run``: a :class:`~chestxr.runs.Run` or a run folder (always its current operating points). The folder is
    built under a temporary name and swapped in only when complete (:func:`chestxr.core.staged_output_dir`);
    a run folder is refused as ``out_dir``."""
    run = as_run(run)
    if study_reduce not in ("max", "mean"):
        raise ConfigError(f"study_reduce must be one of ['max', 'mean'], got {study_reduce!r}")
    if abstain and run.task != "multiclass":
        raise ConfigError(
            f"{run.run_dir}: --abstain applies to mutually exclusive classes (task: multiclass); this run's "
            f"task is {run.task}: its findings are called at their thresholds"
        )
    approval = refuse_unapproved(run) if require_approval else approval_status(run)
    guard_run_output(out_dir, run.run_dir, manifests=[manifest], inputs=inputs)
    if engine not in ("plain", "ray"):
        raise ConfigError(f"engine must be one of ['plain', 'ray'], got {engine!r}")
    if engine == "ray":
        return _predict_with_ray(
            run,
            Path(out_dir),
            manifest=manifest,
            inputs=inputs,
            study_reduce="max" if study_reduce == "max" else "mean",
            explain=explain,
            overwrite=overwrite,
            loading=loading,
            approval=approval,
            skipped=skipped,
            abstain=abstain,
            options=ray or RayOptions(batch_size=loading.batch_size),
        )
    with staged_output_dir(out_dir, overwrite=overwrite, refuse=refuse_run_folder) as staged:
        written = _predict_into(
            staged,
            run,
            manifest=manifest,
            inputs=inputs,
            study_reduce="max" if study_reduce == "max" else "mean",
            explain=explain,
            loading=loading,
            max_thumbnails=max_thumbnails,
            approval=approval,
            skipped=skipped,
            heatmaps_out=heatmaps_out,
            abstain=abstain,
            inference_log=_log_target(run, staged, inference_log),
            log_source=log_source,
        )
    return PredictionResult(Path(out_dir), **rebase_paths(written, staged, Path(out_dir)))


def _log_target(run: Run, staged: Path, inference_log: bool | str | Path) -> Optional[Path]:
    """Where this prediction's log entries go (None: not logged)."""
    if inference_log is False:
        return None
    if not run.folder.reference_profile.is_file():
        if not run.calibrated:  # no signed operating point yet: nothing to monitor
            return None
        warnings.warn(
            f"{run.run_dir}: no reference profile (calibrated before chestxr made one): nothing is logged for "
            "chestxr monitor; run chestxr calibrate again (then approve) to monitor this run",
            stacklevel=3,
        )
        return None
    return staged / LOG_FILE if inference_log is True else Path(inference_log)


def _predict_into(
    out: Path,
    run: Run,
    *,
    manifest: Optional[str | Path],
    inputs: Sequence[str],
    study_reduce: Literal["max", "mean"],
    explain: bool,
    loading: LoaderOptions,
    max_thumbnails: int,
    approval: Optional[ApprovalStatus] = None,
    skipped: Sequence[tuple[str, str]] = (),
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
    inference_log: Optional[Path] = None,
    log_source: str = "predict",
) -> dict[str, Path]:
    """predict_run's work, written into the (staged) folder ``out``."""
    source = prediction_inputs(manifest, inputs)
    preds = run.logits(source.paths, loading=loading, features=inference_log is not None)
    scores = run.scores_from_logits(preds.logits)
    written = write_prediction_outputs(
        out,
        run,
        source,
        kept=preds.indices,
        scores=scores,
        unreadable=preds.skipped,
        skipped=skipped,
        study_reduce=study_reduce,
        explain=explain,
        max_thumbnails=max_thumbnails,
        approval=approval,
        heatmaps_out=heatmaps_out,
        abstain=abstain,
    )
    if inference_log is not None:
        rows = source.frame.iloc[preds.indices]

        def column(name: str) -> Optional[list]:  # a manifest's columns; for files the header decides
            return rows[name].tolist() if manifest is not None and name in rows.columns else None

        multiclass = run.task == "multiclass"
        decisions = decide(scores, run.thresholds, multiclass=multiclass, abstain=abstain)
        log_predictions(
            run,
            inference_log,
            paths=[source.paths[i] for i in preds.indices],
            features=preds.features,
            input_stats=preds.input_stats,
            scores=scores,
            calls=call_codes(decisions.positive, decisions.calibrated, multiclass=multiclass),
            patient_ids=column("patient_id"),
            study_ids=column("study_id"),
            ages=column("age"),
            sexes=column("sex"),
            source=log_source,
        )
        if inference_log.parent == out:
            written["inference_log"] = inference_log
    return written


@dataclass
class PredictionInputs:
    """The images of one prediction: ``frame`` (path absolute, patient_id, study_id, metadata columns), the
    folder output paths are relative to (``base``), and the files passed over as not images (path, reason)."""

    frame: pd.DataFrame
    base: Path
    not_images: list[tuple[str, str]]

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].astype(str).tolist()


def prediction_inputs(manifest: Optional[str | Path], inputs: Sequence[str]) -> PredictionInputs:
    """What to predict: a manifest's rows, or the image files of files/folders with their study keys
    (:func:`chestxr.imaging.walk_inputs`). ManifestError when neither is given or no image is found."""
    not_images: list[tuple[str, str]] = []
    if manifest is not None:
        frame = read_manifest(manifest).frame
        base = Path(manifest).parent
    elif inputs:
        files, passed_over = walk_inputs(inputs)
        base = Path(inputs[0]) if Path(inputs[0]).is_dir() else Path(inputs[0]).parent
        not_images = [(os.path.abspath(p), reason) for p, reason in passed_over]
        if not files:
            listed = "; ".join(f"{p}: {r}" for p, r in passed_over[:3])
            raise ManifestError(
                ",".join(inputs),
                [
                    f"no image files found{' (skipped ' + listed + ')' if listed else ''}; pass DICOM/PNG/JPEG files or folders"
                ],
            )
        patients, studies = study_keys_for_files(files)
        frame = pd.DataFrame({"path": [os.path.abspath(f) for f in files], "patient_id": patients, "study_id": studies})
    else:
        raise ManifestError("<predict>", ["give --manifest M or image files/folders to predict"])
    return PredictionInputs(frame=frame, base=base, not_images=not_images)


def write_prediction_outputs(
    out: Path,
    run: Run,
    source: PredictionInputs,
    *,
    kept: np.ndarray,
    scores: np.ndarray,
    unreadable: Sequence[tuple[int, str]],
    skipped: Sequence[tuple[str, str]] = (),
    study_reduce: Literal["max", "mean"] = "max",
    explain: bool = False,
    max_thumbnails: int = 500,
    approval: Optional[ApprovalStatus] = None,
    heatmaps_out: Optional[dict] = None,
    abstain: bool = False,
    thumbnails: bool = True,
    max_cards: Optional[int] = None,
) -> dict[str, Path]:
    """predictions.csv, study_predictions.csv, review.html and skipped.csv in ``out`` for the rows ``kept``
    (indices into ``source.frame``) with probabilities ``scores`` (len(kept), f); ``unreadable``: (row index,
    reason) of images not scored; ``max_cards``: study cards on review.html (None: all). Both engines write
    through this function."""
    paths, base = source.paths, source.base
    table = image_table(source.frame.iloc[kept].reset_index(drop=True), run.findings, scores, base)
    thresholds = run.thresholds
    multiclass = run.task == "multiclass"
    thumbs: dict[str, np.ndarray] = {}
    heat: Optional[dict[tuple[str, str], np.ndarray]] = None
    if thumbnails:
        calls = decide(scores, thresholds, multiclass=multiclass, abstain=abstain).positive  # Grad-CAM: called ones
        thumbs, heat = _thumbnails_and_cams(
            run, [paths[i] for i in kept], table, calls, explain=explain, limit=max_thumbnails
        )
    if heatmaps_out is not None and heat:
        heatmaps_out.update(heat)
    written = write_review_report(
        out,
        findings=run.findings,
        predictions=table,
        thresholds=thresholds,
        thumbnails=thumbs,
        heatmaps=heat,
        study_reduce=study_reduce,
        approval=approval.to_dict() if approval is not None else None,
        multiclass=multiclass,
        abstain=abstain,
        max_cards=max_cards,
    )
    passed = source.not_images + [(paths[i], r) for i, r in unreadable]
    rel = relative_paths([p for p, _ in passed], base, outside="absolute")
    left_out = [(str(p), r) for p, r in skipped] + [(q, r) for q, (_, r) in zip(rel, passed)]
    if left_out:
        frame_skipped = pd.DataFrame({"path": [p for p, _ in left_out], "reason": [r for _, r in left_out]})
        write_text_atomic(out / "skipped.csv", escape_frame(frame_skipped).to_csv(index=False))
        written["skipped"] = out / "skipped.csv"
    return written


#: study cards on review.html of a ray job (the first in review order; the CSVs and Parquet hold every study)
RAY_REVIEW_CARDS = 10_000


def _predict_with_ray(
    run: Run,
    out_dir: Path,
    *,
    manifest: Optional[str | Path],
    inputs: Sequence[str],
    study_reduce: Literal["max", "mean"],
    explain: bool,
    overwrite: bool,
    loading: LoaderOptions,
    approval: Optional[ApprovalStatus],
    skipped: Sequence[tuple[str, str]],
    abstain: bool,
    options: RayOptions,
) -> PredictionResult:
    """predict_run with engine="ray" (see predict_run and chestxr/runs/_ray_job.py)."""
    from chestxr.runs._ray_job import PARQUET_DIR, JobFolder, csv_as_parquet
    from chestxr.runs._ray_predict import score_with_ray

    if explain:
        raise ConfigError(
            "--explain is not available with --engine ray (Grad-CAM needs each image on the driver); "
            "run plain `chestxr predict --explain` on the studies to explain"
        )
    options.check()
    source = prediction_inputs(manifest, inputs)  # a bad manifest fails before the folder is touched
    facts = {"run": str(run.run_dir), "inputs": len(source.frame), "actors": options.actors}
    with JobFolder.open(out_dir, overwrite=overwrite, **facts) as job:
        result = score_with_ray(
            run, source.paths, store_dir=job.store, options=options, cache_dir=loading.cache_dir, abstain=abstain
        )
        job.doc.update(
            model_sha256=result.model_sha256,
            thresholds_sha256=result.thresholds_sha256,
            computed=result.computed,
            reused=result.reused,
            skipped=len(result.skipped),
            seconds={k: round(v, 3) for k, v in result.seconds.items()},
        )
        if result.skipped and loading.on_bad_image == "error":
            i, reason = result.skipped[0]
            job.doc.update(status="stopped: images not readable", finished_utc=_utc_now())
            job.save()
            raise ImageReadError(
                source.paths[i],
                reason + f" ({len(result.skipped)} unreadable image(s); the other results are kept in "
                f"{job.store}: rerun with --on-bad-image skip to list them in skipped.csv)",
            )
        with job.final() as staged:
            kept = np.flatnonzero(result.ok)
            written = write_prediction_outputs(
                staged,
                run,
                source,
                kept=kept,
                scores=result.scores[kept],
                unreadable=result.skipped,
                skipped=skipped,
                study_reduce=study_reduce,
                approval=approval,
                abstain=abstain,
                thumbnails=False,
                max_cards=RAY_REVIEW_CARDS,
            )
            csv_as_parquet(written["predictions_csv"], staged / PARQUET_DIR)
            written["predictions_parquet"] = staged / PARQUET_DIR
        job.doc.update(status="complete", finished_utc=_utc_now())
        job.save()
    return PredictionResult(out_dir, job=out_dir / "job.json", **rebase_paths(written, staged, out_dir))


def _utc_now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _thumbnails_and_cams(
    run: Run,
    paths: list[str],
    table: pd.DataFrame,
    calls: np.ndarray,
    *,
    explain: bool,
    limit: int,
) -> tuple[dict[str, np.ndarray], Optional[dict[tuple[str, str], np.ndarray]]]:
    """Small thumbnails for the review cards and, with ``explain``, a Grad-CAM map per called finding
    (``calls`` (n, f) bool: the decision rule's calls, the predicted class only for multiclass)."""
    import torch

    pre = run.preprocessing
    loader = build_image_loader(pre, cache_dir=None)
    transform = build_transform(pre, None, train=False)
    thumbs: dict[str, np.ndarray] = {}
    heat: dict[tuple[str, str], np.ndarray] = {}
    for i, path in enumerate(paths[:limit]):
        image_id = str(table["image_id"].iloc[i])
        img = loader(path)
        thumbs[image_id] = resize_to(img, 160, "long") if max(img.shape) > 160 else img
        if explain:
            x = transform(img).unsqueeze(0).to(run.device)
            for j, f in enumerate(run.findings):
                if calls[i, j]:
                    with torch.enable_grad():
                        heat[(image_id, f)] = grad_cam(run.model, x, j)
    return thumbs, (heat or None)
