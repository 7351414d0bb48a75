"""``chestxr manifest validate|convert|split|describe``: check, create, split and summarize manifests."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from chestxr.cli._options import SEED

DESCRIPTION = """Manifests are CSV files with one row per image (schema: data_manifests/README.md).

  chestxr manifest validate M.csv [--findings A,B] [--no-check-paths]
      print every problem (row, column, value, fix); exit 1 when there are errors
  chestxr manifest convert --from nih|chexpert|mimic TABLE.csv[.gz] --out OUT.csv [--image-root DIR]
      [--metadata mimic-cxr-2.0.0-metadata.csv.gz]
  chestxr manifest split M.csv --val 0.1 --test 0.2 --seed 0 [--out OUT.csv]
      patient-level stratified split; writes M.split.csv unless --out is given
  chestxr manifest describe M.csv   images, patients, studies, views, splits, label counts
"""


def add_parser(subparsers) -> None:
    """Register ``chestxr manifest`` and its actions."""
    p = subparsers.add_parser(
        "manifest",
        help="validate, convert, split and describe manifests",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    v = sub.add_parser("validate", help="report every problem in a manifest")
    v.add_argument("manifest")
    v.add_argument("--findings", type=_names, default=None, help="comma-separated finding columns to use")
    v.add_argument(
        "--no-check-paths", dest="check_paths", action="store_false", help="do not check that the image files exist"
    )

    c = sub.add_parser("convert", help="convert an NIH / CheXpert / MIMIC-CXR label table to a manifest")
    c.add_argument("table", help="the source table (.csv or .csv.gz)")
    c.add_argument("--from", dest="source", required=True, choices=["nih", "chexpert", "mimic"])
    c.add_argument("--out", required=True, help="manifest CSV to write")
    c.add_argument(
        "--image-root",
        default=None,
        help="folder holding the images (default: nih 'images/' beside --out; chexpert and mimic: "
        "the folder of --out, i.e. the dataset root)",
    )
    c.add_argument("--metadata", default=None, help="mimic: mimic-cxr-2.0.0-metadata.csv(.gz)")
    c.add_argument("--check-paths", action="store_true", help="also check that the image files exist")
    c.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    s = sub.add_parser("split", help="write a patient-level stratified train/val/test split")
    s.add_argument("manifest")
    s.add_argument("--val", type=float, default=0.1, help="fraction of images for val (default 0.1)")
    s.add_argument("--test", type=float, default=0.2, help="fraction of images for test (default 0.2)")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--out", default=None, help="output manifest (default: M.split.csv beside M)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--check-paths", action="store_true", help="also check that the image files exist")

    d = sub.add_parser("describe", help="count images, patients, views, splits and labels")
    d.add_argument("manifest")
    d.add_argument("--findings", type=_names, default=None, help="comma-separated finding columns to use")
    d.add_argument("--views", type=_names, default=None, help="e.g. frontal or PA,AP")
    d.add_argument("--check-paths", action="store_true", help="also check that the image files exist")
    p.set_defaults(func=run)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; returns the exit code."""
    return {"validate": _validate, "convert": _convert, "split": _split, "describe": _describe}[args.action](args)


def _print_problems(result) -> None:
    for p in result.errors:
        print(f"ERROR   {p}")
    for p in result.warnings:
        print(f"WARNING {p}")


def _validate(args: argparse.Namespace) -> int:
    from chestxr.data import validate_manifest

    result = validate_manifest(args.manifest, findings=args.findings, check_paths=args.check_paths)
    _print_problems(result)
    state = "invalid" if result.errors else "valid"
    print(f"{args.manifest}: {state}: {len(result.errors)} error(s), {len(result.warnings)} warning(s)")
    return 1 if result.errors else 0


def _read(path: str, **kwargs):
    """read_manifest with its warnings printed as 'WARNING ...' lines on stderr."""
    from chestxr.data import read_manifest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = read_manifest(path, **kwargs)
    for w in caught:
        print(f"WARNING {w.message}", file=sys.stderr)
    return manifest


def _refuse_existing(out: Path, overwrite: bool) -> None:
    from chestxr.core import OutputExistsError

    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it or choose another --out")


def _convert(args: argparse.Namespace) -> int:
    import os

    from chestxr.data import convert_table, validate_manifest, write_manifest

    out = Path(args.out)
    from chestxr.runs import guard_output, protected_inputs

    guard_output(out, protected_inputs(inputs=[args.table, args.metadata, args.image_root]))
    _refuse_existing(out, args.overwrite)
    root = os.path.abspath(args.image_root) if args.image_root else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = convert_table(args.source, args.table, image_root=root, metadata=args.metadata)
    for w in caught:
        print(f"WARNING {w.message}", file=sys.stderr)
    write_manifest(frame, out)
    result = validate_manifest(out, check_paths=args.check_paths)
    _print_problems(result)
    n_find = len([c for c in frame.columns if c not in ("path", "patient_id", "study_id", "view", "sex", "age")])
    print(f"wrote {out}: {len(frame)} images, {frame['patient_id'].nunique()} patients, {n_find} findings")
    return 1 if result.errors else 0


def _split(args: argparse.Namespace) -> int:
    from chestxr.data import split_manifest, split_summary, write_manifest

    src = Path(args.manifest)
    out = (
        Path(args.out) if args.out else src.with_name(src.name.removesuffix(".gz").removesuffix(".csv") + ".split.csv")
    )
    from chestxr.runs import guard_output, protected_inputs

    guard_output(out, protected_inputs(manifests=[src]))  # not over the input manifest, not into a run folder
    _refuse_existing(out, args.overwrite)
    manifest = _read(args.manifest, check_paths=args.check_paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = split_manifest(manifest, val=args.val, test=args.test, seed=args.seed)
    for w in caught:
        print(f"WARNING {w.message}", file=sys.stderr)
    write_manifest(manifest, out)
    print(f"wrote {out} (seed {args.seed}); images, patients and positive images per split:")
    print(split_summary(manifest).to_string())
    return 0


def _describe(args: argparse.Namespace) -> int:
    from chestxr.data import describe_manifest, format_description

    manifest = _read(args.manifest, findings=args.findings, views=args.views, check_paths=args.check_paths)
    print(format_description(describe_manifest(manifest)))
    return 0
