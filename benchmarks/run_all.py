"""Run every benchmark in sequence and print its tables (``make bench``).

    python benchmarks/run_all.py              # --quick settings (a few minutes per benchmark on 2 cores)
    python benchmarks/run_all.py --full       # the settings the README numbers come from
    python benchmarks/run_all.py --smoke      # seconds each: every code path once (tests/test_benchmarks.py)
    python benchmarks/run_all.py --only bench_train bench_predict --shared /data/shared

Every ``benchmarks/bench_*.py`` is run (a new benchmark needs no registration here; each must accept
``--smoke`` and ``--quick``). Each benchmark runs as its own process (``python benchmarks/NAME.py [--quick]``), so one's memory
or threads never disturb the next; a failing benchmark is reported and the others still run.
The exit code is the number of benchmarks that failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ["bench_data", "bench_manifest", "bench_bootstrap", "bench_train", "bench_predict", "bench_scale"]
BENCHMARKS = FIRST + sorted(p.stem for p in HERE.glob("bench_*.py") if p.stem not in FIRST)
TAKES_SHARED = {"bench_data", "bench_train", "bench_predict", "bench_scale"}


def command(name: str, *, full: bool, shared: str | None, smoke: bool = False) -> list[str]:
    """The command line that runs benchmark ``name``."""
    cmd = [sys.executable, str(HERE / f"{name}.py")]
    if smoke:
        cmd.append("--smoke")
    elif not full:
        cmd.append("--quick")
    if shared and name in TAKES_SHARED:
        cmd += ["--shared", shared]
    return cmd


def loadavg() -> str:
    """The 1/5/15-minute load averages (``/proc/loadavg``), or "n/a": every number is read beside them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run every chestxr benchmark in sequence.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings (the default)")
    mode.add_argument("--full", action="store_true", help="the full settings (README numbers)")
    mode.add_argument("--smoke", action="store_true", help="seconds each: every code path once")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="run only these")
    ap.add_argument("--shared", default=None, help="folder holding data/ (default: $CHESTXR_SHARED or ../shared)")
    args = ap.parse_args(argv)
    env = {**os.environ, "CHESTXR_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    failed, took = [], []
    for name in args.only or BENCHMARKS:
        cmd = command(name, full=args.full, shared=args.shared, smoke=args.smoke)
        start_load = loadavg()
        print(f"\n{'=' * 100}\n== {name}: {' '.join(cmd[1:])}  (load average {start_load})\n{'=' * 100}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, env=env, cwd=str(HERE.parent))
        took.append((name, time.perf_counter() - t0, code, start_load, loadavg()))
        if code != 0:
            failed.append(name)
            print(f"!! {name} exited with code {code}", flush=True)
    print("\n| benchmark | seconds | exit code | load average at start | at end |\n| --- | ---: | ---: | --- | --- |")
    for name, secs, code, load0, load1 in took:
        print(f"| {name} | {secs:.0f} | {code} | {load0} | {load1} |")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
