"""The ``chestxr`` command line. Thin: parses arguments and calls the API in chestxr.cli.*.

Every subcommand lives in its own module ``chestxr.cli.<name>`` exposing
``add_parser(subparsers)``; heavy imports (torch, pandas) happen inside the command, so
``chestxr --help`` is instant. Errors chestxr raises on purpose (ChestXRError) are printed
as one readable message and exit with code 2, and so is an OSError (disk full, permission denied:
``path: reason``); no traceback unless ``CHESTXR_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from chestxr import __version__

COMMANDS = [
    "demo",
    "train",
    "calibrate",
    "plan",
    "evaluate",
    "approve",
    "card",
    "predict",
    "listen",
    "monitor",
    "manifest",
    "cache",
    "export",
    "presets",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="chestxr",
        description="Train, calibrate and audit multi-label chest X-ray classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"chestxr {__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help=_QUIET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"chestxr.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"chestxr.cli._{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    _add_quiet(sub)
    return parser


_QUIET_HELP = "no progress bars or per-epoch/per-stage lines (results, warnings and errors still print)"


def _add_quiet(sub: argparse._SubParsersAction) -> None:
    """``--quiet`` after any (sub)command too: ``chestxr train ... --quiet`` as well as ``chestxr --quiet train``."""
    for p in sub.choices.values():
        if not any("--quiet" in a.option_strings for a in p._actions):
            p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_quiet(action)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``chestxr COMMAND ...``. Returns the process exit code."""
    from chestxr.core import ChestXRError

    parser = build_parser()
    args = parser.parse_args(argv)
    was_quiet = os.environ.get("CHESTXR_QUIET")
    if getattr(args, "quiet", False):
        os.environ["CHESTXR_QUIET"] = "1"  # read by chestxr/core/_progress.py, inherited by DDP workers
    _short_warnings()
    try:
        return int(args.func(args) or 0)
    except ChestXRError as exc:
        if os.environ.get("CHESTXR_DEBUG"):
            raise
        print(f"chestxr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ...: one line naming the path
        if os.environ.get("CHESTXR_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"chestxr {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chestxr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if was_quiet is None:
            os.environ.pop("CHESTXR_QUIET", None)


def _short_warnings() -> None:
    """Warnings as one line each ("warning: message"), without the source line they came from."""
    import warnings

    def fmt(message, category, filename, lineno, line=None):  # noqa: ANN001
        return f"warning: {message}\n"

    warnings.formatwarning = fmt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
