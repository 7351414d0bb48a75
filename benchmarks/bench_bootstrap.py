"""Benchmark: patient-level bootstrap intervals for AUROC/sensitivity/specificity/PPV/NPV/F1.

Compares chestxr.evaluation.bootstrap_metrics (vectorised: integer resample weights per patient,
one sort per finding, sparse products and cumulative sums for a whole chunk of resamples) with
the usual loop (draw patients, gather their images, sklearn roc_auc_score + confusion counts per
resample per finding), timed on a few resamples in the same run and extrapolated. The loop is
fed the very same resamples, so the per-resample AUROCs are checked to agree.

    python benchmarks/bench_bootstrap.py            # 100,000 predictions x 14 findings, 1,000 resamples
    python benchmarks/bench_bootstrap.py --quick    # 20,000 x 14, 200 resamples (a few seconds)

Synthetic predictions (no image data needed): ~3 images per patient, prevalences 1-20%, 5% of the
labels masked. Peak memory is the largest extra numpy allocation seen by tracemalloc during the
call (inputs excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chestxr.evaluation import (
    bootstrap_metrics,
    bootstrap_replicates,
    draw_resample_counts,
    group_index,
    rates_from_counts,  # noqa: E402
)


def make_predictions(n: int, f: int, images_per_patient: float, seed: int):
    """(y (n, f), scores (n, f), mask (n, f), groups (n,), thresholds (f,)) with patient clustering."""
    rng = np.random.default_rng(seed)
    n_pat = max(1, int(n / images_per_patient))
    groups = np.sort(rng.integers(0, n_pat, n))
    prev = np.linspace(0.01, 0.20, f)
    y_pat = rng.random((n_pat, f)) < prev  # labels mostly shared by a patient's images
    flip = rng.random((n, f)) < 0.1
    y = np.where(flip, rng.random((n, f)) < prev, y_pat[groups])
    logit = rng.normal(0, 1, (n_pat, f))[groups] * 0.5 + rng.normal(0, 1, (n, f)) + 1.5 * y - 2.0
    scores = (1 / (1 + np.exp(-logit))).astype(np.float32)
    mask = rng.random((n, f)) >= 0.05
    return y.astype(np.float32), scores, mask, groups, np.full(f, 0.3)


def sklearn_loop(y, s, mask, thr, groups, n_resamples: int, seed: int):
    """The per-resample baseline on the same resamples as chestxr's: returns (seconds, aurocs (k, f))."""
    from sklearn.metrics import roc_auc_score

    g, n_groups = group_index(groups, y.shape[0])
    counts = draw_resample_counts(n_groups, n_resamples, np.random.default_rng(seed))
    out = np.full((n_resamples, y.shape[1]), np.nan)
    t0 = time.perf_counter()
    for b in range(n_resamples):
        idx = np.repeat(np.arange(y.shape[0]), counts[g, b].astype(np.int64))  # the drawn patients' images
        yb, sb, mb = y[idx], s[idx], mask[idx]
        for j in range(y.shape[1]):
            yy, ss = yb[mb[:, j], j] >= 0.5, sb[mb[:, j], j]
            out[b, j] = roc_auc_score(yy, ss)
            pred = ss >= thr[j]
            rates_from_counts(np.sum(pred & yy), np.sum(pred & ~yy), np.sum(~pred & ~yy), np.sum(~pred & yy))
    return time.perf_counter() - t0, out


def measure(fn):
    """(seconds, peak extra MB) of fn(): timed without tracing, then traced once for memory."""
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 predictions, 200 resamples, 2 baseline resamples")
    ap.add_argument(
        "--smoke", action="store_true", help="seconds: 2,000 predictions, 20 resamples (tests/test_benchmarks.py)"
    )
    ap.add_argument("--n", type=int, default=100_000, help="predictions (images)")
    ap.add_argument("--findings", type=int, default=14)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--images-per-patient", type=float, default=3.0)
    ap.add_argument("--sklearn-resamples", type=int, default=3, help="resamples the baseline loop is timed on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_boot, args.sklearn_resamples = 20_000, 200, 2
    if args.smoke:
        args.n, args.n_boot, args.sklearn_resamples = 2_000, 20, 1

    y, s, mask, groups, thr = make_predictions(args.n, args.findings, args.images_per_patient, args.seed)
    n_pat = np.unique(groups).size
    print(
        f"{args.n:,} predictions x {args.findings} findings, {n_pat:,} patients, {args.n_boot} resamples; "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )

    rows = []
    sec, mb, ci = measure(lambda: bootstrap_metrics(y, s, mask, thr, groups=groups, n_boot=args.n_boot, seed=args.seed))
    rows.append(("chestxr vectorised, by patient", args.n_boot, sec, sec * 1000 / args.n_boot, mb))
    sec_i, mb_i, _ = measure(lambda: bootstrap_metrics(y, s, mask, thr, n_boot=args.n_boot, seed=args.seed))
    rows.append(("chestxr vectorised, by image", args.n_boot, sec_i, sec_i * 1000 / args.n_boot, mb_i))
    k = args.sklearn_resamples
    sec_sk, auc_sk = sklearn_loop(y, s, mask, thr, groups, k, args.seed)
    rows.append(("sklearn loop, by patient (timed)", k, sec_sk, sec_sk * 1000 / k, float("nan")))

    ours = bootstrap_replicates(y, s, mask, thr, groups=groups, n_boot=k, seed=args.seed)["auroc"]
    max_diff = float(np.nanmax(np.abs(ours - auc_sk)))
    speedup = (sec_sk / k) / (sec / args.n_boot)

    print("\n| method | resamples | time (s) | s per 1,000 resamples | peak extra memory (MB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, b, t, per1k, m in rows:
        print(f"| {name} | {b} | {t:.2f} | {per1k:.2f} | {'-' if np.isnan(m) else f'{m:.0f}'} |")
    print(
        f"\nsklearn loop extrapolated to {args.n_boot} resamples: {sec_sk / k * args.n_boot:.0f} s; "
        f"vectorised speed-up: {speedup:.0f}x"
    )
    print(f"per-resample AUROC, vectorised vs sklearn on the same {k} resamples: max |diff| = {max_diff:.1e}")
    print(
        f"AUROC 95% interval of the rarest finding (prevalence 1%): [{ci['auroc'][0, 0]:.4f}, {ci['auroc'][0, 1]:.4f}]"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "findings": args.findings,
                    "patients": int(n_pat),
                    "n_boot": args.n_boot,
                    "rows": [dict(zip(("method", "resamples", "seconds", "s_per_1000", "peak_mb"), r)) for r in rows],
                    "speedup": speedup,
                    "max_auroc_diff": max_diff,
                },
                indent=2,
                default=float,
            ).replace("NaN", "null")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
