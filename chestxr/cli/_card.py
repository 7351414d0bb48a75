"""``chestxr card``: write a model card (HTML + Markdown) from a run folder and its evaluations."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        help="write model_card.html and model_card.md for a run",
        description="A model card after Mitchell et al. (2019): intended use and limitations (from --intended-use "
        "YAML, default: research use), training data (manifest hashes, counts per finding and split, views, sex, "
        "age bands), recipe, operating points with their guarantees or refusals, every evaluation given with "
        "--eval, approval status and software versions. Self-contained and escaped.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--eval", action="append", default=[], metavar="DIR", help="folder written by chestxr evaluate (repeatable)"
    )
    p.add_argument(
        "--intended-use",
        default=None,
        metavar="YAML",
        help="YAML with intended_use, intended_users, out_of_scope, limitations, ethical_considerations, caveats",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--require-approval", action="store_true", help="refuse (exit 2) unless the run is approved as it stands"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.runs import card_run

    written = card_run(
        args.run,
        args.out,
        evals=args.eval,
        intended_use=args.intended_use,
        overwrite=args.overwrite,
        require_approval=args.require_approval,
    )
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
