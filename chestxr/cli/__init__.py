"""The ``chestxr`` command line (the top floor): one private module per subcommand (``_train``, ``_calibrate``,
...), each thin over :mod:`chestxr.runs` and the floors below; :func:`main` is the console script."""

from __future__ import annotations

from chestxr.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
