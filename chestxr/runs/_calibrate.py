"""``calibrate_run``: fit per-finding operating points (and optionally probability calibration) on a held-out
split of a run, and store them as a new version of model.json with thresholds.json, in one transaction.

Which rules (:func:`plan_calibration`): the run stores its resolved training config (model.json ``config``),
including the ``calibration`` section of the preset it was trained with, e.g. configs/nih14-densenet121.yaml::

    calibration:
      method: youden
      per_finding:
        Pneumothorax: "sensitivity:0.9"

merged with what the caller passed (``chestxr calibrate`` flags): ``method`` replaces the default rule;
``per_finding`` rules replace or add to the config's, finding by finding (names matched with aliases);
``probability`` ("none" switches a configured calibrator off), ``n_boot``, ``level``, ``simultaneous`` and
``prevalence`` replace the config's values. ``None`` means "not given": the config decides (simultaneous
guarantees by default: every finding with a guaranteed rule jointly, Bonferroni; ``--per-finding`` opts out;
ppv:X / npv:X need the deployment ``prevalence`` range, refused without one). Config rules for findings the run does not have (a
preset's 14 findings, a run trained on fewer) are dropped with a warning; a rule given explicitly for an
unknown finding is an error.

A stored threshold is never lost without the user asking (:func:`keep_previous_thresholds`): where the split
has no usable labels for a finding, its previous operating point is kept and marked; any other new null over a
stored threshold is refused unless ``force``.

thresholds.json is written here only, from the typed :class:`~chestxr.runs.CalibrationResult`, in the same
transaction as model.json (:func:`chestxr.runs.update_metadata`); :func:`read_thresholds` reads it back. The
same transaction writes reference_profile.json (:mod:`chestxr.runs._reference_profile`): the calibration
images' scores, calls, labels, embedding sketch and acquisition fields, which ``chestxr monitor`` compares
the inference log with.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from chestxr.core import CalibrationError, KeyedHasher, hash_file, normalize_id
from chestxr.data import match_findings
from chestxr.evaluation import (
    EceChange,
    OperatingPoint,
    ProbabilityCalibrator,
    RuleFamily,
    bootstrap_intervals,
    check_prevalence,
    compare_ece,
    decide,
    fit_probability_calibrator,
    fit_thresholds,
    parse_method,
)
from chestxr.imaging import LoaderOptions
from chestxr.runs._checkpoint import update_metadata
from chestxr.runs._folder import REFERENCE_PROFILE_FILE, RunFolder, read_run_json
from chestxr.runs._metadata import CalibrationPlan, CalibrationResult, CalibrationSummary, RunMetadata
from chestxr.runs._observations import call_codes, observe_images
from chestxr.runs._patients import check_not_training_patients, load_or_create_key
from chestxr.runs._reference_profile import ReferenceProfile, build_reference_profile
from chestxr.runs._run import LabeledScores, Run, RunLike, as_run

PROBABILITY_METHODS = ("temperature", "platt", "isotonic")


def calibrate_run(
    run: RunLike,
    manifest: str | Path,
    *,
    split: Optional[str] = None,
    method: Optional[str] = None,
    per_finding: Optional[Mapping[str, str]] = None,
    probability: Optional[str] = None,
    n_boot: Optional[int] = None,
    level: Optional[float] = None,
    confidence: float = 0.95,
    simultaneous: Optional[bool] = None,
    prevalence: Optional[Sequence[float]] = None,
    seed: int = 0,
    force: bool = False,
    loading: LoaderOptions = LoaderOptions(),
) -> CalibrationResult:
    """Fit per-finding operating points (and optionally probability calibration) on a held-out split of
    ``manifest``, store them as a new version of model.json and in thresholds.json; returns what was written.

    ``run``: a :class:`~chestxr.runs.Run` (updated in place: afterwards ``run.metadata`` is the new version, so
    ``run.thresholds`` and :func:`chestxr.runs.evaluate_run` use the new operating points) or a run folder.

    The rules are the run's own ``calibration`` config (the preset it was trained with: method, per_finding,
    probability, n_bootstrap, ci_level) unless given here; None = not given (:func:`plan_calibration`;
    ``probability="none"`` switches a configured calibrator off). Each :class:`chestxr.evaluation.OperatingPoint`
    carries the rule (``method``), its ``threshold`` (NaN when refused), ``status`` ("guaranteed" |
    "not_a_guarantee" | "insufficient_data" | "unreachable" | "undefined"), its :class:`~chestxr.evaluation.Guarantee`
    for a guaranteed rule (one-sided patient-level lower bound: exact binomial with one image per patient, Bentkus
    2004 otherwise; jointly at ``confidence`` for every guaranteed finding when ``simultaneous`` (default, from the
    config), PPV/NPV over the ``prevalence`` range (lo, hi); n_pos, n_needed, the family and the per-finding
    level), the rates with two-sided exact intervals at ``level``, and AUROC / F1 intervals (percentile
    bootstrap by patient).

    A stored threshold is never lost silently: where the split has no usable labels for a finding, its previous
    operating point is kept (``kept_from_version``, ``kept_note``; listed in ``kept_previous``); any other null
    replacing a stored threshold is a CalibrationError unless ``force``."""
    run = as_run(run)
    plan = plan_calibration(
        run.metadata,
        run.folder.metadata,
        method=method,
        per_finding=per_finding,
        probability=probability,
        n_boot=n_boot,
        level=level,
        simultaneous=simultaneous,
        prevalence=prevalence,
    )
    scored = run.score_labeled(manifest, split=split, loading=loading, features=True)
    labeled, logits, kept = scored.labeled, scored.logits, scored.kept
    overlap = check_not_training_patients(
        run.run_dir, run.metadata, scored.patient_ids, force=force, what="calibration"
    )
    findings = run.findings
    y_true, mask = labeled.eval_true[kept], labeled.eval_mask[kept]
    groups = np.array([normalize_id(p) for p in scored.patient_ids], dtype=object)  # bootstrap clusters
    calibrator, ece = None, {}
    if plan.probability:
        calibrator = fit_probability_calibrator(logits, y_true, mask, method=plan.probability)
        for row, j in zip(compare_ece(logits, y_true, mask, calibrator, findings=findings), range(len(findings))):
            m = mask[:, j]
            if m.sum() and 0 < y_true[m, j].sum() < m.sum():  # both classes: ECE is informative
                ece[row["finding"]] = EceChange(row["ece_before"], row["ece_after"])
        scores = np.asarray(calibrator.apply(logits), dtype=np.float64)
    else:
        scores = run.scores_from_logits(logits, calibrated=False)
    fits = fit_thresholds(
        y_true,
        scores,
        mask,
        plan.spec(),
        findings=findings,
        confidence=confidence,
        groups=groups,
        level=plan.level,
        simultaneous=plan.simultaneous,
        prevalence=plan.prevalence,
    )
    boot = bootstrap_intervals(
        y_true,
        scores,
        mask,
        np.array([f.threshold for f in fits], dtype=np.float64),
        groups=groups,
        n_boot=plan.n_boot,
        level=plan.level,
        seed=seed,
        findings=findings,
        keys=("auroc", "f1"),
    )
    points = [
        fit.replace(
            auroc_ci=[float(x) for x in boot["auroc"]["ci"][j]],
            auroc_ci_n_valid=int(boot["auroc"]["n_valid"][j]),
            f1_ci=[float(x) for x in boot["f1"]["ci"][j]],
            f1_ci_n_valid=int(boot["f1"]["n_valid"][j]),
            ece=ece.get(fit.finding),
        )
        for j, fit in enumerate(fits)
    ]
    points, kept_previous = keep_previous_thresholds(
        run.metadata, points, calibrator, manifest=manifest, split=split, force=force
    )
    summary = CalibrationSummary(
        run=str(run.run_dir),
        manifest=str(manifest),
        split=split,
        manifest_hash=labeled.manifest_hash,
        n_images=int(len(kept)),
        n_skipped=len(scored.skipped),
        n_patients=int(len(set(groups.tolist()))),
        ci_level=plan.level,
        confidence=confidence,
        interval_method="clopper-pearson (effective counts by patient)",
        n_boot=plan.n_boot,
        training_patient_overlap=overlap.count,
        training_patient_overlap_text=overlap.describe(),
        forced=bool(force and overlap.count),
        probability_calibration=calibrator.method if calibrator else None,
        kept_previous=kept_previous,
        rules=plan,
        guarantee_family=guarantee_family(fits, confidence, plan.simultaneous),
    )
    result = CalibrationResult(summary, points)
    profile = _reference_profile(run, scored, scores, np.where(mask, y_true, np.nan), points, split=split, seed=seed)
    # thresholds.json, reference_profile.json and model.json: one transaction under the run folder's lock
    new = update_metadata(
        run.run_dir,
        {"thresholds": points, "probability_calibration": calibrator, "calibration": summary},
        reason=f"calibrate on {Path(manifest).name}" + (f" split={split}" if split else ""),
        companions=lambda version: {
            run.folder.thresholds.name: replace(result, model_version=version).to_json(),
            REFERENCE_PROFILE_FILE: profile.to_bytes(),
        },
    )
    run._updated(new)
    return replace(result, model_version=new.version)


def _reference_profile(
    run: Run,
    scored: LabeledScores,
    scores: np.ndarray,
    labels: np.ndarray,
    points: Sequence[OperatingPoint],
    *,
    split: Optional[str],
    seed: int,
) -> ReferenceProfile:
    """The calibration images as the monitor will compare the inference log with them
    (:mod:`chestxr.runs._reference_profile`): calls at the new operating points, keyed hashes under the
    run's key, acquisition fields from the manifest (age, sex) and the headers, the sketch of the features."""
    thresholds = np.array([p.threshold for p in points], dtype=np.float64)
    multiclass = run.task == "multiclass"
    decisions = decide(scores, thresholds, multiclass=multiclass)
    frame = scored.labeled.frame.iloc[scored.kept]

    def column(name: str) -> Optional[list]:
        return frame[name].tolist() if name in frame.columns else None

    observations = observe_images(
        [scored.labeled.paths[i] for i in scored.kept],
        KeyedHasher(load_or_create_key(run.run_dir)),
        input_stats=scored.input_stats,
        features=scored.features,
        patient_ids=column("patient_id"),
        study_ids=column("study_id"),
        ages=column("age"),
        sexes=column("sex"),
    )
    return build_reference_profile(
        findings=run.findings,
        thresholds=thresholds,
        model_sha256=run.metadata.weights_sha256 or hash_file(run.folder.weights),
        observations=observations,
        scores=scores,
        calls=call_codes(decisions.positive, decisions.calibrated, multiclass=multiclass),
        labels=labels,
        split=split or "",
        seed=seed,
    )


