"""``chestxr predict``: score new studies and write a review worklist (from files, a manifest or DICOMweb)."""

from __future__ import annotations

import argparse

from chestxr.cli._options import COUNT, TIMEOUT, add_inference_options, add_pacs_options, loader_options, ranged
from chestxr.core import Range

GPUS = ranged(float, Range(0, 1024))
CPUS = ranged(float, Range(0, 1024, lo_open=True))


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
    r = p.add_argument_group(
        "engine (a Ray cluster for large jobs; extra 'ray')",
        "--engine ray: decoding in Ray tasks, inference in --actors model actors, results kept per image + "
        "model + thresholds hash in OUT/store, so a rerun of a stopped job scores only what is missing; OUT also "
        "gets job.json and predictions/*.parquet (see README 'Past one machine')",
    )
    r.add_argument("--engine", choices=["plain", "ray"], default="plain", help="plain (default): this process")
    r.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default $RAY_ADDRESS, else a local Ray",
    )
    r.add_argument("--actors", type=COUNT, default=1, help="model actors (default 1)")
    r.add_argument(
        "--gpus-per-actor", type=GPUS, default=0.0, metavar="G", help="GPUs per actor (0: CPU; 0.5 shares a GPU)"
    )
    r.add_argument(
        "--cpus-per-actor", type=CPUS, default=1.0, metavar="C", help="CPUs per actor (default 1; torch threads)"
    )
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
    from chestxr.runs import RayOptions, predict_run

    ray_options = None
    if args.engine == "ray":
        ray_options = RayOptions(
            address=args.ray_address,
            actors=args.actors,
            gpus_per_actor=args.gpus_per_actor,
            cpus_per_actor=args.cpus_per_actor,
            batch_size=args.batch_size,
        )
    elif args.ray_address or args.actors != 1 or args.gpus_per_actor or args.cpus_per_actor != 1.0:
        from chestxr.core import ConfigError

        raise ConfigError("--ray-address/--actors/--gpus-per-actor/--cpus-per-actor apply to --engine ray")
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
        engine=args.engine,
        ray=ray_options,
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
    if args.engine != "plain":
        raise PacsError("--dicomweb runs the plain engine (one study at a time); drop --engine ray")
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
