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
