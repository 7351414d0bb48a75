"""``chestxr presets``: list the bundled config presets (name and one-line description), or print one."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list the config presets (use one with `chestxr train --config NAME`)",
        description="List the config presets shipped with chestxr (the repository's configs/ folder; "
        "./configs in the working directory comes first), or print one to copy and edit.",
    )
    p.add_argument("name", nargs="?", default=None, help="print this preset's YAML instead of the list")
    p.add_argument("--paths", action="store_true", help="also show where each preset was found")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.core import find_preset, list_presets

    if args.name:
        print(find_preset(args.name).text, end="")
        return 0
    presets = list_presets()
    if not presets:
        print("no presets found (the chestxr.presets package is missing: reinstall chestxr)")
        return 1
    width = max(len(p.name) for p in presets)
    for p in presets:
        where = f"  [{p.source}]" if args.paths else ""
        print(f"{p.name:<{width}}  {p.description}{where}")
    return 0
