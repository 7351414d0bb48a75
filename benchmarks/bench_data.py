"""Decode + preprocess throughput of chestxr's image pipeline against a plain baseline.

    python benchmarks/bench_data.py [--quick] [--shared PATH] [--passes N] [--size 224]

For the real DICOMs (``SHARED/data/dicom``) and the full-resolution NIH PNGs
(``SHARED/data/nih14-fullres/images``) it measures images/s to a normalized (3, 224, 224) tensor:

* baseline: pydicom (apply_voi_lut, min/max, MONOCHROME1 flip) or Pillow ``convert("RGB")``, then
  torchvision ``Resize(224) + CenterCrop(224) + ToTensor + Normalize`` per item, as a user would write it;
* chestxr cold: ``read_image`` + ``build_transform`` (no cache);
* chestxr cache build: filling the decode cache (1 process);
* chestxr cached: ``ImageCache.get`` (hits) + ``build_transform``; also with train-time augmentation;
* DataLoader, 2 workers: the baseline and chestxr cached + augmentation, batch size 8;
* torchxrayvision (``xrv.utils.read_xray`` / XRayCenterCrop + XRayResizer), only when it is installed.

Every pipeline runs in its own fresh (spawned) process, so "peak RSS" is that pipeline's own
``ru_maxrss`` (interpreter + torch included; DataLoader rows add the largest worker's peak).
"traced peak" is tracemalloc's peak over one pass (Python + numpy buffers only: Pillow and torch
allocate outside it). That pass doubles as the untimed warm-up (imports, decoder plugins, OS file
cache), so "cold" means "no decode cache", not "cold disk". images/s is the best of the timed
passes (the least disturbed by other load on the machine). ``SHARED`` defaults to $CHESTXR_SHARED or
``../shared`` beside the repository.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- per-item pipelines


def baseline_item(path: str, size: int = 224) -> Any:
    """What a user writes without chestxr: decode, 8-bit RGB PIL image, torchvision transforms."""
    import numpy as np
    from PIL import Image

    tfm = _baseline_tfm(size)
    if path.lower().endswith(".dcm"):
        import pydicom
        from pydicom.pixels import apply_voi_lut

        ds = pydicom.dcmread(path)
        arr = apply_voi_lut(ds.pixel_array, ds).astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 1.0 - arr
        img = Image.fromarray((arr * 255).astype(np.uint8)).convert("RGB")
    else:
        img = Image.open(path).convert("RGB")
    return tfm(img)


_TFM: dict[int, Any] = {}


def _baseline_tfm(size: int) -> Any:
    if size not in _TFM:
        from torchvision import transforms as T

        _TFM[size] = T.Compose(
            [T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )
    return _TFM[size]


class ItemDataset:
    """Minimal map-style dataset: path -> tensor via ``fn`` (picklable for DataLoader workers)."""

    def __init__(self, paths: list[str], fn: Callable[[str], Any]) -> None:
        self.paths, self.fn = paths, fn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        return self.fn(self.paths[i])


class ChestxrItem:
    """read (direct or cached) + chestxr transform, picklable."""

    def __init__(self, loader: Any, transform: Any) -> None:
        self.loader, self.transform = loader, transform

    def __call__(self, path: str) -> Any:
        return self.transform(self.loader(path))


class BaselineItem:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, path: str) -> Any:
        return baseline_item(path, self.size)


class XrvItem:
    """torchxrayvision's documented recipe (only used when the package is installed)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, path: str) -> Any:
        import numpy as np
        import torch
        import torchvision
        import torchxrayvision as xrv

        if path.lower().endswith(".dcm"):  # torchxrayvision >= 1.3: read_xray_dcm, (H, W) in [-1024, 1024]
            img = xrv.utils.read_xray_dcm(path)[None]
        else:
            from PIL import Image

            img = xrv.utils.normalize(np.asarray(Image.open(path).convert("L"), dtype=np.float32), 255)
            img = img[None]
        tfm = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(self.size)])
        return torch.from_numpy(tfm(img))


