"""``chestxr approve``: record a reviewer's sign-off of a run's thresholds."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "approve",
        help="record who approved a run (bound by the run's key to everything that changes a call)",
        description="Writes an approval record (reviewer, note, UTC time, and an HMAC-SHA256 under the run's key "
        "binding the weights, the findings and their order, task/mode, architecture, preprocessing, thresholds, "
        "probability calibration and reference profile) into a new version of RUN/model.json. Any later change "
        "of any of them makes it void; predict and the reports show the status, and --require-approval "
        "(predict, predict --dicomweb, listen, evaluate, card) refuses runs that are not approved.",
    )
    p.add_argument("run", help="run folder (calibrated)")
    p.add_argument("--reviewer", default=None, help="name and role of the person signing off (required)")
    p.add_argument("--note", default=None, help="free text stored with the approval")
    p.add_argument("--status", action="store_true", help="only print the current approval status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chestxr.runs import approval_status, approve_run

    if not args.status:
        if not args.reviewer:
            from chestxr.core import ApprovalError

            raise ApprovalError("give --reviewer NAME (who signs off), or --status to only show the status")
        rec = approve_run(args.run, reviewer=args.reviewer, note=args.note)
        print(f"approved: {len(rec.thresholds)} thresholds of {args.run} (binding {rec.binding_hmac_sha256[:12]})")
    print(approval_status(args.run).banner)
    return 0
