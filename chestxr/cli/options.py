"""One module per ``chestxr`` subcommand; each exposes ``add_parser(subparsers)``."""

import argparse


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --on-bad-image: shared by calibrate, evaluate and predict."""
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images")
    p.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="stop at an unreadable image (default) or skip it and list it in skipped.csv",
    )


def add_pacs_options(p, *, store_to: bool) -> None:  # noqa: ANN001 - a parser or argument group
    """--credentials, --store-sr, --store-heatmaps (and --store-to AET@HOST:PORT for listen)."""
    p.add_argument(
        "--credentials",
        metavar="FILE",
        default=None,
        help="file with 'user: U' + 'password: P' or 'token: T' (default: $CHESTXR_PACS_CREDENTIALS)",
    )
    p.add_argument(
        "--store-sr",
        action="store_true",
        help="store a DICOM Structured Report of each study's results back into the PACS",
    )
    p.add_argument(
        "--store-heatmaps",
        action="store_true",
        help="also store Grad-CAM overlays of positive findings as Secondary Capture images "
        "(labelled not for diagnostic use; implies --explain)",
    )
    if store_to:
        p.add_argument("--store-to", metavar="AET@HOST:PORT", default=None, help="where to C-STORE SRs / heat maps")