# ----------------------------------------------------------------------------- runners (child processes)


def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def run_pipeline(name: str, paths: list[str], passes: int, size: int, cache_dir: str) -> dict[str, Any]:
    """Runs in a fresh process; returns images/s and peak RSS."""
    import torch

    from chestxr.core import AugmentConfig, PreprocessConfig
    from chestxr.imaging import ImageCache, ReadOptions, build_image_loader, build_transform, read_image

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pre = PreprocessConfig(size=size, channels=3, resize="crop", normalization="imagenet", cache_size=max(256, size))
    eval_t = build_transform(pre, None, train=False)
    train_t = build_transform(pre, AugmentConfig(), train=True)
    cached = build_image_loader(pre, cache_dir=cache_dir)

    if name == "torchxrayvision":
        try:
            import torchxrayvision  # noqa: F401
        except ImportError:
            return {"skipped": "torchxrayvision is not installed"}

    if name == "chestxr cache build":
        # the timed pass fills a fresh cache; the warm-up uses another folder
        ImageCache(cache_dir + "-warm", options=ReadOptions.from_config(pre), side=pre.cache_size).build(
            paths[:1], workers=1, progress=False
        )
        cache = ImageCache(cache_dir + "-timed", options=ReadOptions.from_config(pre), side=pre.cache_size)
        t0 = time.perf_counter()
        counts = cache.build(paths, workers=1, progress=False)
        dt = time.perf_counter() - t0
        assert counts["failed"] == 0, counts["failures"]
        return {"n": len(paths), "seconds": dt, "rss": _peak_mib()}  # one pass: a second would be all hits

    if name.startswith("DataLoader"):
        from torch.utils.data import DataLoader

        fn = BaselineItem(size) if "baseline" in name else ChestxrItem(cached, train_t)
        if "chestxr" in name:
            cached.cache.build(paths, workers=1, progress=False)
        loader = DataLoader(
            ItemDataset(paths, fn),
            batch_size=8,
            num_workers=2,
            persistent_workers=True,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        for _ in loader:  # warm-up epoch: worker start, imports
            pass
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            n = sum(batch.shape[0] for batch in loader)
            times.append(time.perf_counter() - t0)
        del loader  # shuts the persistent workers down, so RUSAGE_CHILDREN sees them
        return {"n": n, "seconds": min(times), "rss": _peak_mib(), "worker_rss": _peak_mib(resource.RUSAGE_CHILDREN)}

    fns: dict[str, Callable[[str], Any]] = {
        "baseline (pydicom/Pillow + torchvision)": BaselineItem(size),
        "chestxr cold (read_image + transform)": lambda p: eval_t(read_image(p)),
        "chestxr cached (eval)": ChestxrItem(cached, eval_t),
        "chestxr cached + train augmentation": ChestxrItem(cached, train_t),
        "torchxrayvision": XrvItem(size),
    }
    fn = fns[name]
    if "cached" in name:
        cached.cache.build(paths, workers=1, progress=False)
    tracemalloc.start()  # untimed warm-up pass, traced: peak Python + numpy allocations
    for p in paths:
        out = fn(p)
        assert tuple(out.shape[-2:]) == (size, size), (name, tuple(out.shape))
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        times.append(time.perf_counter() - t0)
    return {"n": len(paths), "seconds": min(times), "rss": _peak_mib(), "traced": traced}


def _child(queue: Any, *args: Any) -> None:
    try:
        queue.put(run_pipeline(*args))
    except Exception as exc:  # report, do not hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_isolated(*args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


# ----------------------------------------------------------------------------- main


PIPELINES = [
    "baseline (pydicom/Pillow + torchvision)",
    "chestxr cold (read_image + transform)",
    "chestxr cache build",
    "chestxr cached (eval)",
    "chestxr cached + train augmentation",
    "DataLoader x2 workers: baseline",
    "DataLoader x2 workers: chestxr cached + augmentation",
    "torchxrayvision",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        default=os.environ.get("CHESTXR_SHARED", str(REPO.parent / "shared")),
        help="the shared folder holding data/ (default: $CHESTXR_SHARED or ../shared)",
    )
    parser.add_argument("--quick", action="store_true", help="2 timed passes over at most 8 images per set")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: 1 pass over 2 images per set, in-process, synthetic images when the shared data is absent "
        "(tests/test_benchmarks.py runs it)",
    )
    parser.add_argument("--passes", type=int, default=3, help="timed passes over each set (default 3)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)

    data = Path(args.shared) / "data"
    sets = {
        "DICOM (shared/data/dicom)": sorted(str(p) for p in (data / "dicom").glob("*.dcm")),
        "PNG 1024 px (nih14-fullres)": sorted(str(p) for p in (data / "nih14-fullres" / "images").glob("*.png")),
    }
    passes = 1 if args.smoke else 2 if args.quick else args.passes
    if args.quick or args.smoke:
        sets = {k: v[: 2 if args.smoke else 8] for k, v in sets.items()}
    tmp_root = tempfile.TemporaryDirectory(prefix="chestxr-bench-synth-")
    if args.smoke and not all(sets.values()):
        sets = _synthetic_sets(Path(tmp_root.name), sets)
    run = run_pipeline if args.smoke else run_isolated  # smoke: in-process, so errors are tracebacks
    errors = 0
    print(
        f"# chestxr data benchmark: size {args.size}, best of {passes} timed pass(es), "
        f"{os.cpu_count()} CPU(s), python {sys.version.split()[0]}\n"
    )
    print("| images | pipeline | images/s | peak RSS MiB | traced peak MiB | vs baseline |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="chestxr-bench-") as tmp:
        for set_name, paths in sets.items():
            if not paths:
                print(f"| {set_name} | (no images found under {data}) | | | | |")
                continue
            base_rate = dl_base = None
            for i, name in enumerate(PIPELINES):
                res = run(name, paths, passes, args.size, os.path.join(tmp, f"cache-{set_name[:3]}-{i}"))
                errors += "error" in res
                if "skipped" in res or "error" in res:
                    print(
                        f"| {set_name} ({len(paths)}) | {name} | skipped: {res.get('skipped') or res['error']} | | | |"
                    )
                    continue
                rate = res["n"] / res["seconds"]
                if name.startswith("baseline"):
                    base_rate = rate
                if name == "DataLoader x2 workers: baseline":
                    dl_base = rate
                ref = dl_base if name.startswith("DataLoader") else base_rate
                rss = f"{res['rss']:.0f}" + (f" (+{res['worker_rss']:.0f}/worker)" if "worker_rss" in res else "")
                ratio = f"{rate / ref:.2f}x" if ref else ""
                traced = f"{res['traced']:.1f}" if "traced" in res else ""
                print(f"| {set_name} ({len(paths)}) | {name} | {rate:.1f} | {rss} | {traced} | {ratio} |", flush=True)
    print(
        "\nimages/s: best timed pass. DataLoader rows are compared with the DataLoader baseline, the others "
        "with the in-process baseline. peak RSS: the pipeline's own process (interpreter + torch included); "
        "traced peak: tracemalloc's peak over one pass (Python + numpy buffers; Pillow and torch "
        "allocate outside it)."
    )
    tmp_root.cleanup()
    if errors:
        print(f"{errors} pipeline(s) failed")
    return 1 if errors else 0


def _synthetic_sets(root: Path, sets: dict[str, list[str]]) -> dict[str, list[str]]:
    """Stand-ins for absent real-data sets (smoke only): 2 synthetic DICOMs / 2 PNGs of 512 px."""
    from chestxr.data import generate_synthetic_dataset

    out = dict(sets)
    for (name, paths), frac in zip(sets.items(), (1.0, 0.0)):
        if not paths:
            generate_synthetic_dataset(root / name[:3], n_images=2, seed=0, size=512, dicom_fraction=frac)
            out[name + " [synthetic stand-in]"] = sorted(str(p) for p in (root / name[:3] / "images").iterdir())
            del out[name]
    return out


if __name__ == "__main__":
    sys.exit(main())
