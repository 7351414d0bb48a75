"""``chestxr evaluate``: per-finding evaluation report on a labeled split."""

from __future__ import annotations

import argparse

from chestxr.cli._options import COUNT, LEVEL, SEED, add_inference_options, loader_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run on a labeled split (HTML + CSV + JSON report)",
        description="Writes report.html (self-contained), metrics.csv, metrics.json, predictions.csv: "
        "AUROC with CIs, sensitivity/specificity/PPV/NPV at the stored thresholds, and whether each "
        "calibration promise holds on this split (one-sided exact binomial test at --promise-alpha).",
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
        help="false-alarm rate of the one-sided exact binomial test of each stored promise",
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
    for name, path in written.files().items():
        print(f"{name}: {path}")
    return 0