def guarantee_family(points: Sequence[OperatingPoint], confidence: float, simultaneous: bool) -> Optional[dict]:
    """The family the guaranteed rules of ``points`` were made in, as thresholds.json records it (None when no
    finding had a guaranteed rule): members, size, joint confidence, per-finding level, simultaneous, the
    findings left out (refused by their counts alone) and the sentence."""
    guaranteed = [p for p in points if p.guarantee is not None]
    if not guaranteed:
        return None
    if simultaneous:
        members = next(
            (
                tuple(p.guarantee.family or ())
                for p in guaranteed
                if p.guarantee is not None and p.guarantee.simultaneous
            ),
            (),
        )
    else:
        members = tuple(p.finding for p in guaranteed)
    excluded = tuple(p.finding for p in guaranteed if p.finding not in members)
    family = RuleFamily(members, float(confidence), bool(simultaneous), excluded)
    return family.to_dict()


def read_thresholds(run_dir: str | Path) -> Optional[CalibrationResult]:
    """RUN/thresholds.json as a :class:`~chestxr.runs.CalibrationResult` (None when the run was never
    calibrated); CheckpointError naming the file when it is not one."""
    path = RunFolder(run_dir).thresholds
    if not path.exists():
        return None
    return CalibrationResult.from_json(read_run_json(path), path)


