"""Batch inference throughput on DICOMs (decode included): chestxr vs a per-image loop, plus exports.

    python benchmarks/bench_predict.py [--quick | --full] [--shared PATH] [--threads 2] [--json FILE]

Inputs: the real DICOMs in ``SHARED/data/dicom`` (8 files: CR/DX, uncompressed, JPEG, JPEG
Lossless, RLE, JPEG 2000, up to 2140 x 1760; the list of paths repeats them to ``--items``), and
synthetic DICOMs from ``chestxr.data.generate_synthetic_dataset`` (1024 px, 16-bit).
Models: the ``tiny`` and ``resnet18`` backbones (random weights; 14 findings; 224 px letterbox).

Pipelines (each after an untimed warm-up on a few images; same paths, same preprocessing):

* per-image loop: ``read_image`` -> eval transform -> ``model(x[None])``, one at a time, eval + no_grad;
* chestxr batch: ``Run.logits`` (what ``chestxr predict`` runs: Dataset + 2 DataLoader
  workers decoding in parallel, batch 32, channels_last);
* TorchScript: the file ``chestxr.runs.export_model`` writes, loaded with ``torch.jit.load``, fed
  by the same batched pipeline;
* ONNX Runtime (CPU provider), same pipeline, when ``onnx`` and ``onnxruntime`` are importable.

"max |diff|" compares each pipeline's logits with the eager batch pipeline's. "model only" is
images/s of the forward pass on one pre-decoded batch of 32 (no decoding), to separate the model
format from the (dominant) decode cost. Peak RSS: this process's VmHWM reset before each row
(DataLoader workers are forked processes and not included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chestxr.data import NIH14 as FINDINGS  # noqa: E402


def make_run(run_dir: Path, backbone: str) -> Path:
    """A run folder (model.safetensors + model.json) with random weights and default preprocessing."""
    import torch

    from chestxr.core import Config, config_to_dict
    from chestxr.modeling import build_model
    from chestxr.runs import save_model

    torch.manual_seed(0)
    model = build_model(backbone, len(FINDINGS)).eval()
    cfg = config_to_dict(Config())
    save_model(
        run_dir,
        model,
        {
            "format": "chestxr-model",
            "findings": FINDINGS,
            "mode": "multilabel",
            "preprocessing": cfg["preprocessing"],
            "label_policy": cfg["labels"],
        },
    )
    return run_dir


def has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        return True
    except ImportError:
        return False


class _OrtModule:
    """Callable (B, C, S, S) tensor -> logits tensor through an onnxruntime session."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.session.run(["logits"], {"image": x.contiguous().numpy()})[0])


