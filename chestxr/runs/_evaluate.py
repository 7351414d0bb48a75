"""``evaluate_run``: score a labelled split with a run and write report.html, metrics.csv/json and predictions.csv.

Intervals are bootstrapped by patient; each stored operating point is checked on the split
(chestxr/evaluation/_promise.py: a guaranteed promise one-sided with the patient as the unit and Holm across
findings, "not contradicted" with the test's power when not rejected; a point rule by a two-sample test by patient,
"moved" only when it rejects after Holm; refused findings listed in metrics.json ``promise_summary``). The output folder is staged and swapped in only when complete.
:func:`read_evaluation` is the one reader of an evaluation folder's metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from chestxr.core import ManifestError, normalize_id, rebase_paths, staged_output_dir
from chestxr.data import relative_paths
from chestxr.evaluation import evaluate_predictions, multiclass_metrics
from chestxr.imaging import LoaderOptions
from chestxr.reporting import image_table, write_evaluation_report
from chestxr.runs._approval import approval_status
from chestxr.runs._approval import require_approval as ensure_approved
from chestxr.runs._folder import read_run_json
from chestxr.runs._output_guard import guard_run_output, refuse_run_folder
from chestxr.runs._patients import check_not_training_patients
from chestxr.runs._run import Run, RunLike, as_run

METRICS_JSON = "metrics.json"


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_run` wrote into ``out_dir`` and the metrics it wrote there (metrics.json's
    document: per-finding metrics with intervals, macro/micro, subgroups, model_info, approval...)."""

    out_dir: Path
    html: Path
    metrics_csv: Path
    metrics_json: Path
    predictions_csv: Path
    metrics: dict[str, Any]

    def files(self) -> dict[str, Path]:
        """{"html", "metrics_csv", "metrics_json", "predictions_csv"} -> paths."""
        return {
            "html": self.html,
            "metrics_csv": self.metrics_csv,
            "metrics_json": self.metrics_json,
            "predictions_csv": self.predictions_csv,
        }


def evaluate_run(
    run: RunLike,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    split: Optional[str] = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    overwrite: bool = False,
    loading: LoaderOptions = LoaderOptions(),
    title: Optional[str] = None,
    promise_alpha: float = 0.05,
    reliability_bins: Literal["uniform", "quantile"] = "uniform",
    require_approval: bool = False,
) -> EvaluationResult:
    """Evaluate ``run`` (a :class:`~chestxr.runs.Run` or a run folder; always its current operating points) on a
    labelled split and write report.html, metrics.csv/json, predictions.csv into ``out_dir``.

    ``reliability_bins``: equal-width or quantile bins for the report's reliability diagrams. Each stored
    operating point is checked at family-wise false-alarm rate ``promise_alpha`` (Holm across findings;
    :func:`chestxr.evaluation.check_promises`). ``require_approval``: refuse (ApprovalError) a run that is not
    approved as it stands, before any work.

    The folder is built under a temporary name and swapped in only when complete
    (:func:`chestxr.core.staged_output_dir`); a run folder is refused as ``out_dir``."""
    run = as_run(run)
    if require_approval:
        ensure_approved(run, run.metadata)
    guard_run_output(out_dir, run.run_dir, manifests=[manifest])
    with staged_output_dir(out_dir, overwrite=overwrite, refuse=refuse_run_folder) as staged:
        written = _evaluate_into(
            staged,
            run,
            manifest,
            split=split,
            n_boot=n_boot,
            level=level,
            seed=seed,
            loading=loading,
            title=title,
            promise_alpha=promise_alpha,
            reliability_bins=reliability_bins,
        )
    paths = rebase_paths(written, staged, Path(out_dir))
    return EvaluationResult(Path(out_dir), metrics=read_evaluation(out_dir), **paths)


def read_evaluation(folder: str | Path) -> dict[str, Any]:
    """The metrics.json of an evaluation folder (``chestxr evaluate --out``), read through the run-folder JSON
    caps; ManifestError naming the folder when it has none."""
    path = Path(folder) / METRICS_JSON
    if not path.is_file():
        raise ManifestError(str(folder), [f"no {METRICS_JSON}: give a folder written by `chestxr evaluate`"])
    doc = read_run_json(path)
    _check_metrics_shape(path, doc)
    return doc