def plan_calibration(
    meta: RunMetadata,
    where: str | Path,
    *,
    method: Optional[str] = None,
    per_finding: Optional[Mapping[str, str]] = None,
    probability: Optional[str] = None,
    n_boot: Optional[int] = None,
    level: Optional[float] = None,
    simultaneous: Optional[bool] = None,
    prevalence: Optional[Sequence[float]] = None,
) -> CalibrationPlan:
    """Merge the run's calibration config with the given overrides (None: not given); see the module docstring."""
    cfg = meta.calibration_config(where)
    findings = list(meta.findings)
    source: dict[str, str] = {}
    from_config, unknown_cfg = _match(findings, cfg.per_finding)
    if unknown_cfg:
        warnings.warn(
            f"{where}: the run's calibration config has rules for {unknown_cfg}, which the model does not "
            f"predict (findings {findings}); they are not used",
            stacklevel=3,
        )
    rules = dict(from_config)
    source.update({f: "config" for f in from_config})
    given, unknown = _match(findings, per_finding or {})
    if unknown:
        raise CalibrationError(f"rules given for unknown findings {unknown}; the model predicts {findings}")
    rules.update(given)
    source.update({f: "argument" for f in given})
    source["method"] = "argument" if method is not None else "config"
    if probability is not None:
        chosen: Optional[str] = None if probability == "none" else probability
        source["probability"] = "argument"
    else:
        chosen, source["probability"] = cfg.probability, "config"
    if chosen is not None and chosen not in PROBABILITY_METHODS:
        raise CalibrationError(
            f"probability calibration must be one of {list(PROBABILITY_METHODS)} or none, got {chosen!r}"
        )
    source["n_boot"] = "argument" if n_boot is not None else "config"
    source["level"] = "argument" if level is not None else "config"
    source["simultaneous"] = "argument" if simultaneous is not None else "config"
    source["prevalence"] = "argument" if prevalence is not None else "config"
    rng = prevalence if prevalence is not None else cfg.prevalence
    chosen_method = method if method is not None else cfg.method
    if rng is None:  # refused before any image is scored: PPV/NPV promises need the prevalence of use
        needing = [(f, r) for f, r in rules.items() if _needs_prevalence(r)]
        if _needs_prevalence(chosen_method):
            needing.append(("every other finding", chosen_method))
        if needing:
            f, r = needing[0]
            raise CalibrationError(
                f"{f}: {r} needs the deployment prevalence range it must hold over: pass --prevalence LO:HI "
                "(chestxr calibrate) or prevalence=(lo, hi) (calibrate_run), or set calibration.prevalence in the "
                "config, e.g. 0.05:0.20"
            )
    return CalibrationPlan(
        method=chosen_method,
        per_finding={f: rules[f] for f in findings if f in rules},
        probability=chosen,
        n_boot=int(n_boot if n_boot is not None else cfg.n_bootstrap),
        level=float(level if level is not None else cfg.ci_level),
        source=source,
        simultaneous=bool(simultaneous if simultaneous is not None else cfg.simultaneous),
        prevalence=None if rng is None else check_prevalence(rng),
    )


