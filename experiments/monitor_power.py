"""False alarms and detection of ``chestxr monitor``'s statistics on synthetic streams with a known answer.

    nice -n 10 python experiments/monitor_power.py            # the tables in experiments/README.md
    python experiments/monitor_power.py --smoke               # seconds, every path once

Streams come from ``chestxr.monitoring.simulate_streams`` (its docstring states the model: 4
findings, several images per patient with a shared patient effect, calibrated scores, true
sensitivity 0.92 and specificity 0.90, promises sensitivity/specificity >= 0.85 per finding and PPV
>= 0.40 for Finding0 over prevalence 0.08-0.12). The reference is 600 images (about 390 patients).

1. False alarms: R independent (reference, window) pairs with no change; the share of windows with
   any alarm, with its exact 95 % Clopper-Pearson upper bound, against the stated rate alpha. Each
   pair has its own reference, so the windows are independent and the count is Binomial(R, rate).
   Also for comparison: every image tested as independent (no one-image-per-patient reduction), and
   the call-rate test replaced by the exact binomial test against the reference rate taken as known.
2. Detection: R replicates of a stream that changes at its first image, monitored in windows; the
   power of one window (share of first windows that alarm) and the delay (images until the end of
   the first alarmed window; median and 90th percentile over replicates, "> N" when fewer than half
   / 90 % detected within the stream), per scenario and window size.

Writes experiments/results/monitor_power.csv and monitor_power.md with the load average at start
and end.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chestxr.monitoring import (  # noqa: E402
    MonitorSettings,
    Scenario,
    WindowSpec,
    monitor_samples,
    parse_window,
    simulate_streams,
    split_windows,
)

#: (label, scenario, label fraction of the stream's patients)
SCENARIOS = [
    ("gamma/contrast, all scanners", Scenario("gamma", 1.0, fraction=1.0), 0.0),
    ("gamma/contrast, 1 of 3 scanners", Scenario("gamma", 1.0, fraction=0.3), 0.0),
    ("resolution, 1 of 3 scanners", Scenario("resolution", 1.0, fraction=0.3), 0.0),
    ("MONOCHROME1, read correctly, 30 %", Scenario("monochrome1", 0.0, fraction=0.3), 0.0),
    ("MONOCHROME1, not inverted, 10 %", Scenario("monochrome1", 1.0, fraction=0.1), 0.0),
    ("prevalence Finding0 0.10 -> 0.05", Scenario("prevalence", 0.05), 0.0),
    ("prevalence Finding0 0.10 -> 0.20", Scenario("prevalence", 0.20), 0.0),
    ("sensitivity Finding0 0.92 -> 0.70, 50 % labelled", Scenario("sensitivity", 0.70), 0.5),
]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    from scipy import stats

    return 1.0 if k >= n else float(stats.beta.ppf(level, k + 1, n - k))


def false_alarms(window: int, alpha: float, reps: int, *, one_per_patient: bool = True) -> dict[str, float]:
    from scipy import stats

    alarms = 0
    binomial_known_rate = 0  # call-rate windows that a binomial test against the reference rate flags at alpha
    fisher = 0
    calls_tested = 0
    for r in range(reps):
        sim = simulate_streams(n_reference=600, n_stream=window, seed=10_000 + r)
        settings = MonitorSettings(
            alpha=alpha, window=WindowSpec(count=window), seed=r, one_per_patient=one_per_patient
        )
        res = monitor_samples(sim.reference, sim.stream, sim.promises, settings)
        w = res.windows[0]
        alarms += bool(w.alarms)
        for t in w.tests:
            if t.name.startswith("output.calls.") and not math.isnan(t.p_value):
                calls_tested += 1
                fisher += t.p_value <= alpha
                k_ref, n_ref = (int(v) for v in t.summary.split("(")[1].split(")")[0].split("/"))
                k_w, n_w = (int(v) for v in t.summary.split("(")[2].split(")")[0].split("/"))
                binomial_known_rate += stats.binomtest(k_w, n_w, k_ref / n_ref).pvalue <= alpha
    return {
        "alarms": alarms,
        "rate": alarms / reps,
        "upper95": cp_upper(alarms, reps),
        "fisher_rate": fisher / max(1, calls_tested),
        "binomial_rate": binomial_known_rate / max(1, calls_tested),
    }


def detection(
    scenario: Scenario, labels: float, window: str, alpha: float, reps: int, n_windows: int
) -> dict[str, object]:
    spec = parse_window(window)
    size = spec.count if spec.count is not None else int((spec.seconds or 0) / 86400 * 200)
    first_hit, delays, first_tests = 0, [], {}
    for r in range(reps):
        sim = simulate_streams(
            scenario, n_reference=600, n_stream=size * n_windows, seed=20_000 + r, label_fraction=labels
        )
        settings = MonitorSettings(alpha=alpha, window=spec, seed=r)
        if labels:  # the label tests accumulate over windows: monitor the whole stream
            res = monitor_samples(sim.reference, sim.stream, sim.promises, settings)
            hit = next((w for w in res.windows if w.alarms), None)
            found = None if hit is None else (hit.index, sum(w.n_images for w in res.windows[: hit.index + 1]), hit)
        else:  # windows are independent given the reference: test one at a time, stop at the first alarm
            found, seen = None, 0
            for k, w in enumerate(split_windows(sim.stream.time, len(sim.stream), spec)):
                part = sim.stream.take(np.arange(w.start, w.stop))
                one = monitor_samples(
                    sim.reference,
                    part,
                    sim.promises,
                    replace(settings, seed=r * 1000 + k, window=WindowSpec(count=max(2, w.size))),
                )
                seen += w.size
                if one.windows[0].alarms:
                    found = (k, seen, one.windows[0])
                    break
        if found is None:
            delays.append(math.inf)
            continue
        index, delay, hit = found
        first_hit += index == 0
        delays.append(delay)
        best = min(hit.alarms, key=lambda t: t.p_holm)
        first_tests[best.name] = first_tests.get(best.name, 0) + 1
    d = np.array(delays)
    limit = size * n_windows

    def q(p: float) -> str:
        v = float(np.quantile(d, p))
        return f"> {limit}" if not math.isfinite(v) else f"{int(v)}"

    return {
        "power_first_window": first_hit / reps,
        "median_delay": q(0.5),
        "p90_delay": q(0.9),
        "detected": float(np.isfinite(d).mean()),
        "first_test": max(first_tests, key=lambda k: first_tests[k]) if first_tests else "",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few replicates: every path once, numbers meaningless")
    ap.add_argument("--reps-null", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--results", type=Path, default=REPO / "experiments" / "results")
    args = ap.parse_args(argv)
    reps_null, reps = (20, 3) if args.smoke else (args.reps_null, args.reps)
    windows_null = [100, 500] if args.smoke else [100, 250, 500, 1000]
    windows_det = ["500"] if args.smoke else ["100", "250", "500", "1000", "7d"]
    start_load, t0 = loadavg(), time.time()
    rows: list[dict[str, object]] = []
    lines = [
        "## False alarms per window (no change)",
        "",
        f"{reps_null} independent (reference, window) pairs per cell; upper = exact 95 % Clopper-Pearson bound.",
        "",
        "| window (images) | alpha | windows with an alarm | rate | 95 % upper | every image as independent | call-rate p <= alpha: Fisher | binomial vs reference rate as known |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for alpha in (0.01, 0.05):
        for window in windows_null:
            fa = false_alarms(window, alpha, reps_null)
            naive = false_alarms(window, alpha, reps_null, one_per_patient=False)
            rows.append({"table": "false_alarm", "window": window, "alpha": alpha, **fa, "naive_rate": naive["rate"]})
            lines.append(
                f"| {window} | {alpha} | {fa['alarms']}/{reps_null} | {fa['rate']:.4f} | {fa['upper95']:.4f} | "
                f"{naive['rate']:.4f} | {fa['fisher_rate']:.4f} | {fa['binomial_rate']:.4f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "## Detection (change from the first image; alpha = 0.01 per window)",
        "",
        f"{reps} replicates per cell, streams of 12 windows; delay = images until the end of the first alarmed window.",
        "",
        "| scenario | window | power of one window | median delay | 90th pct delay | detected within 12 windows | test that fired first (most often) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, scenario, lab in SCENARIOS[:2] if args.smoke else SCENARIOS:
        for window in windows_det:
            det = detection(scenario, lab, window, 0.01, reps, 3 if args.smoke else 12)
            rows.append({"table": "detection", "scenario": label, "window": window, "alpha": 0.01, **det})
            lines.append(
                f"| {label} | {window} | {det['power_first_window']:.2f} | {det['median_delay']} | {det['p90_delay']} | "
                f"{det['detected']:.2f} | {det['first_test']} |"
            )
            print(lines[-1], flush=True)
    end_load = loadavg()
    lines += ["", f"Wall time {time.time() - t0:.0f} s; load average {start_load} -> {end_load}."]
    if args.smoke:
        print("\n".join(lines))
        return 0
    args.results.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with open(args.results / "monitor_power.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (args.results / "monitor_power.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
