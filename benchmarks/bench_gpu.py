"""The GPU path, measured: training ceiling vs chestxr's real loop, inference, Grad-CAM, peak GPU memory.

    python benchmarks/bench_gpu.py [--smoke | --quick | --full] [--out DIR] [--deadline S] [--workers N]

Every number comes from one process on one GPU (``cuda:0``), in *cells*. A cell builds its own model and
optimizer, runs a fixed number of warm-up steps, then a fixed number of timed steps between two
``torch.cuda.synchronize()`` calls; images/s = images in the timed steps / seconds between the two
synchronisations. Peak memory is ``torch.cuda.max_memory_allocated`` since the cell started (the CPU
dry run reports the process's peak RSS instead). A cell that raises (out of memory, an unsupported
dtype, a kernel error) or runs past its time limit is recorded as ``failed`` with the error and the
next cell runs; cells that would start after ``--deadline`` seconds are recorded as ``skipped``.
Cells run in priority order, so a deadline cuts the least important ones.

Sections (14 findings, random-init torchvision backbones through ``chestxr.modeling.build_model``):

* ``ceiling`` - plain PyTorch train step on a synthetic batch already on the GPU (no data loading):
  ``AdamW``, ``BCEWithLogitsLoss``, autocast (bf16/fp16, GradScaler for fp16), NCHW or channels_last,
  ``cudnn.benchmark`` on and deterministic algorithms off (as timm's benchmark). The most any loop gets.
* ``baseline`` - the plain loop a user would write on the same cached data: chestxr's Dataset (decode
  cache + train augmentation) through a default ``DataLoader(shuffle, pin_memory, persistent_workers)``,
  ``.to(device, non_blocking=True)``, the same step as ``ceiling``.
* ``chestxr`` - what ``chestxr train`` runs per epoch: ``chestxr.modeling.build_train_model`` /
  ``build_loaders`` from a Config (decode cache, augmentation, ``GlobalBatchSampler``, the loader
  settings chestxr chooses), ``optim.build_optimizer`` / ``build_scheduler`` / ``make_loss``,
  ``chestxr.modeling.seed_everything`` and ``train_one_epoch`` (finite-loss check, grad clip 1.0,
  schedule). Its ratio to the ``ceiling`` of the same model/size/batch/precision/layout is the
  issue's goal (>= 90 %). Variants flip one setting each (``train.cudnn_benchmark``, deterministic
  algorithms, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``, a host sync at the end of
  every step as the engine did before issue 26, workers, batch size), so a GPU session can keep or
  revert each with numbers from the same run (the "loader" column says what each cell's DataLoader had).
* ``infer`` - eval, batch 256: ``ceiling`` (synthetic batch on the GPU, ``inference_mode``) vs
  ``chestxr`` (``chestxr.modeling.predict`` over the loader ``Run.logits`` builds: decode cache, eval transform,
  pinned memory).
* ``gradcam`` - ``chestxr.reporting.grad_cam`` one image at a time, as ``predict --explain``
  calls it (fp32, the model in channels_last after ``Run.logits``): maps/s.

``--smoke`` runs every section's code on the CPU in seconds (32 px, batch 4, fp32 only, 1 worker, one
warm-up and one timed step; numbers meaningless): tests/test_benchmarks.py runs it, so the script
cannot rot. Only the ``torch.compile`` cell is left out of it (minutes of compilation on a CPU).
``--quick`` and ``--full`` need CUDA; without it they print "no CUDA device" and exit 0.

Time: ``--full`` is sized for about 6-8 minutes on one H100/H200-class GPU (default ``--deadline
480``): per training cell 5 warm-up + 10 timed steps (about 2-10 s with model build and cuDNN
autotuning), per inference cell 3 + 10 batches, Grad-CAM 3 + 20 maps, the compile cell 3 + 10 steps
(expected 1-2 min, last). Each cell's hard limit is its ``limit`` (below) or the time left before the
deadline, whichever is smaller.

Output: tables on stdout; with ``--out DIR`` also ``DIR/bench_gpu.json`` (every cell, the environment:
GPU name, driver, torch / CUDA / cuDNN versions, TF32 flags) and ``DIR/bench_gpu.md`` (the same as
Markdown, ready for benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N_FINDINGS = 14
PRECISIONS = ("fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    mode: str
    device: str
    models: tuple[str, ...]
    sizes: tuple[int, ...]
    train_batch: dict[int, int]  # image side -> training batch
    infer_batch: int
    precisions: tuple[str, ...]
    warmup: int
    steps: int
    infer_warmup: int
    infer_steps: int
    cam_warmup: int
    cam_steps: int
    workers: int
    distinct_images: int
    image_side: int  # synthetic PNG side (>= every cache side)
    deadline_s: float
    compile: bool

    def cache_side(self, size: int) -> int:
        """Decode-cache side for model input ``size`` (the presets' 256 for 224: size * 8 / 7, rounded up to 8)."""
        return -(-size * 8 // 7 // 8) * 8 if size >= 64 else size + 4


def settings(mode: str, *, workers: Optional[int], deadline: Optional[float], device: Optional[str]) -> Settings:
    cores = os.cpu_count() or 2
    if mode == "smoke":
        return Settings(
            mode=mode,
            device=device or "cpu",
            models=("densenet121", "resnet50"),
            sizes=(32,),
            train_batch={32: 4},
            infer_batch=2,
            precisions=("fp32",),
            warmup=1,
            steps=1,
            infer_warmup=1,
            infer_steps=1,
            cam_warmup=1,
            cam_steps=1,
            workers=workers if workers is not None else 1,
            distinct_images=4,
            image_side=48,
            deadline_s=deadline or 600.0,
            compile=False,
        )
    full = mode == "full"
    return Settings(
        mode=mode,
        device=device or "cuda",
        models=("densenet121", "resnet50") if full else ("densenet121",),
        sizes=(224, 512) if full else (224,),
        train_batch={224: 256, 512: 64},
        infer_batch=256,
        precisions=PRECISIONS,
        warmup=5 if full else 3,
        steps=10 if full else 5,
        infer_warmup=3,
        infer_steps=10 if full else 5,
        cam_warmup=3,
        cam_steps=20 if full else 10,
        workers=workers if workers is not None else max(1, min(14, cores - 2)),
        distinct_images=128 if full else 64,
        image_side=640 if full else 288,
        deadline_s=deadline or (480.0 if full else 180.0),
        compile=full,
    )


# ----------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One measurement. ``kind``: ceiling | baseline | chestxr | infer_ceiling | infer_chestxr | gradcam."""

    kind: str
    model: str
    size: int
    batch: int
    precision: str = "bf16"
    channels_last: bool = True
    variant: str = "default"
    knobs: dict[str, Any] = field(default_factory=dict)
    limit_s: float = 60.0
    expect_s: float = 10.0  # not started when less than this is left before the deadline
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "NCHW"

    def key(self) -> tuple:
        return (self.model, self.size, self.batch, self.precision, self.channels_last)

    def row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "size": self.size,
            "batch": self.batch,
            "precision": self.precision,
            "layout": self.layout,
            "variant": self.variant,
            "knobs": self.knobs,
            "limit_s": self.limit_s,
            **self.result,
        }


def plan(st: Settings) -> list[Cell]:
    """Every cell in priority order (the deadline cuts from the end)."""
    cells: list[Cell] = []
    smoke = st.mode == "smoke"
    precs = [p for p in ("bf16", "fp32", "fp16") if p in st.precisions]
    main = precs[0]  # bf16 on a GPU run, fp32 in the smoke run

    def core(model: str, size: int, *, all_precisions: bool) -> None:
        b = st.train_batch[size]
        cells.append(Cell("ceiling", model, size, b, main, True))
        cells.append(Cell("chestxr", model, size, b, main, True))
        cells.append(Cell("baseline", model, size, b, main, True))
        cells.append(Cell("infer_ceiling", model, size, st.infer_batch, main, True))
        cells.append(Cell("infer_chestxr", model, size, st.infer_batch, main, True))
        cells.append(Cell("gradcam", model, size, 1, "fp32", True))
        cells.append(Cell("ceiling", model, size, b, main, False))
        for p in precs[1:] if all_precisions else [q for q in precs[1:] if q == "fp32"]:
            cells.append(Cell("ceiling", model, size, b, p, True))
            if all_precisions:
                cells.append(Cell("ceiling", model, size, b, p, False))
        if all_precisions:
            for p in precs[1:]:
                cells.append(Cell("chestxr", model, size, b, p, True))
            cells.append(Cell("chestxr", model, size, b, main, False))
        if "fp32" in precs and main != "fp32":
            cells.append(Cell("infer_ceiling", model, size, st.infer_batch, "fp32", True))

    def settings_cells(model: str, size: int) -> None:
        b = st.train_batch[size]
        for variant, knobs in (
            ("pin_memory flipped", {"flip": "pin_memory"}),
            ("persistent_workers flipped", {"flip": "persistent_workers"}),
            ("prefetch_factor 4", {"loader": {"prefetch_factor": 4}}),
            ("host sync after every step (engine before issue 26)", {"sync_every_step": True}),
            (
                f"{max(1, min(8, st.workers))} workers (nih14 preset)",
                {"loader": {"num_workers": max(1, min(8, st.workers))}},
            ),
        ):
            cells.append(Cell("chestxr", model, size, b, main, True, variant, knobs))
        small = 2 if smoke else 32
        cells.append(Cell("ceiling", model, size, small, main, True, "batch 32 (nih14 preset)"))
        cells.append(Cell("chestxr", model, size, small, main, True, "batch 32 (nih14 preset)"))
        cells.append(Cell("ceiling", model, size, b, main, True, "fused AdamW", {"fused": True}))
        cells.append(
            Cell(
                "infer_chestxr", model, size, st.infer_batch, main, True, "2 workers (predict default)", {"workers": 2}
            )
        )
        # last: cuDNN keeps the plans it timed for the process, so a later cell of the same shape could reuse them
        for variant, knobs in (
            ("train.cudnn_benchmark: true", {"cudnn_benchmark": True}),
            (
                "train.cudnn_benchmark: true, deterministic algorithms off",
                {"cudnn_benchmark": True, "deterministic": False},
            ),
        ):
            cells.append(Cell("chestxr", model, size, b, main, True, variant, knobs))

    first, rest = st.models[0], st.models[1:]
    core(first, st.sizes[0], all_precisions=True)
    settings_cells(first, st.sizes[0])
    for m in rest:
        core(m, st.sizes[0], all_precisions=smoke)
    for size in st.sizes[1:]:
        for m in st.models:
            core(m, size, all_precisions=False)
    if st.compile:
        cells.append(
            Cell(
                "ceiling",
                first,
                st.sizes[0],
                st.train_batch[st.sizes[0]],
                main,
                True,
                "torch.compile",
                {"compile": True},
                limit_s=240.0,
                expect_s=120.0,
            )
        )
    return cells


# ----------------------------------------------------------------------------- helpers


class CellTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds`` (main thread, POSIX); the cell is then recorded as failed."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise CellTimeout(f"over its time limit of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def torch_flags(*, benchmark: Optional[bool] = None, deterministic: Optional[bool] = None) -> Iterator[None]:
    """Set cudnn.benchmark / deterministic algorithms for a cell and restore them afterwards."""
    import torch

    old_b = torch.backends.cudnn.benchmark
    old_d = torch.are_deterministic_algorithms_enabled()
    old_w = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        if deterministic is not None:
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
        yield
    finally:
        torch.backends.cudnn.benchmark = old_b
        torch.use_deterministic_algorithms(old_d, warn_only=old_w)


def amp_dtype(precision: str):
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        C.reset_peak_rss()


def peak_mib(device) -> float:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return C.peak_rss_mb()


def release(device) -> None:
    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class StepTimer:
    """Wraps a loader: the first ``warmup`` batches are not timed; the clock starts after a synchronize
    before batch ``warmup`` is fetched and stops after a synchronize once the loader is exhausted, so the
    timed window holds the data wait and the compute of exactly the timed steps.

    ``sync_every_step``: synchronize before fetching every batch (the engine's old host sync at the end
    of each step, as a variant). Exposes ``dataset`` so the engine's bad-image check sees the real one."""

    def __init__(self, loader, *, warmup: int, device, sync_every_step: bool = False) -> None:
        self.loader, self.warmup, self.device, self.sync_every_step = loader, warmup, device, sync_every_step
        self.dataset = getattr(loader, "dataset", None)
        self.t0 = self.t1 = 0.0
        self.wait = 0.0
        self.first_batch_s = 0.0
        self.timed_steps = 0
        self.timed_images = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        it = iter(self.loader)
        k = 0
        while True:
            if k == self.warmup:
                sync(self.device)
                self.t0 = time.perf_counter()
            elif self.sync_every_step and k > 0:
                sync(self.device)
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            if k == 0:
                self.first_batch_s = time.perf_counter() - start
            if k >= self.warmup:
                self.wait += time.perf_counter() - t
                self.timed_steps += 1
                self.timed_images += len(batch["index"]) if isinstance(batch, dict) else len(batch[0])
            k += 1
            yield batch
        sync(self.device)
        self.t1 = time.perf_counter()

    def numbers(self) -> dict[str, Any]:
        secs = self.t1 - self.t0
        return {
            "timed_steps": self.timed_steps,
            "images_timed": self.timed_images,
            "seconds_timed": secs,
            "img_s": self.timed_images / secs if secs > 0 and self.timed_images else None,
            "step_ms": 1000 * secs / self.timed_steps if self.timed_steps else None,
            "data_wait_ms_per_step": 1000 * self.wait / self.timed_steps if self.timed_steps else None,
            "first_batch_ms": 1000 * self.first_batch_s,
        }


def rebuild_loader(loader, **overrides):
    """The same DataLoader (dataset, batch sampler, collate, worker init) with some settings changed."""
    from torch.utils.data import DataLoader

    kw: dict[str, Any] = {
        "dataset": loader.dataset,
        "batch_sampler": loader.batch_sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "worker_init_fn": loader.worker_init_fn,
        "pin_memory": loader.pin_memory,
        "persistent_workers": loader.persistent_workers,
        "prefetch_factor": loader.prefetch_factor,
    }
    kw.update(overrides)
    if kw["num_workers"] == 0:
        kw["persistent_workers"], kw["prefetch_factor"] = False, None
    elif kw["prefetch_factor"] is None:
        kw["prefetch_factor"] = 2
    return DataLoader(**kw)


def loader_settings(loader) -> dict[str, Any]:
    return {
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "persistent_workers": loader.persistent_workers,
        "prefetch_factor": loader.prefetch_factor,
    }


# ----------------------------------------------------------------------------- data


def _generate_part(args: tuple[str, int, int, int]) -> list[str]:
    out, n, seed, side = args
    import pandas as pd

    from chestxr.data import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(out, n_images=n, seed=seed, size=side, dicom_fraction=0.0)
    frame = pd.read_csv(manifest)
    return [str((manifest.parent / p).resolve()) for p in frame["path"]]


@dataclass
class Data:
    paths: list[str]  # distinct synthetic PNGs
    cache_dir: str
    seconds: float


def make_data(st: Settings, root: Path) -> Data:
    """Synthetic PNG radiographs (chestxr.data.generate_synthetic_dataset) decoded once into the chestxr decode cache at
    every cache side the cells use (before CUDA is initialised: the generators are forked processes)."""
    from chestxr.core import PreprocessConfig
    from chestxr.imaging import ImageCache, ReadOptions

    t0 = time.perf_counter()
    procs = max(1, min(8, (os.cpu_count() or 2)))
    per = -(-st.distinct_images // procs)
    jobs = [(str(root / f"part{k}"), per, k, st.image_side) for k in range(procs)]
    paths: list[str] = []
    if procs > 1:
        with ProcessPoolExecutor(procs) as ex:
            for part in ex.map(_generate_part, jobs):
                paths += part
    else:
        paths = _generate_part(jobs[0])
    cache_dir = root / "cache"
    for size in st.sizes:
        pre = PreprocessConfig(size=size, cache_size=st.cache_side(size))
        report = ImageCache(cache_dir, options=ReadOptions.from_config(pre), side=pre.cache_size).build(
            paths, workers=procs, progress=False
        )
        if report["failed"]:
            raise RuntimeError(f"decode cache: {report['failures'][:3]}")
    return Data(paths=paths, cache_dir=str(cache_dir), seconds=time.perf_counter() - t0)


def _labeled(paths: list[str], seed: int):
    import numpy as np
    import pandas as pd

    from chestxr.data import NIH14, LabeledSet

    rng = np.random.default_rng(seed)
    n = len(paths)
    targets = (rng.random((n, N_FINDINGS)) < 0.2).astype(np.float32)
    mask = np.ones_like(targets, dtype=bool)
    frame = pd.DataFrame(
        {"path": paths, "patient_id": [f"p{i}" for i in range(n)], "study_id": [f"s{i}" for i in range(n)]}
    )
    return LabeledSet(
        frame=frame,
        findings=list(NIH14),
        targets=targets,
        mask=mask,
        eval_true=targets.copy(),
        eval_mask=mask.copy(),
        source="bench_gpu",
        manifest_hash="bench_gpu",
    )


def _config(st: Settings, cell: Cell, data: Data, **train: Any):
    from chestxr.core import config_from_dict

    amp = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}[cell.precision]
    return config_from_dict(
        {
            "model": {"backbone": cell.model},
            "preprocessing": {"size": cell.size, "cache_size": st.cache_side(cell.size)},
            "data": {"cache_dir": data.cache_dir, "num_workers": st.workers},
            "train": {"batch_size": cell.batch, "amp": amp, "channels_last": cell.channels_last, "lr": 1e-4, **train},
        }
    )


def _repeat(paths: list[str], n: int) -> list[str]:
    return [paths[i % len(paths)] for i in range(n)]


# ----------------------------------------------------------------------------- the cells


def run_ceiling(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    import torch

    from chestxr.modeling import build_model

    dev = torch.device(st.device)
    dtype = amp_dtype(cell.precision)
    with torch_flags(benchmark=True, deterministic=False):
        torch.manual_seed(0)
        model = build_model(cell.model, N_FINDINGS).to(dev)
        fmt = torch.channels_last if cell.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        opt_kw = {"fused": True} if cell.knobs.get("fused") else {}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **opt_kw)
        scaler = torch.amp.GradScaler(dev.type) if cell.precision == "fp16" else None
        crit = torch.nn.BCEWithLogitsLoss()
        g = torch.Generator(device=dev).manual_seed(0)
        xs = [
            torch.randn(cell.batch, 3, cell.size, cell.size, device=dev, generator=g).contiguous(memory_format=fmt)
            for _ in range(2)
        ]
        ys = [(torch.rand(cell.batch, N_FINDINGS, device=dev, generator=g) < 0.2).float() for _ in range(2)]
        fwd = torch.compile(model) if cell.knobs.get("compile") else model
        model.train()

        def step(i: int) -> None:
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                out = fwd(xs[i % 2])
            loss = crit(out.float(), ys[i % 2])
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()

        t = time.perf_counter()
        for i in range(st.warmup):
            step(i)
        sync(dev)
        warm = time.perf_counter() - t
        t0 = time.perf_counter()
        for i in range(st.steps):
            step(i)
        sync(dev)
        secs = time.perf_counter() - t0
    n = st.steps * cell.batch
    return {
        "img_s": n / secs,
        "step_ms": 1000 * secs / st.steps,
        "images_timed": n,
        "seconds_timed": secs,
        "warmup_s": warm,
    }


def run_baseline(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    """Plain loop on the same cached data (chestxr's Dataset, torch's default collate and loader)."""
    import torch
    from torch.utils.data import DataLoader

    from chestxr.core import AugmentConfig, PreprocessConfig
    from chestxr.imaging import build_dataset
    from chestxr.modeling import build_model

    dev = torch.device(st.device)
    dtype = amp_dtype(cell.precision)
    n = cell.batch * (st.warmup + st.steps)
    ls = _labeled(_repeat(data.paths, n), seed=1)
    ds = build_dataset(
        paths=ls.paths,
        targets=ls.targets,
        mask=ls.mask,
        preprocessing=PreprocessConfig(size=cell.size, cache_size=st.cache_side(cell.size)),
        augmentation=AugmentConfig(),
        train=True,
        cache_dir=data.cache_dir,
        seed=0,
    )
    w = st.workers
    loader = DataLoader(
        ds,
        batch_size=cell.batch,
        shuffle=True,
        drop_last=True,
        num_workers=w,
        pin_memory=dev.type == "cuda",
        persistent_workers=w > 0,
    )
    torch.manual_seed(0)
    fmt = torch.channels_last if cell.channels_last else torch.contiguous_format
    model = build_model(cell.model, N_FINDINGS).to(dev).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type) if cell.precision == "fp16" else None
    crit = torch.nn.BCEWithLogitsLoss()
    model.train()
    timer = StepTimer(loader, warmup=st.warmup, device=dev)
    for batch in timer:
        x = batch["image"].to(dev, non_blocking=True).contiguous(memory_format=fmt)
        y = batch["target"].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = crit(out.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    return {**timer.numbers(), "loader": loader_settings(loader)}


def run_chestxr(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    """train_one_epoch over the training loop's model and loaders, set up as fit() sets them up."""
    import torch

    from chestxr.modeling import (
        DistInfo,
        build_loaders,
        build_optimizer,
        build_scheduler,
        build_train_model,
        make_loss,
        resolve_amp,
        seed_everything,
        train_one_epoch,
    )

    dev = torch.device(st.device)
    knobs = cell.knobs
    config = _config(st, cell, data, **({"cudnn_benchmark": True} if knobs.get("cudnn_benchmark") else {}))
    n = cell.batch * (st.warmup + st.steps)
    train_set = _labeled(_repeat(data.paths, n), seed=1)
    val_set = _labeled(data.paths[: min(len(data.paths), cell.batch)], seed=2)
    info = DistInfo()
    torch.manual_seed(0)
    model, train_model = build_train_model(config, train_set.findings, device=dev, dist=info, log=lambda s: None)
    train_ds, sampler, loader, _val_loader = build_loaders(config, train_set, val_set, dev, info)
    if knobs.get("flip"):
        loader = rebuild_loader(loader, **{knobs["flip"]: not getattr(loader, knobs["flip"])})
    if knobs.get("loader"):
        loader = rebuild_loader(loader, **knobs["loader"])
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(sampler))
    amp = resolve_amp(config.train.amp, dev)
    scaler = torch.amp.GradScaler(dev.type) if amp == torch.float16 else None
    loss_fn = make_loss(pos_weight=None, info=info, ovr=False)
    sampler.set_epoch(0)
    train_ds.set_epoch(0)
    # what fit() calls at the start of every epoch (train.cudnn_benchmark is the config key)
    seed_everything(config.seed * 1000, cudnn_benchmark=config.train.cudnn_benchmark)
    flags = {}
    if "deterministic" in knobs:
        flags["deterministic"] = knobs["deterministic"]
    applied = {
        "cudnn_benchmark": knobs.get("cudnn_benchmark", torch.backends.cudnn.benchmark),
        "deterministic_algorithms": knobs.get("deterministic", torch.are_deterministic_algorithms_enabled()),
    }
    timer = StepTimer(loader, warmup=st.warmup, device=dev, sync_every_step=bool(knobs.get("sync_every_step")))
    with torch_flags(**flags):
        stats = train_one_epoch(
            train_model,
            timer,
            optimizer,
            loss_fn=loss_fn,
            device=dev,
            scheduler=scheduler,
            amp_dtype=amp,
            scaler=scaler,
            grad_clip=config.train.grad_clip,
            channels_last=config.train.channels_last,
            description="bench",
            total=len(sampler),
        )
    out = {**timer.numbers(), "loader": loader_settings(loader), **applied, "loss": stats.loss}
    # what the next epoch's start costs (worker start-up unless persistent_workers): time to its first batch
    sampler.set_epoch(1)
    train_ds.set_epoch(1)
    t = time.perf_counter()
    it = iter(loader)
    next(it)
    out["next_epoch_first_batch_ms"] = 1000 * (time.perf_counter() - t)
    del it
    return out


def run_infer_ceiling(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    import torch

    from chestxr.modeling import build_model

    dev = torch.device(st.device)
    dtype = amp_dtype(cell.precision)
    with torch_flags(benchmark=True, deterministic=False):
        fmt = torch.channels_last if cell.channels_last else torch.contiguous_format
        model = build_model(cell.model, N_FINDINGS).to(dev).to(memory_format=fmt).eval()
        g = torch.Generator(device=dev).manual_seed(0)
        xs = [
            torch.randn(cell.batch, 3, cell.size, cell.size, device=dev, generator=g).contiguous(memory_format=fmt)
            for _ in range(2)
        ]
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            for i in range(st.infer_warmup):
                model(xs[i % 2])
            sync(dev)
            t0 = time.perf_counter()
            for i in range(st.infer_steps):
                model(xs[i % 2])
            sync(dev)
            secs = time.perf_counter() - t0
    n = st.infer_steps * cell.batch
    return {"img_s": n / secs, "step_ms": 1000 * secs / st.infer_steps, "images_timed": n, "seconds_timed": secs}


def run_infer_chestxr(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    """engine.predict over the loader Run.logits builds (decode cache, eval transform, pinned on CUDA)."""
    import torch
    from torch.utils.data import DataLoader

    from chestxr.core import PreprocessConfig
    from chestxr.imaging import build_dataset, collate
    from chestxr.modeling import GlobalBatchSampler, build_model, predict

    dev = torch.device(st.device)
    n = cell.batch * (st.infer_warmup + st.infer_steps)
    ds = build_dataset(
        paths=_repeat(data.paths, n),
        targets=None,
        mask=None,
        preprocessing=PreprocessConfig(size=cell.size, cache_size=st.cache_side(cell.size)),
        augmentation=None,
        train=False,
        cache_dir=data.cache_dir,
        n_findings=N_FINDINGS,
    )
    sampler = GlobalBatchSampler(len(ds), global_batch=cell.batch, shuffle=False)
    workers = int(cell.knobs.get("workers", st.workers))
    loader = DataLoader(
        ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=dev.type == "cuda"
    )
    fmt = torch.channels_last if cell.channels_last else torch.contiguous_format
    model = build_model(cell.model, N_FINDINGS).to(dev).to(memory_format=fmt)
    timer = StepTimer(loader, warmup=st.infer_warmup, device=dev)
    preds = predict(
        model,
        timer,
        device=dev,
        amp_dtype=amp_dtype(cell.precision),
        channels_last=cell.channels_last,
        total=len(sampler),
        summary=False,
    )
    if len(preds.indices) != n:
        raise RuntimeError(f"predict returned {len(preds.indices)} rows for {n} images")
    return {**timer.numbers(), "loader": loader_settings(loader)}


def run_gradcam(st: Settings, cell: Cell, data: Data) -> dict[str, Any]:
    import torch

    from chestxr.core import PreprocessConfig
    from chestxr.imaging import build_image_loader, build_transform
    from chestxr.modeling import build_model
    from chestxr.reporting import grad_cam

    dev = torch.device(st.device)
    pre = PreprocessConfig(size=cell.size, cache_size=st.cache_side(cell.size))
    read = build_image_loader(pre, cache_dir=data.cache_dir)
    transform = build_transform(pre, None, train=False)
    k = st.cam_warmup + st.cam_steps
    images = [transform(read(p)).unsqueeze(0) for p in _repeat(data.paths, k)]
    model = build_model(cell.model, N_FINDINGS).to(dev).eval()
    if cell.channels_last:
        model = model.to(memory_format=torch.channels_last)  # as Run.logits leaves it
    for i in range(st.cam_warmup):
        grad_cam(model, images[i].to(dev), i % N_FINDINGS)
    sync(dev)
    t0 = time.perf_counter()
    for i in range(st.cam_warmup, k):
        cam = grad_cam(model, images[i].to(dev), i % N_FINDINGS)
    sync(dev)
    secs = time.perf_counter() - t0
    if cam.shape != (cell.size, cell.size):
        raise RuntimeError(f"Grad-CAM map {cam.shape}, expected {(cell.size, cell.size)}")
    return {
        "img_s": st.cam_steps / secs,
        "step_ms": 1000 * secs / st.cam_steps,
        "images_timed": st.cam_steps,
        "seconds_timed": secs,
    }


RUNNERS: dict[str, Callable[[Settings, Cell, Data], dict[str, Any]]] = {
    "ceiling": run_ceiling,
    "baseline": run_baseline,
    "chestxr": run_chestxr,
    "infer_ceiling": run_infer_ceiling,
    "infer_chestxr": run_infer_chestxr,
    "gradcam": run_gradcam,
}


def run_cell(st: Settings, cell: Cell, data: Data, *, remaining_s: float) -> None:
    """Run one cell, recording ok / failed (error, never raised) with its wall time and peak memory.

    Every cell starts from torch's defaults (cudnn.benchmark off, deterministic algorithms off), as a
    user's script or ``chestxr predict`` runs; the ceiling turns benchmark on, the chestxr training loop
    sets what ``fit`` sets (``seed_everything``); the flags are restored after each cell."""
    reset_peak(st.device)
    t = time.perf_counter()
    limit = min(cell.limit_s, remaining_s)
    try:
        with time_limit(limit), torch_flags(benchmark=False, deterministic=False):
            numbers = RUNNERS[cell.kind](st, cell, data)
        cell.result = {"status": "ok", **numbers}
    except Exception as exc:  # noqa: BLE001 - one failing cell must not end the run
        msg = f"{type(exc).__name__}: {exc}".strip().splitlines()
        cell.result = {"status": "failed", "error": " ".join(msg)[:400]}
        if not isinstance(exc, CellTimeout):
            cell.result["traceback"] = traceback.format_exc(limit=-4)[-2000:]
    cell.result["peak_mem_mib"] = peak_mib(st.device)
    cell.result["cell_s"] = time.perf_counter() - t
    release(st.device)


# ----------------------------------------------------------------------------- environment and output


def environment(st: Settings) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"machine": C.machine_description(), "mode": st.mode, "device": st.device}
    env["torch"] = torch.__version__
    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["workers"] = st.workers
    try:  # DataLoader workers hand batches over in shared memory: a small /dev/shm fails the loader cells
        import shutil

        env["dev_shm_gib"] = round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
    except OSError:
        env["dev_shm_gib"] = None
    env["tf32"] = {
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        env["torchvision"] = None
    if torch.device(st.device).type == "cuda":
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
            "multiprocessors": p.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
        env["driver"] = _driver_version()
    try:
        env["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=C.REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _driver_version() -> Optional[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        return text.split("Kernel Module")[1].split()[0] if "Kernel Module" in text else text.splitlines()[0]
    except (OSError, IndexError):
        return None


def add_ratios(cells: list[Cell]) -> None:
    """ratio_to_ceiling: a training cell's img/s over the default ceiling cell of the same model, size,
    batch, precision and layout (inference likewise against infer_ceiling); vs_default_pct: a variant's
    img/s against the default cell of its kind with the same model, size, batch, precision and layout."""
    ceil = {
        c.key(): c.result.get("img_s")
        for c in cells
        if c.kind == "ceiling" and c.variant in ("default", "batch 32 (nih14 preset)")
    }
    ceil_inf = {c.key(): c.result.get("img_s") for c in cells if c.kind == "infer_ceiling" and c.variant == "default"}
    for c in cells:
        ref = ceil if c.kind in ("baseline", "chestxr") else ceil_inf if c.kind == "infer_chestxr" else None
        if ref is None or c.result.get("status") != "ok":
            continue
        base = ref.get(c.key())
        if base and c.result.get("img_s"):
            c.result["ratio_to_ceiling"] = c.result["img_s"] / base
    default = {
        (c.kind, *c.key()): c.result.get("img_s")
        for c in cells
        if c.variant == "default" and c.result.get("status") == "ok"
    }
    for c in cells:
        base = default.get((c.kind, *c.key()))
        if c.variant != "default" and base and c.result.get("img_s"):
            c.result["vs_default_pct"] = 100.0 * (c.result["img_s"] / base - 1.0)


LOOP_LABEL = {
    "ceiling": "ceiling: plain step, synthetic batch on the GPU",
    "baseline": "plain PyTorch loop on the cached data",
    "chestxr": "chestxr train loop (fit's setup, train_one_epoch)",
    "infer_ceiling": "ceiling: synthetic batch on the GPU",
    "infer_chestxr": "chestxr predict (Run.logits loader, engine.predict)",
    "gradcam": "grad_cam, one image at a time",
}


def _loader(c: Cell) -> str:
    """workers / pin / persistent / prefetch of the cell's DataLoader, e.g. "14 pin persist pf2"."""
    ld = c.result.get("loader")
    if not ld:
        return ""
    return " ".join(
        [str(ld["num_workers"])]
        + (["pin"] if ld["pin_memory"] else [])
        + (["persist"] if ld["persistent_workers"] else [])
        + ([f"pf{ld['prefetch_factor']}"] if ld.get("prefetch_factor") else [])
    )


def _status(c: Cell) -> str:
    s = c.result.get("status", "skipped")
    return s if s == "ok" else f"{s}: {c.result.get('error', c.result.get('reason', ''))}"


def tables(cells: list[Cell], env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or {}
    peak = "peak GPU MiB" if gpu else "peak RSS MiB"
    head = (
        f"GPU: {gpu.get('name', 'none (' + env['device'] + ')')}, driver {env.get('driver')}, torch {env['torch']}, "
        f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, torchvision {env.get('torchvision')}, {env['workers']} DataLoader "
        f"workers, /dev/shm {env.get('dev_shm_gib')} GiB, {env['machine'].get('cores')} CPU cores, commit {env.get('commit')}, mode {env['mode']}, "
        f"load average {env['machine'].get('load_avg')}"
    )
    out = [f"\n{head}\n"]
    train = [c for c in cells if c.kind in ("ceiling", "baseline", "chestxr")]
    out.append(
        C.print_table(
            "Training throughput (images/s; ratio = this loop / the ceiling at the same model, size, batch, precision, layout)",
            [
                "model",
                "px",
                "batch",
                "precision",
                "layout",
                "loop",
                "variant",
                "loader",
                "img/s",
                "ratio to ceiling",
                "vs default %",
                "step ms",
                "data wait ms/step",
                "next epoch 1st batch ms",
                peak,
                "status",
            ],
            [
                [
                    c.model,
                    c.size,
                    c.batch,
                    c.precision,
                    c.layout,
                    LOOP_LABEL[c.kind],
                    c.variant,
                    _loader(c),
                    c.result.get("img_s"),
                    c.result.get("ratio_to_ceiling"),
                    c.result.get("vs_default_pct"),
                    c.result.get("step_ms"),
                    c.result.get("data_wait_ms_per_step"),
                    c.result.get("next_epoch_first_batch_ms"),
                    c.result.get("peak_mem_mib"),
                    _status(c),
                ]
                for c in train
            ],
        )
    )
    inf = [c for c in cells if c.kind in ("infer_ceiling", "infer_chestxr")]
    out.append(
        C.print_table(
            "Inference throughput (eval, images/s)",
            [
                "model",
                "px",
                "batch",
                "precision",
                "layout",
                "path",
                "variant",
                "img/s",
                "ratio to ceiling",
                "vs default %",
                "batch ms",
                "data wait ms/batch",
                peak,
                "status",
            ],
            [
                [
                    c.model,
                    c.size,
                    c.batch,
                    c.precision,
                    c.layout,
                    LOOP_LABEL[c.kind],
                    c.variant,
                    c.result.get("img_s"),
                    c.result.get("ratio_to_ceiling"),
                    c.result.get("vs_default_pct"),
                    c.result.get("step_ms"),
                    c.result.get("data_wait_ms_per_step"),
                    c.result.get("peak_mem_mib"),
                    _status(c),
                ]
                for c in inf
            ],
        )
    )
    cam = [c for c in cells if c.kind == "gradcam"]
    out.append(
        C.print_table(
            "Grad-CAM (predict --explain: one map per image and finding, fp32)",
            ["model", "px", "maps/s", "ms per map", peak, "status"],
            [
                [
                    c.model,
                    c.size,
                    c.result.get("img_s"),
                    c.result.get("step_ms"),
                    c.result.get("peak_mem_mib"),
                    _status(c),
                ]
                for c in cam
            ],
        )
    )
    return "\n".join(out)


def summary(cells: list[Cell]) -> str:
    """One line per model and size: the headline numbers (default cells), printed last."""
    pick: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        if c.variant != "default" or not c.channels_last or c.result.get("status") != "ok":
            continue
        row = pick.setdefault((c.model, c.size), {})
        if (
            c.kind in ("ceiling", "chestxr", "baseline", "infer_ceiling", "infer_chestxr")
            and c.precision != cells[0].precision
        ):
            continue
        row[c.kind] = c.result
    return C.print_table(
        f"Summary ({cells[0].precision}, channels_last; ratio = of the training ceiling)",
        [
            "model",
            "px",
            "train ceiling img/s",
            "chestxr train img/s",
            "chestxr ratio",
            "plain loop ratio",
            "infer ceiling img/s",
            "chestxr predict img/s",
            "Grad-CAM maps/s",
        ],
        [
            [
                m,
                px,
                r.get("ceiling", {}).get("img_s"),
                r.get("chestxr", {}).get("img_s"),
                r.get("chestxr", {}).get("ratio_to_ceiling"),
                r.get("baseline", {}).get("ratio_to_ceiling"),
                r.get("infer_ceiling", {}).get("img_s"),
                r.get("infer_chestxr", {}).get("img_s"),
                r.get("gradcam", {}).get("img_s"),
            ]
            for (m, px), r in pick.items()
        ],
    )


def write_outputs(
    out_dir: Optional[str], env: dict[str, Any], cells: list[Cell], md: str, extra: dict[str, Any]
) -> None:
    if not out_dir:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"environment": env, **extra, "cells": [c.row() for c in cells]}
    tmp = out / "bench_gpu.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(out / "bench_gpu.json")
    (out / "bench_gpu.md").write_text(f"# bench_gpu ({env['mode']})\n{md}\n")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--out", default=None, help="folder for bench_gpu.json and bench_gpu.md")
    ap.add_argument("--deadline", type=float, default=None, help="seconds; cells that would start later are skipped")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPU cores - 2, at most 14)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile cell")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    mode = C.mode_name(args)
    C.setup_torch(args.threads)
    os.environ.setdefault("CHESTXR_NO_PROGRESS", "1")
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator.*")  # the CPU dry run's pin_memory cell

    st = settings(mode, workers=args.workers, deadline=args.deadline, device=args.device)
    if args.no_compile:
        st = dataclasses.replace(st, compile=False)
    if torch.device(st.device).type == "cuda" and not torch.cuda.is_available():
        print(
            f"bench_gpu ({mode}): no CUDA device here (torch {torch.__version__}, torch.version.cuda {torch.version.cuda}); "
            "nothing measured. `--smoke` runs every code path on the CPU.",
            flush=True,
        )
        return 0
    cells = plan(st)
    print(f"bench_gpu ({mode}): {len(cells)} cells, deadline {st.deadline_s:.0f} s, {st.workers} workers", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        data = make_data(st, Path(tmp))
        print(
            f"data: {len(data.paths)} synthetic PNGs ({st.image_side} px) decoded into the cache in {data.seconds:.1f} s",
            flush=True,
        )
        env = environment(st)
        for i, cell in enumerate(cells):
            elapsed = time.perf_counter() - start
            remaining = st.deadline_s - elapsed
            if remaining < (cell.expect_s if st.mode != "smoke" else 0.0):
                cell.result = {"status": "skipped", "reason": f"deadline ({st.deadline_s:.0f} s) reached"}
            else:
                run_cell(st, cell, data, remaining_s=remaining)
            r = cell.result
            rate = f"{r['img_s']:.1f} img/s" if r.get("img_s") else _status(cell)
            print(
                f"[{i + 1}/{len(cells)} {time.perf_counter() - start:6.1f} s] {cell.kind} {cell.model} {cell.size}px "
                f"b{cell.batch} {cell.precision} {cell.layout} {cell.variant}: {rate}"
                + (f" ({r.get('cell_s', 0):.1f} s)" if "cell_s" in r else ""),
                flush=True,
            )
    add_ratios(cells)
    md = tables(cells, env) + summary(cells)
    counts = {s: sum(c.result.get("status") == s for c in cells) for s in ("ok", "failed", "skipped")}
    total = time.perf_counter() - start
    print(
        f"\nbench_gpu: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in {total:.0f} s",
        flush=True,
    )
    write_outputs(args.out, env, cells, md, {"counts": counts, "seconds": total, "data_seconds": data.seconds})
    C.write_json(args.json, {"environment": env, "cells": [c.row() for c in cells]})
    # the CPU dry run exists to catch rot: there a failed cell fails the run; on a GPU it is a result
    return min(counts["failed"], 1) if st.mode == "smoke" else 0


if __name__ == "__main__":
    sys.exit(main())
