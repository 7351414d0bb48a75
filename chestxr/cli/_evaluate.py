"""``chestxr evaluate``: per-finding evaluation report on a labeled split."""

from __future__ import annotations

import argparse

from chestxr.cli._options import COUNT, LEVEL, SEED, add_inference_options, loader_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run on a labeled split (HTML + CSV + JSON report)",
        description="Writes report.html (self-contained), metrics.csv, metrics.json, predictions.csv: "
        "AUROC with CIs, sensitivity/specificity/PPV/NPV at the stored thresholds, and a check of each "
        "stored operating point: a guaranteed promise by a one-sided exact binomial test with the patient as the "
        "unit (Bentkus bound with several images per patient), Holm across findings at --promise-alpha; not "
        "rejected reads 'not contradicted' with the test's power to detect a drop of 0.1. A point rule (youden, "
        "f1, cost, @point) is not a promise: its calibration estimate is shown beside the test value and it is "
        "'moved' only when a two-sided two-sample test (patients as the unit) rejects after Holm.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder")
    p.add_argument("--manifest", required=True, help="labeled manifest")
    p.add_argument("--split", default=None, help="use only rows with this split value (e.g. test)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bootstrap", type=COUNT, default=1000)
    p.add_argument("--ci", type=LEVEL, default=0.95)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--promise-alpha",
        type=LEVEL,
        default=0.05,
        help="family-wise false-alarm rate of the checks (Holm across findings; default 0.05)",
    )
    p.add_argument(
        "--reliability-bins",
        choices=["uniform", "quantile"],
        default="uniform",
        help="reliability diagram bins: equal width (default) or quantile (about equal counts)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--require-approval",
        action="store_true",
        help="refuse (exit 2) unless the run is approved as it stands (chestxr approve)",
    )
    add_inference_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.runs import evaluate_run

    written = evaluate_run(
        args.checkpoint,
        args.manifest,
        args.out,
        split=args.split,
        n_boot=args.bootstrap,
        level=args.ci,
        seed=args.seed,
        promise_alpha=args.promise_alpha,
        reliability_bins=args.reliability_bins,
        overwrite=args.overwrite,
        loading=loader_options(args),
        require_approval=args.require_approval,
    )
    info = written.metrics.get("model_info", {})
    print(f"training-patient overlap: {info.get('training_patient_overlap_text')}")
    summary = written.metrics.get("promise_summary")
    if summary:
        print(f"operating points: {summary.get('text')}")
        for name, m in (written.metrics.get("findings") or {}).items():
            p = m.get("promise")
            if p:
                print(f"  {name}: {p.get('verdict')}")
    for name, path in written.files().items():
        print(f"{name}: {path}")
    return 0
