"""``chestxr monitor``: watch a signed-off run in use; exit 0 when quiet, 3 on any alarm (for cron), 2 on error."""

from __future__ import annotations

import argparse

from chestxr.cli._options import ranged
from chestxr.core import OPEN_UNIT

#: the exit code when any window alarmed (0: no alarm; 2: an error, as every chestxr command)
EXIT_ALARM = 3


#: the false-alarm rate per window, in (0, 1)
ALARM_RATE = ranged(float, OPEN_UNIT, hint="give the false-alarm rate per window, e.g. 0.01")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="compare the inference log of a signed-off run with its reference profile; exit 3 on an alarm",
        description="Windows of the inference log that predict and listen write (inference_log.jsonl) are "
        "compared with the reference profile calibrate stored (RUN/reference_profile.json), one image per "
        "patient: acquisition fields (chi-squared, exact when counts are small), image statistics and scores "
        "(Kolmogorov-Smirnov), the embedding sketch (MMD, permutation p-value), positive-call rates (Fisher's "
        "exact test), the prevalence under label shift and the PPV/NPV it implies, and, with --labels, each "
        "promise against confirmed labels (anytime-valid confidence sequence). Holm's adjustment within a "
        "window keeps the chance that a window where nothing changed alarms at or below --alarm-rate. Writes "
        "monitor.html, monitor.json and alarms.csv to --out. Exit 0: no alarm; 3: alarm (each names the promise "
        "it threatens; action: re-calibrate, then re-approve); 2: error.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder (calibrated: it holds the reference profile)")
    p.add_argument("logs", nargs="+", metavar="LOG_OR_FOLDER", help="inference_log.jsonl files or folders holding them")
    p.add_argument("--out", required=True, help="output folder (monitor.html, monitor.json, alarms.csv)")
    p.add_argument("--window", default="500", help="images per window (500) or a span of time (7d, 12h, 2w)")
    p.add_argument("--labels", default=None, metavar="MANIFEST", help="a manifest of confirmed findings (1/0)")
    p.add_argument("--alarm-rate", type=ALARM_RATE, default=0.01, help="false-alarm rate per window (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations and the one-image-per-patient choice")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from chestxr.core import ChestXRError
    from chestxr.monitoring import monitor

    try:
        result = monitor(
            args.checkpoint,
            args.logs,
            window=args.window,
            alpha=args.alarm_rate,
            labels=args.labels,
            seed=args.seed,
            out=args.out,
            overwrite=args.overwrite,
        )
    except (ChestXRError, OSError, KeyboardInterrupt):
        raise  # one line and exit 2 (130 when interrupted) from chestxr.cli
    except Exception as exc:  # a bug must not read as "quiet" (0) or "alarm" (3) to cron: exit 2, one line
        if os.environ.get("CHESTXR_DEBUG"):
            raise
        print(
            f"chestxr monitor: error: unexpected {type(exc).__name__}: {exc} (a bug in chestxr; "
            "CHESTXR_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
    alarms = result.alarms
    n = len(result.windows)
    if not alarms:
        print(
            f"no alarm in {n} window(s) of {result.window} ({result.n_images:,} logged images; false-alarm rate "
            f"{result.alpha} per window): {args.out}/monitor.html"
        )
        return 0
    windows = sorted({a.window for a in alarms})
    print(
        f"ALARM: {len(alarms)} alarm(s) in {len(windows)} of {n} window(s) (false-alarm rate {result.alpha} per window)"
    )
    for a in alarms[:10]:
        print(
            f"  window {a.window} ({a.begins or ''}..{a.ends or ''}): {a.test}: {a.summary}; threatens: "
            f"{'; '.join(a.threatens)}"
        )
    if len(alarms) > 10:
        print(f"  ... {len(alarms) - 10} more in {args.out}/alarms.csv")
    print(f"action: {alarms[0].action}")
    print(f"report: {args.out}/monitor.html")
    return EXIT_ALARM
