"""Scale and memory: a 100,000-row manifest streams through the Dataset; CLI peak memory on real data.

    python benchmarks/bench_scale.py [--quick | --full] [--shared PATH] [--threads 2] [--json FILE]

(a) 100k-row manifest. A few hundred small synthetic PNGs (128 px) are listed over and over (as hard
    links, since a manifest may list a file only once) in a manifest of 100,000 rows (unique patient per ~3 rows, 4 findings with 1/0/-1/blank). Measured:
    * building the LabeledSet (``data.load_labeled_set``: read + validate the manifest, label
      policy, evaluation labels) - seconds and memory growth;
    * ``ChestXRayDataset`` + ``DataLoader`` (batch 32, in-process, 64 px) over the first
      ``--items`` rows: RSS after the first 10% of batches and at the end, so the growth per item
      shows whether images are being held (they must not be: ~0 KiB/item);
    * the baseline a naive training script uses: preload the same items' decoded, transformed
      tensors into a list before training - its growth per item, extrapolated to 100k rows.
(b) Peak RSS (VmHWM of the process, imports included) of real commands on the shared NIH PNGs
    (``data_manifests/nih14_shared.csv``, 421 images, paths re-rooted at ``--shared``):
    ``chestxr train`` (tiny backbone, 1 epoch, batch 16, 224 px, in-process loading) and
    ``chestxr predict`` on the same images, next to the floor of ``from chestxr.runs import train, predict_run`` (torch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FINDINGS = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]


def make_big_manifest(tmp: Path, *, rows: int, n_images: int) -> Path:
    """A ``rows``-row manifest cycling over ``n_images`` synthetic 128 px PNGs (each row its own hard link,
    since a manifest may list an image only once)."""
    import os

    import numpy as np
    import pandas as pd

    from chestxr.data import generate_synthetic_dataset

    small = generate_synthetic_dataset(tmp / "imgs", n_images=n_images, seed=0, size=128, dicom_fraction=0.0)
    src = pd.read_csv(small)
    paths = [str((small.parent / p).resolve()) for p in src["path"]]
    rng = np.random.default_rng(0)
    idx = np.arange(rows) % len(paths)
    links = []
    for i in range(rows):
        d = tmp / "rows" / f"{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        dst = d / f"{i:06d}.png"
        try:
            os.link(paths[idx[i]], dst)
        except OSError:
            os.symlink(paths[idx[i]], dst)
        links.append(str(dst))
    frame = pd.DataFrame(
        {
            "path": links,
            "patient_id": [f"P{i // 3:06d}" for i in range(rows)],
            "study_id": [f"S{i:07d}" for i in range(rows)],
            "view": "PA",
        }
    )
    for f in FINDINGS:
        v = rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), size=rows, p=[0.15, 0.75, 0.05, 0.05])
        frame[f] = v
    out = tmp / "big.csv"
    frame.to_csv(out, index=False)
    return out


def bench_manifest_stream(tmp: Path, *, rows: int, n_images: int, items: int) -> list[dict[str, Any]]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from chestxr.core import LabelPolicy, PreprocessConfig
    from chestxr.data import load_labeled_set
    from chestxr.imaging import build_dataset, collate

    manifest = make_big_manifest(tmp, rows=rows, n_images=n_images)
    rows_out: list[dict[str, Any]] = []

    base = C.rss_mb()
    C.reset_peak_rss()
    t0 = time.perf_counter()
    ls = load_labeled_set(manifest, findings=FINDINGS, policy=LabelPolicy())
    secs = time.perf_counter() - t0
    rows_out.append(
        {
            "task": f"LabeledSet for {len(ls):,} rows (read, validate, label policy)",
            "items": len(ls),
            "seconds": secs,
            "rss_growth_mb": C.rss_mb() - base,
            "peak_growth_mb": C.peak_rss_mb() - base,
            "kib_per_item": 1024 * (C.rss_mb() - base) / len(ls),
        }
    )

    pre = PreprocessConfig(size=64, cache_size=64)
    paths = ls.paths
    ds = build_dataset(
        paths=paths,
        targets=ls.targets,
        mask=ls.mask,
        preprocessing=pre,
        augmentation=None,
        train=True,
        cache_dir=None,
        seed=0,
    )
    sub = Subset(ds, range(items))
    loader = DataLoader(sub, batch_size=32, num_workers=0, collate_fn=collate)
    n_batches = len(loader)
    first = max(1, n_batches // 10)
    rss_first = None
    seen = 0
    C.reset_peak_rss()
    t0 = time.perf_counter()
    for i, b in enumerate(loader):
        seen += len(b["index"])
        if i + 1 == first:
            rss_first, seen_first = C.rss_mb(), seen
    secs = time.perf_counter() - t0
    rss_end = C.rss_mb()
    per_item = 1024 * (rss_end - rss_first) / max(seen - seen_first, 1)
    rows_out.append(
        {
            "task": f"chestxr Dataset + DataLoader, {items:,} of {len(ls):,} rows streamed",
            "items": items,
            "seconds": secs,
            "rss_growth_mb": rss_end - rss_first,
            "peak_growth_mb": C.peak_rss_mb() - rss_first,
            "kib_per_item": per_item,
            "images_per_s": items / secs,
        }
    )
    del loader, sub

    base = C.rss_mb()
    C.reset_peak_rss()
    t0 = time.perf_counter()
    stacked = torch.empty((items, *ds.image_shape))
    for i in range(items):
        stacked[i] = ds[i]["image"]
    secs = time.perf_counter() - t0
    growth = C.rss_mb() - base
    per = 1024 * growth / items
    rows_out.append(
        {
            "task": f"baseline: preload {items:,} decoded tensors (64 px) first",
            "items": items,
            "seconds": secs,
            "rss_growth_mb": growth,
            "peak_growth_mb": C.peak_rss_mb() - base,
            "kib_per_item": per,
            "extrapolated_100k_gb": per * 100_000 / 2**20,
            "extrapolated_100k_224_gb": 3 * 224 * 224 * 4 * 100_000 / 2**30,
        }
    )
    del stacked
    return rows_out


def bench_cli(tmp: Path, shared: Path, *, quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    import pandas as pd

    src = C.REPO / "data_manifests" / "nih14_shared.csv"
    images = shared / "data" / "nih14" / "images"
    if not images.is_dir():
        print(f"no NIH images under {images}; CLI memory rows skipped")
        return []
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    frame["path"] = [str(images / Path(p).name) for p in frame["path"]]
    if quick or smoke:
        frame = frame.iloc[: 24 if smoke else 120]
    size = 64 if smoke else 224
    manifest = tmp / "nih.csv"
    frame.to_csv(manifest, index=False)
    rows = []
    floor = C.run_cli_peak(["--version"])
    import subprocess

    code = (
        "from chestxr.runs import train, predict_run\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    t0 = time.perf_counter()
    kb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(C.REPO)).stdout.strip()
    rows.append(
        {
            "command": "python -c 'from chestxr.runs import train, predict_run' (torch, torchvision)",
            "images": 0,
            "seconds": time.perf_counter() - t0,
            "peak_mb": float(kb) / 1024 if kb else None,
            "workers_peak_mb": None,
        }
    )
    rows.append(
        {
            "command": "chestxr --version",
            "images": 0,
            "seconds": floor["wall_s"],
            "peak_mb": floor["peak_mb"],
            "workers_peak_mb": None,
        }
    )
    run = tmp / "run"
    argv = [
        "train",
        "--manifest",
        str(manifest),
        "--out",
        str(run),
        "--set",
        "model.backbone=tiny",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=16",
        "--set",
        "data.num_workers=0",
        "--set",
        f"preprocessing.size={size}",
    ]
    r = C.run_cli_peak(argv)
    failed = r.get("code") != 0
    if failed:
        print("chestxr train failed:", r["stderr"])
    rows.append(
        {
            "command": f"chestxr train (tiny, 1 epoch, batch 16, {size} px, {len(frame)} NIH PNGs, 0 workers)",
            "images": len(frame),
            "seconds": r["wall_s"],
            "peak_mb": r.get("peak_mb"),
            "workers_peak_mb": None,
            "failed": failed,
        }
    )
    for workers in (0, 2):
        out = tmp / f"pred{workers}"
        r = C.run_cli_peak(
            [
                "predict",
                "--checkpoint",
                str(run),
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--workers",
                str(workers),
            ]
        )
        if r.get("code") != 0:
            print("chestxr predict failed:", r["stderr"])
        rows.append(
            {
                "command": f"chestxr predict ({len(frame)} NIH PNGs, {workers} workers)",
                "images": len(frame),
                "seconds": r["wall_s"],
                "peak_mb": r.get("peak_mb"),
                "workers_peak_mb": r.get("children_peak_mb") if workers else None,
                "failed": r.get("code") != 0,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=None, help="rows streamed (default 4,000; --quick 1,000)")
    args = ap.parse_args(argv)
    C.setup_torch(args.threads)
    items = args.items or (100 if args.smoke else 1000 if args.quick else 4000)
    if args.smoke:
        args.rows = min(args.rows, 5_000)
    machine = C.machine_description()
    print(f"bench_scale ({C.mode_name(args)}): {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        stream = bench_manifest_stream(
            tmp, rows=args.rows, n_images=20 if args.smoke else 100 if args.quick else 300, items=items
        )
        C.print_table(
            f"{args.rows:,}-row manifest: labels and streaming memory",
            ["task", "items", "seconds", "RSS growth MiB", "peak growth MiB", "KiB per item"],
            [
                [r["task"], r["items"], r["seconds"], r["rss_growth_mb"], r["peak_growth_mb"], r["kib_per_item"]]
                for r in stream
            ],
        )
        base = stream[-1]
        print(
            f"preloading all {args.rows:,} rows would take ~{base['kib_per_item'] * args.rows / 2**20:.1f} GiB at "
            f"64 px and {base['extrapolated_100k_224_gb'] * args.rows / 100_000:.1f} GiB at 3 x 224 x 224 float32; "
            "the chestxr Dataset holds only paths and the label arrays.\n",
            flush=True,
        )
        cli = bench_cli(tmp, Path(args.shared), quick=args.quick, smoke=args.smoke)
        if cli:
            C.print_table(
                "Peak memory of real commands (NIH PNGs from the shared data)",
                ["command", "images", "wall s", "peak RSS MiB", "largest worker peak MiB"],
                [[r["command"], r["images"], r["seconds"], r["peak_mb"], r["workers_peak_mb"]] for r in cli],
            )
    C.write_json(args.json, {"machine": machine, "stream": stream, "cli": cli})
    failed = [r["command"] for r in cli if r.get("failed")]
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
