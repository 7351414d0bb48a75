"""Batch inference past one process: plain predict vs ``--engine ray`` (Ray Data) on the same cached images.

    python benchmarks/bench_distributed.py [--smoke | --quick | --full] [--images N] [--backbone resnet18]
                                           [--threads 2] [--json FILE]

Inputs: ``--images`` synthetic radiographs (``generate_synthetic_dataset``, 256 px, half PNG half DICOM;
2,000 at --full, 400 at --quick, 24 at --smoke), every one a distinct file (the Ray engine keys results by
content, so repeated files would be scored once), and a run folder with random weights (``--backbone``,
resnet18 by default, tiny at --smoke; 14 findings; default preprocessing: 224 px letterbox). The decode cache
(``cache_dir``) is filled before any timing, so every row reads the same small cached arrays.

Rows (one process; each row's wall time covers everything that engine does for those images):

* plain predict: ``Run.logits`` + ``scores_from_logits`` (what ``chestxr predict`` runs: Dataset, 2
  DataLoader workers, batch 32);
* Ray start-up: ``ray.init`` of a local Ray with 2 CPUs (paid once per job by ``chestxr predict --engine ray``
  without ``--ray-address``);
* ray, 1 actor: ``score_with_ray`` (chestxr/runs/_ray_predict.py) into an empty store (hash tasks, decode
  tasks, one model actor with 1 CPU, results written as Parquet parts); the actor pool starts inside it;
* ray, 2 actors: the same with two actors of 0.5 CPU each (so a decode task still fits on 2 CPUs);
* ray, rerun: the 1-actor job again on its full store (what a resumed or repeated job pays: hashing only).

images/s = images / wall seconds of the row. Peak memory: the largest sum of PSS (proportional set size:
shared pages split between the processes sharing them, so Ray's object store counts once) over this
process and all its descendants (DataLoader workers; raylet, GCS and Ray workers), sampled every 0.2 s.
"max |diff|": the largest difference of a probability from the plain row's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


class TreeMemory:
    """Peak of the summed PSS (MiB) of this process and its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak_kb = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(os.getpid())))
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(os.getpid())))

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def has_ray() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401

        return True
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--images", type=int, default=None, help="distinct images (default 2000; --quick 400)")
    ap.add_argument("--backbone", default=None, help="resnet18 (default) or tiny (--smoke)")
    args = ap.parse_args(argv)
    C.setup_torch(args.threads)
    n = args.images or (24 if args.smoke else 400 if args.quick else 2000)
    backbone = args.backbone or ("tiny" if args.smoke else "resnet18")
    batch = 8 if args.smoke else 32
    machine = C.machine_description()
    print(f"bench_distributed ({C.mode_name(args)}): {machine}", flush=True)
    import numpy as np
    from bench_predict import make_run

    from chestxr.data import generate_synthetic_dataset
    from chestxr.imaging import ImageCache, LoaderOptions, ReadOptions
    from chestxr.runs import Run

    rows: list[dict[str, Any]] = []
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        manifest = generate_synthetic_dataset(tmp / "synth", n_images=n, seed=0, size=256, dicom_fraction=0.5)
        paths = sorted(str(p) for p in (manifest.parent / "images").rglob("*") if p.is_file())
        run_dir = make_run(tmp / "run", backbone)
        run = Run.load(run_dir, device="cpu")
        pre = run.preprocessing
        cache_dir = str(tmp / "cache")
        ImageCache(cache_dir, options=ReadOptions.from_config(pre), side=pre.cache_size).build(
            paths, workers=2, progress=False
        )
        print(f"{len(paths)} images generated and cached in {time.perf_counter() - t0:.1f} s", flush=True)
        run.logits(paths[:batch], loading=LoaderOptions(batch, 0, cache_dir))  # warm-up, untimed

        def row(name: str, seconds: float, mem: float | None, diff: float | None, note: str = "") -> None:
            rows.append(
                {
                    "pipeline": name,
                    "n": len(paths),
                    "seconds": seconds,
                    "images_per_s": len(paths) / seconds if seconds and name != "Ray start-up" else None,
                    "peak_pss_mb": mem,
                    "max_abs_diff": diff,
                    "note": note,
                }
            )

        with TreeMemory() as mem:
            t0 = time.perf_counter()
            preds = run.logits(paths, loading=LoaderOptions(batch, 2, cache_dir))
            ref = run.scores_from_logits(preds.logits)
            secs = time.perf_counter() - t0
        row("plain predict (Run.logits, 2 DataLoader workers)", secs, mem.peak_mb, 0.0)

        if not has_ray():
            row("ray: skipped (pip install 'chestxr[ray]')", float("nan"), None, None)
        else:
            import ray

            import chestxr
            from chestxr.runs._ray_predict import RayOptions, score_with_ray

            with TreeMemory() as mem:
                t0 = time.perf_counter()
                ray.init(
                    num_cpus=2,
                    include_dashboard=False,
                    runtime_env={"py_modules": [str(Path(chestxr.__file__).parent)]},
                    logging_level="WARNING",
                )
                start = time.perf_counter() - t0
            row("Ray start-up", start, mem.peak_mb, None, "ray.init, local, 2 CPUs")
            try:
                plans = [
                    ("ray, 1 actor (1 CPU)", RayOptions(actors=1, batch_size=batch), "store1"),
                    (
                        "ray, 2 actors (0.5 CPU each)",
                        RayOptions(actors=2, cpus_per_actor=0.5, batch_size=batch),
                        "store2",
                    ),
                    ("ray, rerun on a full store (1 actor)", RayOptions(actors=1, batch_size=batch), "store1"),
                ]
                for name, opts, store in plans:
                    with TreeMemory() as mem:
                        got = score_with_ray(
                            run, paths, store_dir=tmp / store, options=opts, cache_dir=cache_dir, progress=False
                        )
                    diff = float(np.max(np.abs(got.scores - ref))) if got.ok.all() else float("nan")
                    stages = ", ".join(
                        f"{k} {v:.1f} s" for k, v in got.seconds.items() if k not in ("ray_start", "total")
                    )
                    row(
                        name,
                        got.seconds["total"],
                        mem.peak_mb,
                        diff,
                        f"{stages}; computed {got.computed}, reused {got.reused}",
                    )
            finally:
                ray.shutdown()
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    load["end"] = os.getloadavg()
    C.print_table(
        f"Batch inference, {n} cached 256 px images, {backbone}, batch {batch}, {args.threads} torch threads "
        f"(load average {load['start'][0]:.2f} -> {load['end'][0]:.2f})",
        ["pipeline", "n", "seconds", "images/s", "vs plain", "peak PSS MiB (tree)", "max abs diff", "stages"],
        [
            [
                r["pipeline"],
                r["n"],
                r["seconds"],
                r["images_per_s"],
                f"{r['images_per_s'] / rows[0]['images_per_s']:.2f}x" if r["images_per_s"] else None,
                r["peak_pss_mb"],
                r["max_abs_diff"],
                r["note"],
            ]
            for r in rows
        ],
    )
    C.write_json(args.json, {"machine": machine, "load_avg": load, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