def _needs_prevalence(rule: str) -> bool:
    m = parse_method(rule)
    return m.guarantee and m.kind in ("ppv", "npv")


def _match(findings: list[str], rules: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Rules keyed by the run's own finding names (aliases resolved); names that match nothing."""
    matched = match_findings(findings, list(rules))
    out, unknown = {}, []
    for name, rule in rules.items():
        col = matched[name]
        if col is None:
            unknown.append(name)
        else:
            out[col] = rule
    return out, unknown


def keep_previous_thresholds(
    meta: RunMetadata,
    points: list[OperatingPoint],
    calibrator: Optional[ProbabilityCalibrator],
    *,
    manifest: str | Path,
    split: Optional[str],
    force: bool,
) -> tuple[list[OperatingPoint], list[str]]:
    """Never lose a stored threshold without the user asking (``chestxr calibrate``, issue 17.4).

    For a finding whose new threshold is NaN while the current model.json holds a finite one: when the split
    has no usable labels for it (one class or none) and the score scale is unchanged (same probability
    calibration), the previous operating point is kept, marked ``kept_from_version`` / ``kept_note``, with a
    warning; otherwise (a rule the split cannot meet, or another probability scale) CalibrationError, nothing
    written, unless ``force`` (then stored NaN, with a warning). Returns (the points to store, the names of
    the findings whose threshold was kept)."""
    version = meta.version
    old_scale = meta.probability_calibration.to_dict() if meta.probability_calibration else None
    same_scale = (calibrator.to_dict() if calibrator else None) == old_scale
    where = f"{Path(manifest).name}" + (f" split={split}" if split else "")
    out, kept, refused = list(points), [], []
    for j, point in enumerate(points):
        old = meta.threshold_for(point.finding)
        if point.calibrated or old is None or not old.calibrated:
            continue
        name, n_pos, n_neg = point.finding, int(point.n_pos or 0), int(point.n_neg or 0)
        if (n_pos == 0 or n_neg == 0) and same_scale:
            note = (
                f"{where} has no usable labels for {name} ({n_pos} positive, {n_neg} negative); "
                f"kept the previous threshold {old.threshold:.4g} from model version {version}"
            )
            out[j] = old.replace(kept_from_version=version, kept_note=note)
            kept.append(name)
            warnings.warn(f"{name}: {note}", stacklevel=3)
            continue
        why = "the probability calibration changed" if not same_scale else f"{point.status}: {point.note}"
        text = (
            f"{name}: the new calibration gives no threshold ({why}) and would replace the stored {old.threshold:.4g}"
        )
        if force:
            warnings.warn(f"{text}; stored as not calibrated (--force)", stacklevel=3)
        else:
            refused.append(text)
    if refused:
        raise CalibrationError(
            "; ".join(refused) + f" (model version {version}); nothing was written. Use a rule this split can "
            "meet, or pass --force to store such findings as not calibrated"
        )
    return out, kept
