"""One module per ``chestxr`` subcommand; each exposes ``add_parser(subparsers)``."""

import argparse
from typing import Any, Callable

from chestxr.core import AT_LEAST_0, AT_LEAST_1, OPEN_UNIT, SEED_RANGE, Range


def ranged(kind: type, rng: Range, hint: str = "") -> Callable[[str], float]:
    """An argparse ``type`` parsing ``kind`` (int/float) and refusing values outside ``rng``: one line,
    e.g. ``argument --batch-size: 0 is out of range; allowed: >= 1``, then ``; hint`` when given."""
    tail = f"; {hint}" if hint else ""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}{tail}"
            ) from None
        if not rng.contains(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {rng.describe()}{tail}")
        return value

    parse.__name__ = kind.__name__
    return parse


#: shared option types: counts, worker counts, levels/probabilities strictly between 0 and 1, network timeouts
#: (seconds, > 0 and at most a day: a deadline timer cannot take inf or nan), seeds (numpy takes 0 .. 2**32 - 1)
COUNT = ranged(int, AT_LEAST_1)
WORKERS = ranged(int, AT_LEAST_0)
LEVEL = ranged(float, OPEN_UNIT)
TIMEOUT = ranged(float, Range(0, 86400, lo_open=True))
PORT = ranged(int, Range(1, 65535))


def PREVALENCE(text: str) -> tuple[float, float]:  # noqa: N802 - an argparse type, named like the others
    """``LO:HI`` (e.g. 0.05:0.20) as a checked range 0 < LO <= HI < 1; argparse's one-line error otherwise."""
    from chestxr.core import CalibrationError
    from chestxr.evaluation import check_prevalence

    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--prevalence {text!r} must look like LO:HI, e.g. 0.05:0.20 (the deployment prevalence range)"
        ) from None
    try:
        return check_prevalence((lo, hi))
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(f"--prevalence {text!r}: {exc}") from None


def AE_TITLE(text: str) -> str:  # noqa: N802 - an argparse type, named like the others
    """An argparse type for a DICOM AE title: 1-16 characters of the default repertoire (printable ASCII), no
    backslash, not only spaces (PS3.5 AE); surrounding spaces are not significant and are dropped."""
    value = text.strip(" ")
    if not (1 <= len(value) <= 16 and value.isascii() and value.isprintable() and "\\" not in value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an AE title: 1-16 ASCII letters, digits, spaces or punctuation, no backslash, "
            "not only spaces (e.g. CHESTXR)"
        )
    return value


SEED = ranged(int, SEED_RANGE)


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --on-bad-image: shared by calibrate, evaluate and predict."""
    p.add_argument("--batch-size", type=COUNT, default=32, help="images per forward pass (>= 1)")
    p.add_argument("--workers", type=WORKERS, default=2, help="DataLoader worker processes decoding images (>= 0)")
    p.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="stop at an unreadable image (default) or skip it and list it in skipped.csv",
    )


def loader_options(args: argparse.Namespace) -> Any:
    """The :class:`chestxr.imaging.LoaderOptions` of --batch-size, --workers and --on-bad-image."""
    from chestxr.imaging import LoaderOptions

    return LoaderOptions(batch_size=args.batch_size, num_workers=args.workers, on_bad_image=args.on_bad_image)


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
