"""``chestxr calibrate``: fit per-finding operating points on a held-out split."""

from __future__ import annotations

import argparse
import math

from chestxr.cli._options import COUNT, LEVEL, PREVALENCE, SEED, add_inference_options, loader_options


def _parse_per_finding(items: list[str]) -> dict[str, str]:
    from chestxr.core import CalibrationError

    out = {}
    for item in items:
        if "=" not in item:
            raise CalibrationError(
                f"--finding-method {item!r} must look like FINDING=METHOD, e.g. Pneumothorax=sensitivity:0.95"
            )
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit per-finding thresholds on a held-out split",
        description="Run the model on a calibration split, fit one threshold per finding from its ROC "
        "curve, attach bootstrap-by-patient confidence intervals, and store them as a new version of "
        "RUN/model.json and in RUN/thresholds.json. Guaranteed rules: sensitivity:X, specificity:X, "
        "ppv:X, npv:X (the metric's one-sided lower bound at --confidence is >= X, with the patient as the "
        "unit: exact binomial with one image per patient, Bentkus 2004 otherwise; refused with status "
        "insufficient_data when the split has too few patients). By default the confidence holds JOINTLY "
        "for every finding with a guaranteed rule (Bonferroni); --per-finding makes each finding's guarantee "
        "alone. ppv:X / npv:X need --prevalence LO:HI and hold at every prevalence of that range. "
        "Point rules (NOT a guarantee): "
        "youden, f1, cost:C_FP:C_FN, fixed:T, and sensitivity:X@point etc. Without flags the rules "
        "are the run's own calibration config (the preset it was trained with, e.g. nih14-densenet121: "
        "youden, Pneumothorax=sensitivity:0.9); --method, --finding-method, --probability, --bootstrap "
        "and --ci override it.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder written by `chestxr train`")
    p.add_argument("--manifest", required=True, help="manifest with the calibration images")
    p.add_argument("--split", default=None, help="use only rows with this split value (e.g. val)")
    p.add_argument(
        "--method", default=None, help="default operating-point rule (default: the run's calibration.method)"
    )
    p.add_argument(
        "--finding-method",
        action="append",
        default=[],
        metavar="FINDING=METHOD",
        help="per-finding rule, e.g. Pneumothorax=sensitivity:0.95 (repeatable; replaces the run's "
        "calibration.per_finding rule for that finding, the others stay)",
    )
    p.add_argument(
        "--probability",
        choices=["temperature", "platt", "isotonic", "none"],
        default=None,
        help="also fit probability calibration (applied at predict time); default: the run's "
        "calibration.probability; none: do not, whatever the config says",
    )
    p.add_argument(
        "--bootstrap", type=COUNT, default=None, help="bootstrap resamples (default: calibration.n_bootstrap, 1000)"
    )
    p.add_argument(
        "--ci", type=LEVEL, default=None, help="level of the two-sided intervals (default: calibration.ci_level, 0.95)"
    )
    p.add_argument(
        "--confidence",
        type=LEVEL,
        default=0.95,
        help="confidence of the one-sided bounds behind sensitivity:X / specificity:X / ppv:X / npv:X, jointly "
        "for every finding with such a rule unless --per-finding (default 0.95)",
    )
    p.add_argument(
        "--per-finding",
        dest="simultaneous",
        action="store_false",
        default=None,
        help="make each guaranteed rule at --confidence for its finding alone instead of jointly for all "
        "(default: jointly, or the run's calibration.simultaneous)",
    )
    p.add_argument(
        "--prevalence",
        type=PREVALENCE,
        default=None,
        metavar="LO:HI",
        help="deployment prevalence range, e.g. 0.05:0.20: ppv:X / npv:X hold at every prevalence in it "
        "(required by those rules; default: the run's calibration.prevalence)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--force",
        action="store_true",
        help="allow calibrating on training patients, and storing a finding as not calibrated "
        "where model.json holds a threshold the new split cannot replace",
    )
    add_inference_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.evaluation import OperatingPoint
    from chestxr.runs import calibrate_run

    data = calibrate_run(
        args.checkpoint,
        args.manifest,
        split=args.split,
        method=args.method,
        per_finding=_parse_per_finding(args.finding_method),
        probability=args.probability,
        n_boot=args.bootstrap,
        level=args.ci,
        confidence=args.confidence,
        simultaneous=args.simultaneous,
        prevalence=args.prevalence,
        seed=args.seed,
        force=args.force,
        loading=loader_options(args),
    )
    summary = data.summary
    lvl = int(round((summary.ci_level or 0.95) * 100))
    if summary.rules is not None:
        print(f"rules: {summary.rules.describe()}")
    print(
        f"{'finding':<22} {'method':<22} {'threshold':>9}  {'status':<17} {'bound':>6}  {'sensitivity':<22} {'specificity':<22}"
    )
    for r in data.thresholds:

        def fmt(k: str, r: OperatingPoint = r) -> str:
            v, ci = getattr(r, k), getattr(r, f"{k}_ci")
            if not all(math.isfinite(x) for x in (v, *ci)):
                return "n/a"
            return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

        thr, lb = r.threshold, r.lower_bound
        print(
            f"{r.finding:<22} {str(r.method):<22} {'none' if not r.calibrated else round(thr, 4)!s:>9}  "
            f"{r.status:<17} {'' if not math.isfinite(lb) else f'{lb:.3f}':>6}  "
            f"{fmt('sensitivity'):<22} {fmt('specificity'):<22}"
        )
    family = summary.guarantee_family
    if family:
        print(f"guarantees: {family.get('text')}")
    for r in data.thresholds:
        if r.guarantee is not None and r.guaranteed:
            print(f"{r.finding}: {r.guarantee.describe()}")
        elif r.guarantee is not None:
            print(f"{r.finding}: {r.describe()}")
    print(
        f"(bound: one-sided lower bound of the rule's metric, patient as the unit (exact binomial with one "
        f"image per patient, Bentkus 2004 otherwise), at {args.confidence:.0%} "
        f"{'jointly' if summary.rules is None or summary.rules.simultaneous else 'per finding'}; "
        f"{lvl}% exact intervals with effective counts by patient; {summary.n_images} images, "
        f"{summary.n_patients} patients; not_a_guarantee = point estimate only)"
    )
    for r in data.thresholds:
        if r.kept_note:
            print(f"{r.finding}: {r.kept_note}")
    print(f"training-patient overlap: {summary.training_patient_overlap_text}")
    print(f"thresholds written to {args.checkpoint}/thresholds.json and model.json")
    return 0