def _check_metrics_shape(path: Path, doc: dict[str, Any]) -> None:
    """CheckpointError naming ``path`` and the key when metrics.json does not have the shape chestxr writes (the
    card reads it: an edited or damaged file used to be a traceback)."""
    from chestxr.core import CheckpointError

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise CheckpointError(
                f"{path}: {key} is not {what}; this is not a metrics.json written by `chestxr evaluate` "
                "(edited or damaged): evaluate again"
            )

    def number(v: Any) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    def interval(v: Any) -> bool:
        return v is None or (isinstance(v, list) and len(v) <= 2 and all(number(x) for x in v))

    for key in ("findings", "subgroups", "model_info", "interval_methods", "macro", "promise_summary"):
        need(doc.get(key) is None or isinstance(doc.get(key), dict), key, "an object")
    for key in ("n_images", "n_patients", "level", "promise_alpha"):
        need(number(doc.get(key)), key, "a number")
    need(doc.get("title") is None or isinstance(doc.get("title"), str), "title", "text")

    def finding_record(m: Any, where: str) -> None:
        need(isinstance(m, dict), where, "an object")
        for k in ("n_pos", "n_neg", "auroc", "sensitivity", "specificity"):
            need(number(m.get(k)), f"{where}.{k}", "a number")
        for k in ("auroc_ci", "sensitivity_ci", "specificity_ci"):
            need(interval(m.get(k)), f"{where}.{k}", "an interval [low, high]")

    for finding, m in (doc.get("findings") or {}).items():
        finding_record(m, f"findings.{finding}")
        need(m.get("promise") is None or isinstance(m.get("promise"), dict), f"findings.{finding}.promise", "an object")
    for column, table in (doc.get("subgroups") or {}).items():
        need(isinstance(table, dict), f"subgroups.{column}", "an object")
        for value, group in table.items():
            need(isinstance(group, dict), f"subgroups.{column}.{value}", "an object")
            found = group.get("findings")
            need(found is None or isinstance(found, dict), f"subgroups.{column}.{value}.findings", "an object")
            for finding, m in (found or {}).items():
                finding_record(m, f"subgroups.{column}.{value}.findings.{finding}")


def _evaluate_into(
    out: Path,
    run: Run,
    manifest: str | Path,
    *,
    split: Optional[str],
    n_boot: int,
    level: float,
    seed: int,
    loading: LoaderOptions,
    title: Optional[str],
    promise_alpha: float = 0.05,
    reliability_bins: Literal["uniform", "quantile"] = "uniform",
) -> dict[str, Path]:
    """evaluate_run's work, written into the (staged) folder ``out``."""
    scored = run.score_labeled(manifest, split=split, loading=loading)
    labeled, kept = scored.labeled, scored.kept
    overlap = check_not_training_patients(run.run_dir, run.metadata, scored.patient_ids, force=True, what="evaluation")
    findings = run.findings
    scores = run.scores_from_logits(scored.logits)
    thresholds = run.thresholds
    y_true, mask = labeled.eval_true[kept], labeled.eval_mask[kept]
    groups = np.array([normalize_id(p) for p in scored.patient_ids], dtype=object)  # bootstrap clusters
    promised = {p.finding: p for p in (run.metadata.thresholds or [])} or None
    evaluation = evaluate_predictions(
        y_true,
        scores,
        mask,
        thresholds,
        findings,
        groups=groups,
        n_boot=n_boot,
        level=level,
        seed=seed,
        promised=promised,
        promise_alpha=promise_alpha,
    )
    for name, status in zip(findings, run.metadata.threshold_status()):
        evaluation["findings"][name]["threshold_status"] = status  # shown beside the finding, metrics.csv/json
    multiclass = None
    if run.task == "multiclass":
        rows = mask.all(axis=1) & (y_true.sum(axis=1) == 1)
        multiclass = multiclass_metrics(y_true[rows], scores[rows])
    base = Path(manifest).parent
    predictions = image_table(labeled.frame.iloc[kept].reset_index(drop=True), findings, scores, base)
    skipped_paths = relative_paths([labeled.paths[i] for i, _ in scored.skipped], base, outside="absolute")
    model_info = {
        "run": str(run.run_dir),
        "backbone": run.metadata.backbone,
        "mode": run.metadata.mode,
        "task": run.metadata.task,
        "findings": findings,
        "calibrated": run.calibrated,
        "model_version": run.metadata.version,
        "manifest": str(manifest),
        "split": split,
        "manifest_hash": labeled.manifest_hash,
        "training_patient_overlap": overlap.count,
        "training_patient_overlap_text": overlap.describe(),
        "n_patients_scored": overlap.n_patients,
        "n_skipped": len(scored.skipped),
        "skipped": [{"path": p, "reason": r} for p, (_, r) in zip(skipped_paths, scored.skipped)],
    }
    return write_evaluation_report(
        out,
        findings=findings,
        predictions=predictions,
        y_true=y_true,
        mask=mask,
        y_score=scores,
        thresholds=thresholds,
        groups=groups,
        evaluation=evaluation,
        model_info=model_info,
        title=title or f"chestxr evaluation: {Path(manifest).name}",
        multiclass=multiclass,
        reliability_strategy=reliability_bins,
        approval=approval_status(run).to_dict(),
    )