def _batched(run, fn: Callable, paths: list[str], *, batch: int, workers: int):
    """Logits (n, f) for ``paths`` with the Run.logits data pipeline and ``fn`` as the model."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from chestxr.imaging import build_dataset, collate

    ds = build_dataset(
        paths=paths,
        targets=None,
        mask=None,
        preprocessing=run.preprocessing,
        augmentation=None,
        train=False,
        cache_dir=None,
        n_findings=len(run.findings),
    )
    loader = DataLoader(ds, batch_size=batch, num_workers=workers if len(ds) > batch else 0, collate_fn=collate)
    out = []
    with torch.no_grad():
        for b in loader:
            out.append(fn(b["image"]).float().numpy())
    return np.concatenate(out)


def _per_image(run, paths: list[str]):
    import numpy as np
    import torch

    from chestxr.imaging import ReadOptions, build_transform, read_image

    pre = run.preprocessing
    opts, tfm, model = ReadOptions.from_config(pre), build_transform(pre, None, train=False), run.model
    out = []
    with torch.no_grad():
        for p in paths:
            out.append(model(tfm(read_image(p, opts))[None]).numpy()[0])
    return np.stack(out)


def _model_only(fn: Callable, x, repeats: int) -> float:
    import torch

    with torch.no_grad():
        fn(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(x)
    return repeats * len(x) / (time.perf_counter() - t0)


def bench_set(
    set_name: str,
    paths: list[str],
    backbone: str,
    tmp: Path,
    *,
    threads: int,
    batch: int,
    workers: int,
    model_repeats: int,
) -> list[dict[str, Any]]:
    """Rows for one image set x backbone."""
    import warnings

    import numpy as np
    import torch

    from chestxr.imaging import LoaderOptions
    from chestxr.runs import Run, export_model

    run_dir = tmp / f"run-{backbone}"
    if not run_dir.exists():
        make_run(run_dir, backbone)
    run = Run.load(run_dir, device="cpu")
    warm = paths[: min(4, len(paths))]
    x = torch.randn(
        batch, 3, run.preprocessing.size, run.preprocessing.size, generator=torch.Generator().manual_seed(0)
    )
    rows: list[dict[str, Any]] = []

    def row(pipeline: str, fn: Callable[[list[str]], Any], ref=None, model_fn=None) -> Any:
        fn(warm)
        C.reset_peak_rss()
        t0 = time.perf_counter()
        logits = fn(paths)
        secs = time.perf_counter() - t0
        rows.append(
            {
                "images": set_name,
                "backbone": backbone,
                "pipeline": pipeline,
                "n": len(paths),
                "images_per_s": len(paths) / secs,
                "peak_rss_mb": C.peak_rss_mb(),
                "max_abs_diff": None if ref is None else float(np.max(np.abs(logits - ref))),
                "model_only_images_per_s": _model_only(model_fn, x, model_repeats) if model_fn else None,
            }
        )
        return logits

    ref = row(
        "chestxr batch (Run.logits, 2 workers)",
        lambda ps: run.logits(ps, loading=LoaderOptions(batch, workers)).logits,
        model_fn=lambda t: run.model(t.contiguous(memory_format=torch.channels_last)),
    )
    rows[-1]["max_abs_diff"] = 0.0
    row("per-image loop (read_image, transform, model(x[None]))", lambda ps: _per_image(run, ps), ref=ref)
    ts_path = tmp / f"{backbone}.pt"
    if not ts_path.exists():
        export_model(run_dir, ts_path, format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(ts_path))
    row(
        "TorchScript, batched",
        lambda ps: _batched(run, scripted, ps, batch=batch, workers=workers),
        ref=ref,
        model_fn=scripted,
    )
    if has_onnx():
        onnx_path = tmp / f"{backbone}.onnx"
        if not onnx_path.exists():
            export_model(run_dir, onnx_path, format="onnx")
        ort_fn = _OrtModule(onnx_path, threads)
        row(
            "ONNX Runtime (CPU), batched",
            lambda ps: _batched(run, ort_fn, ps, batch=batch, workers=workers),
            ref=ref,
            model_fn=ort_fn,
        )
    else:
        rows.append(
            {
                "images": set_name,
                "backbone": backbone,
                "pipeline": "ONNX Runtime: skipped (pip install onnx onnxruntime)",
                "n": len(paths),
                "images_per_s": None,
                "peak_rss_mb": None,
                "max_abs_diff": None,
                "model_only_images_per_s": None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--items", type=int, default=None, help="paths per set (default 64; --quick 16)")
    ap.add_argument("--backbones", nargs="+", default=["tiny", "resnet18"])
    args = ap.parse_args(argv)
    C.setup_torch(args.threads)
    items = args.items or (4 if args.smoke else 16 if args.quick else 64)
    batch, workers = (2 if args.smoke else 8 if args.quick else 32), 2
    synth_size = 256 if args.smoke else 1024
    if args.smoke and args.backbones == ["tiny", "resnet18"]:
        args.backbones = ["tiny"]
    machine = C.machine_description()
    print(f"bench_predict ({C.mode_name(args)}): {machine}", flush=True)
    print(f"onnx/onnxruntime importable: {has_onnx()}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sets: list[tuple[str, list[str]]] = []
        real = sorted(str(p) for p in (Path(args.shared) / "data" / "dicom").glob("*.dcm"))
        if real:
            sets.append((f"real DICOM ({len(real)} files, repeated)", [real[i % len(real)] for i in range(items)]))
        else:
            print(f"no DICOMs found under {Path(args.shared) / 'data' / 'dicom'}; real-data rows skipped")
        from chestxr.data import generate_synthetic_dataset

        manifest = generate_synthetic_dataset(
            tmp / "synth", n_images=items, seed=0, size=synth_size, dicom_fraction=1.0
        )
        synth = sorted(str(p) for p in (manifest.parent / "images").rglob("*.dcm"))
        sets.append((f"synthetic DICOM {synth_size} px ({len(synth)})", synth))
        for set_name, paths in sets:
            for bb in args.backbones:
                rows += bench_set(
                    set_name,
                    paths,
                    bb,
                    tmp,
                    threads=args.threads,
                    batch=batch,
                    workers=workers,
                    model_repeats=1 if args.quick or args.smoke else 2,
                )
    C.print_table(
        f"Inference on DICOMs, decode included (batch {batch}, {args.threads} torch threads)",
        [
            "images",
            "backbone",
            "pipeline",
            "n",
            "images/s",
            "vs per-image loop",
            "model only images/s",
            "max abs diff vs eager",
            "peak RSS MiB",
        ],
        [
            [
                r["images"],
                r["backbone"],
                r["pipeline"],
                r["n"],
                r["images_per_s"],
                _ratio(r, rows),
                r["model_only_images_per_s"],
                r["max_abs_diff"],
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )
    C.write_json(args.json, {"machine": machine, "rows": rows})
    return 0


def _ratio(r: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    loop = next(
        (
            x
            for x in rows
            if x["images"] == r["images"] and x["backbone"] == r["backbone"] and x["pipeline"].startswith("per-image")
        ),
        None,
    )
    if loop is None or not r["images_per_s"]:
        return None
    return f"{r['images_per_s'] / loop['images_per_s']:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
