"""``chestxr monitor`` on a large inference log: 1,000,000 logged predictions (14 findings) end to end.

    OMP_NUM_THREADS=1 python benchmarks/bench_monitor.py            # --full: 1,000,000 entries (minutes)
    python benchmarks/bench_monitor.py --quick                       # 100,000 entries
    python benchmarks/bench_monitor.py --smoke                       # 3,000 entries, seconds (tests/test_benchmarks.py)

1. A real run folder: the tiny recipe trained for one epoch on synthetic radiographs with the 14 NIH
   findings, calibrated (youden) on its validation split, so ``calibrate`` writes the reference profile.
2. A synthetic inference log in the documented format (``chestxr.runs._inference_log``: a header with
   this run's weights/thresholds/profile hashes, then one JSON line per image): rows resampled from the
   reference profile (scores, calls, embedding sketch, acquisition fields, numeric fields), keyed-hash-shaped
   image/study/patient ids (two images per patient), times spread evenly over 365 days.
3. Each measured in a fresh interpreter (its own peak RSS, VmHWM, imports included):
   - baseline ``json``: every line ``json.loads``-ed, scores into one preallocated numpy array (the least
     any reader does);
   - baseline ``pyarrow.json`` (where pyarrow is installed): the file read into an Arrow table;
   - ``read_inference_logs``: chestxr's reader (columns, duplicates, headers checked);
   - ``chestxr monitor --window 7d`` (and ``--window 5000``): read, every test of every window, Holm, and
     monitor.html / monitor.json / alarms.csv written; its exit code (0 quiet, 3 alarm) is shown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO = C.REPO


def make_run(tmp: Path, *, n_images: int) -> Path:
    """A trained (tiny, 1 epoch) and calibrated run on synthetic images with the 14 NIH findings."""
    import pandas as pd

    from chestxr.core import load_config
    from chestxr.data import NIH14, generate_synthetic_dataset
    from chestxr.runs import calibrate_run, train

    manifest = generate_synthetic_dataset(tmp / "data", n_images=n_images, seed=3, size=48, with_split=True)
    frame = pd.read_csv(manifest)  # the generator draws 4 findings: the other NIH columns get random labels
    rng = np.random.default_rng(3)
    for name in NIH14:
        if name not in frame.columns:
            frame[name] = (rng.random(len(frame)) < 0.3).astype(int)
    frame.to_csv(manifest, index=False)
    overrides = [
        f"data.manifest={manifest}",
        "model.backbone=tiny",
        "preprocessing.size=32",
        "preprocessing.cache_size=48",
        "data.num_workers=0",
        "train.batch_size=16",
        "train.epochs=1",
        f"data.findings=[{','.join(NIH14)}]",
        "name=bench-monitor",
    ]
    run = train(load_config(None, overrides), out_dir=tmp / "run", log=lambda s: None).run_dir
    calibrate_run(run, manifest, split="val", method="youden", n_boot=100)
    return Path(run)


def write_log(run: Path, path: Path, *, n: int, seed: int = 0, days: float = 365.0, batch: int = 50_000) -> int:
    """``n`` entries resampled from ``run``'s reference profile, in the documented log format; returns bytes."""
    from chestxr.runs import load_reference_profile, load_run, run_log_header

    profile = load_reference_profile(run)
    header = run_log_header(load_run(run, device="cpu"), source="predict", sketch_dim=int(profile.sketch.shape[1]))
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-05T00:00:00.000", "ms")
    step_ms = days * 86_400_000 / n
    fields = {k: np.asarray(v, dtype=object) for k, v in profile.fields.items()}
    numeric = {k: np.asarray(v, dtype=np.float64) for k, v in profile.numeric.items()}

    def hexes(prefix: str, ids: np.ndarray) -> list[str]:
        return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in ids.tolist()]

    with open(path, "w", encoding="ascii") as fh:
        fh.write(json.dumps(header.to_json(), separators=(",", ":")) + "\n")
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            rows = rng.integers(0, len(profile), hi - lo)
            idx = np.arange(lo, hi)
            times = (start + (idx * step_ms).astype("timedelta64[ms]")).astype(str)
            images, patients = hexes("i", idx), hexes("p", idx // 2)
            scores = np.clip(profile.scores[rows] + rng.normal(0, 0.002, (hi - lo, len(profile.findings))), 0, 1)
            for j, r in enumerate(rows.tolist()):
                entry = {
                    "t": times[j] + "Z",
                    "image": images[j],
                    "study": images[j],
                    "patient": patients[j],
                    "fields": {k: v[r] for k, v in fields.items() if v[r] not in (None, "")},
                    "numeric": {k: round(float(v[r]), 6) for k, v in numeric.items() if np.isfinite(v[r])},
                    "scores": [round(s, 7) for s in scores[j].tolist()],
                    "calls": profile.calls[r].tolist(),
                    "sketch": [round(s, 5) for s in profile.sketch[r].tolist()],
                }
                fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
    return path.stat().st_size


_BASELINE_JSON = r"""
import json, sys, time
import numpy as np
path, n, f = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
scores = np.empty((n, f))
i = 0
with open(path, "rb") as fh:
    for line in fh:
        obj = json.loads(line)
        if "scores" in obj:
            scores[i] = obj["scores"]
            i += 1
assert i == n, (i, n)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

_BASELINE_ARROW = r"""
import json, sys, time
t0 = time.perf_counter()
import pyarrow.json as pj
table = pj.read_json(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": table.num_rows}))
"""

_READER = r"""
import json, sys, time
t0 = time.perf_counter()
from chestxr.runs import read_inference_logs
log = read_inference_logs([sys.argv[1]])
assert len(log) == int(sys.argv[2]), len(log)
print(json.dumps({"seconds": time.perf_counter() - t0, "torch": "torch" in sys.modules}))
"""

_PEAK = r"""
import resource, runpy, sys
def hwm():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import atexit, json
atexit.register(lambda: print("PEAK " + json.dumps(hwm())))
exec(compile(sys.argv.pop(1), "<bench>", "exec"))
"""


def _fresh(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; its last JSON line plus ``peak_mb`` (VmHWM) and ``wall_s``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHESTXR_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, textwrap.dedent(script), *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed: {proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    info = json.loads(next(x for x in reversed(lines) if x.startswith("{")))
    info["peak_mb"] = float(next(x for x in reversed(lines) if x.startswith("PEAK ")).split()[1])
    info["wall_s"] = wall
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--entries", type=int, default=None, help="log entries (default 1,000,000; --quick 100,000)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # the tiny run's bootstrap warnings: not what is measured
    n = args.entries or (3_000 if args.smoke else 100_000 if args.quick else 1_000_000)
    machine = C.machine_description()
    print(f"bench_monitor ({C.mode_name(args)}): {machine}; load average {os.getloadavg()}", flush=True)
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        run = make_run(tmp, n_images=80 if args.smoke else 240)
        print(f"run trained and calibrated in {time.perf_counter() - t0:.1f} s", flush=True)
        log = tmp / "logs" / "inference_log.jsonl"
        log.parent.mkdir()
        t0 = time.perf_counter()
        size = write_log(run, log, n=n)
        print(f"{n:,} entries written ({size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.1f} s", flush=True)
        from chestxr.data import NIH14

        base = _fresh(_BASELINE_JSON, str(log), str(n), str(len(NIH14)))
        rows.append(["baseline: json.loads per line, scores into numpy", n, base["seconds"], base["peak_mb"], ""])
        try:
            import pyarrow  # noqa: F401

            arrow = _fresh(_BASELINE_ARROW, str(log))
            rows.append(["baseline: pyarrow.json.read_json (whole table)", n, arrow["seconds"], arrow["peak_mb"], ""])
        except ImportError:
            rows.append(["baseline: pyarrow.json.read_json", n, None, None, "pyarrow not installed"])
        reader = _fresh(_READER, str(log), str(n))
        rows.append(
            [
                "chestxr.runs.read_inference_logs",
                n,
                reader["seconds"],
                reader["peak_mb"],
                "torch imported" if reader["torch"] else "no torch",
            ]
        )
        for window in ("7d", "5000"):
            res = C.run_cli_peak(
                [
                    "monitor",
                    "--checkpoint",
                    str(run),
                    str(log.parent),
                    "--out",
                    str(tmp / f"mon-{window}"),
                    "--window",
                    window,
                ],
                env={"PYTHONPATH": str(REPO)},
                timeout=3600,
            )
            if res.get("code") not in (0, 3):
                print(res.get("stderr"), file=sys.stderr)
                return 1
            doc = json.loads((tmp / f"mon-{window}" / "monitor.json").read_text())
            rows.append(
                [
                    f"chestxr monitor --window {window} (end to end)",
                    n,
                    res["seconds"],
                    res["peak_mb"],
                    f"exit {res['code']}; {len(doc['windows'])} windows, {len(doc['alarms'])} alarms",
                ]
            )
    C.print_table(
        f"Monitoring {n:,} logged predictions (14 findings), fresh process each; load average {os.getloadavg()}",
        ["step", "entries", "seconds", "peak RSS MiB", "note"],
        rows,
    )
    C.write_json(args.json, {"machine": machine, "entries": n, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
