"""``chestxr predict``: score new studies and write a review worklist."""

from __future__ import annotations

import argparse

from chestxr.cli.options import add_inference_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict images/studies and write predictions.csv + review.html",
        description="Per image and per study (max over its images by default): each finding's "
        "probability, the call at the stored threshold and the distance to it; review.html lists "
        "studies positive and borderline first. Works on folders of DICOM files without a manifest.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder")
    p.add_argument("--manifest", default=None, help="manifest of images to predict")
    p.add_argument("inputs", nargs="*", help="image files or folders (instead of --manifest)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--study-reduce", choices=["max", "mean"], default="max")
    p.add_argument("--explain", action="store_true", help="add Grad-CAM maps for positive findings")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--require-approval",
        action="store_true",
        help="refuse (exit 2) unless the run's current thresholds are approved (chestxr approve)",
    )
    add_inference_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.runs.workflows import predict_run

    written = predict_run(
        args.checkpoint,
        args.out,
        manifest=args.manifest,
        inputs=args.inputs,
        study_reduce=args.study_reduce,
        explain=args.explain,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        num_workers=args.workers,
        on_bad_image=args.on_bad_image,
        require_approval=args.require_approval,
    )
    from chestxr.runs.approval import approval_status

    print(approval_status(args.checkpoint)["banner"])
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
