"""``chestxr predict``: score new studies and write a review worklist (from files, a manifest or DICOMweb)."""

from __future__ import annotations

import argparse

from chestxr.cli._options import TIMEOUT, add_inference_options, add_pacs_options, loader_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict images/studies and write predictions.csv + review.html",
        description="Per image and per study (max over its images by default): each finding's "
        "probability, the call at the stored threshold and the distance to it; review.html lists "
        "studies positive and borderline first. Works on folders of DICOM files without a manifest, "
        "and on the studies of a DICOMweb server (--dicomweb URL), whose results it can store back "
        "as DICOM Structured Reports (--store-sr).",
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
        help="refuse (exit 2) unless the run is approved as it stands (chestxr approve): with --dicomweb, "
        "before any traffic, so a void approval files no SR",
    )
    p.add_argument(
        "--abstain",
        action="store_true",
        help="task: multiclass only: give no class when the top score is below its class's threshold "
        "(without it every image gets exactly one class, the argmax; thresholds call nothing)",
    )
    add_inference_options(p)
    g = p.add_argument_group("DICOMweb (instead of files or --manifest)")
    g.add_argument(
        "--dicomweb",
        metavar="URL",
        default=None,
        help="DICOMweb base URL, e.g. http://pacs:8042/dicom-web (credentials: CHESTXR_PACS_USER/"
        "CHESTXR_PACS_PASSWORD, CHESTXR_PACS_TOKEN or --credentials FILE; never in the URL)",
    )
    g.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="UID",
        help="a Study Instance UID, digits and dots (repeatable; an empty value or a wildcard is refused)",
    )
    g.add_argument("--since", metavar="YYYY-MM-DD", default=None, help="studies dated on or after this day")
    g.add_argument("--modality", default=None, metavar="CR,DX", help="studies with any of these modalities")
    g.add_argument(
        "--timeout",
        type=TIMEOUT,
        default=30.0,
        help="seconds: each request to the server (search, one study's retrieval, one store) must be "
        "answered completely within it (default 30; raise it for large studies on slow links)",
    )
    add_pacs_options(g, store_to=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dicomweb:
        return _run_dicomweb(args)
    from chestxr.core import PacsError

    if args.store_sr or args.store_heatmaps:
        raise PacsError("--store-sr/--store-heatmaps need --dicomweb URL (or use `chestxr listen --store-to`)")
    from chestxr.runs import predict_run

    written = predict_run(
        args.checkpoint,
        args.out,
        manifest=args.manifest,
        inputs=args.inputs,
        study_reduce=args.study_reduce,
        explain=args.explain,
        overwrite=args.overwrite,
        loading=loader_options(args),
        require_approval=args.require_approval,
        abstain=args.abstain,
    )
    from chestxr.runs import approval_status

    print(approval_status(args.checkpoint).banner)
    for name, path in written.files().items():
        print(f"{name}: {path}")
    return 0


def _run_dicomweb(args: argparse.Namespace) -> int:
    from chestxr.core import PacsError
    from chestxr.pacs import load_credentials, predict_dicomweb

    if args.manifest or args.inputs:
        raise PacsError("--dicomweb replaces --manifest and input files; give one or the other")
    written = predict_dicomweb(
        args.checkpoint,
        args.dicomweb,
        args.out,
        credentials=load_credentials(args.credentials),
        studies=args.study,
        since=args.since,
        modalities=args.modality.split(",") if args.modality is not None else [],
        store_sr=args.store_sr,
        store_heatmaps=args.store_heatmaps,
        timeout=args.timeout,
        study_reduce=args.study_reduce,
        explain=args.explain,
        overwrite=args.overwrite,
        loading=loader_options(args),
        require_approval=args.require_approval,
    )
    from chestxr.runs import approval_status

    print(approval_status(args.checkpoint).banner)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
