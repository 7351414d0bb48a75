"""``chestxr plan``: how many calibration and test cases a guaranteed rule needs, before collecting them."""

from __future__ import annotations

import argparse
import json

from chestxr.cli._options import COUNT, LEVEL, PREVALENCE, ranged
from chestxr.core import Range

#: the true value the collection is planned for (0, 1]
EXPECTED = ranged(float, Range(0, 1, lo_open=True), hint="give the true value you expect, e.g. 0.95")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="cases a guaranteed rule needs (calibration and test), before collecting them",
        description="For a guaranteed rule (sensitivity:X counts positives, specificity:X negatives; patients when "
        "they have several images) at --confidence jointly over --findings findings (Bonferroni: each at "
        "1 - (1 - confidence) / findings): the calibration cases needed with 0, 1, 2 and 5 misses (exact binomial "
        "with one image per patient; the patient-level Bentkus bound with several), the cases that give 80%% power to "
        "reach the bound when the true value is --expected, and the test cases the evaluate check needs for 80%% "
        "power to detect a drop of 0.1 at alpha 0.05 / findings (Holm's strictest step). ppv:X / npv:X need "
        "--prevalence LO:HI.",
    )
    p.add_argument("--rule", required=True, help="a guaranteed rule: sensitivity:X, specificity:X, ppv:X or npv:X")
    p.add_argument("--confidence", type=LEVEL, default=0.95, help="joint confidence over --findings (default 0.95)")
    p.add_argument("--findings", type=COUNT, default=1, help="guaranteed findings in the family (default 1)")
    p.add_argument("--expected", type=EXPECTED, default=None, help="the true value you expect, e.g. 0.95")
    p.add_argument("--prevalence", type=PREVALENCE, default=None, metavar="LO:HI", help="ppv/npv: prevalence range")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.evaluation import plan

    result = plan(
        args.rule,
        confidence=args.confidence,
        findings=args.findings,
        expected=args.expected,
        prevalence=args.prevalence,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(result.describe()))
    return 0
