"""Training-step throughput: chestxr's epoch loop against a bare PyTorch loop, in the same process.

    python benchmarks/bench_train.py [--smoke | --quick | --full] [--threads 2] [--json FILE]

1. Overhead (the model step only): both loops read the SAME in-memory (3, 224, 224) tensors (--smoke: 64 px).
   * bare: ``TensorDataset`` + ``DataLoader(shuffle=True)``, ``BCEWithLogitsLoss``, ``AdamW``,
     zero_grad / backward / step - nothing else;
   * chestxr: what ``chestxr train`` runs per epoch - ``ChestXRayDataset`` (its loader returns the
     stored tensor, identity transform) + ``GlobalBatchSampler`` + ``collate``, the run's masked loss
     (``optim.make_loss``), its AdamW param groups and LambdaLR schedule, ``engine.train_one_epoch``
     with channels_last, gradient clipping (1.0) and the finite-loss check.
   Both start from the same weights. The two loops ALTERNATE (one short epoch each, ``rounds``
   times, after one warm-up step each), so load from other jobs on the machine hits both alike;
   images/s is total images / total seconds over the rounds.
2. resnet18 variants through ``train_one_epoch``: channels_last on/off, bf16 autocast on/off.
3. Full pipeline: synthetic PNGs decoded once into the cache, then ``build_dataset(train=True)``
   (cache read + augmentation) through a 2-worker DataLoader + the step, with time split into
   "data wait" (blocked on the loader) and "compute".
4. GPU (only when CUDA is available): densenet121, bf16 AMP + channels_last, pinned 4-worker
   pipeline, with the same data-wait / compute split; otherwise prints "no GPU here".

Peak RSS is this process's VmHWM, reset before each row (so it is that row's peak, with torch and
the earlier rows' retained memory included).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

N_FINDINGS = 14
SIZE = 224  # model input side; --smoke uses 64


def _settings(quick: bool, smoke: bool = False) -> dict[str, Any]:
    if smoke:  # seconds: every table's code path once, numbers meaningless (the test suite runs this)
        return {
            "size": 64,
            "synthetic_size": 96,
            "batch": 4,
            "rounds": {"resnet18": 1},
            "steps": 1,
            "variant_batch": 4,
            "variant_rounds": 1,
            "bf16_batch": 2,
            "pipeline_batch": 4,
            "pipeline_steps": 1,
            "bookkeeping_batches": 3,
        }
    if quick:
        return {
            "batch": 8,
            "rounds": {"resnet18": 1},
            "steps": 1,
            "variant_batch": 8,
            "variant_rounds": 1,
            "bf16_batch": 4,
            "pipeline_batch": 8,
            "pipeline_steps": 2,
            "bookkeeping_batches": 20,
        }
    return {
        "batch": 32,
        "rounds": {"resnet18": 2, "densenet121": 1},
        "steps": 1,
        "variant_batch": 16,
        "variant_rounds": 1,
        "bf16_batch": 8,
        "pipeline_batch": 32,
        "pipeline_steps": 2,
        "bookkeeping_batches": 20,
    }


class _MemoryImages:
    """Dataset loader over in-memory tensors: path "i" -> the i-th stored image (C, S, S)."""

    def __init__(self, images):
        self.images = images

    def __call__(self, path: str):
        return self.images[int(path)]


def _identity(x):
    return x


class TimedLoader:
    """Wraps an iterable of batches and adds up the seconds spent waiting for the next batch."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader, self.wait = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t0
            yield batch


def _chestxr_setup(model, images, targets, mask, *, batch: int, channels_last: bool):
    """(loader, optimizer, scheduler, loss_fn) as train._fit builds them, over in-memory images."""
    import torch
    from torch.utils.data import DataLoader

    from chestxr.core import config_from_dict
    from chestxr.imaging import ChestXRayDataset, collate
    from chestxr.modeling import DistInfo, GlobalBatchSampler, build_optimizer, build_scheduler, make_loss

    ds = ChestXRayDataset(
        paths=[str(i) for i in range(len(images))],
        targets=targets,
        mask=mask,
        loader=_MemoryImages(images),
        transform=_identity,
        image_shape=tuple(images.shape[1:]),
    )
    sampler = GlobalBatchSampler(len(ds), global_batch=batch, seed=0, shuffle=True)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=collate)
    cfg = config_from_dict({"train": {"epochs": 100, "batch_size": batch, "lr": 1e-4, "channels_last": channels_last}})
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, len(sampler))
    loss_fn = make_loss(pos_weight=None, info=DistInfo(), ovr=False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return loader, sampler, opt, sched, loss_fn


def _bare_epoch(model, loader, opt, crit) -> tuple[int, float]:
    model.train()
    n, t0 = 0, time.perf_counter()
    for x, y in loader:
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(x)
    return n, time.perf_counter() - t0


class _Trivial:
    """A model that costs almost nothing: global average pool + Linear(3, 14)."""

    @staticmethod
    def build():
        import torch

        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, N_FINDINGS))


def bench_bookkeeping(*, batch: int, n_batches: int) -> dict[str, Any]:
    """Per-batch cost of each loop with a near-free model: the data path (per-item dicts, collate)
    and the loop's extras (masked loss, finite check, clipping, schedule), in ms."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from chestxr.modeling import train_one_epoch

    g = torch.Generator().manual_seed(0)
    n = batch * n_batches
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)
    targets = (torch.rand(n, N_FINDINGS, generator=g) < 0.2).float()
    mask = torch.ones(n, N_FINDINGS, dtype=torch.bool)
    bare_model, cx_model = _Trivial.build(), _Trivial.build()
    bare_loader = DataLoader(TensorDataset(images, targets), batch_size=batch, shuffle=True)
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-4)
    # channels_last off here: with a 3-channel input the pooling itself is slower in NHWC, which would be
    # counted as bookkeeping; the real models' channels_last effect is measured in the rows below
    cx_loader, sampler, cx_opt, sched, loss_fn = _chestxr_setup(
        cx_model, images, targets.numpy(), mask.numpy(), batch=batch, channels_last=False
    )
    best = {"bare": float("inf"), "chestxr": float("inf")}
    for r in range(3):
        _, s = _bare_epoch(bare_model, bare_loader, bare_opt, torch.nn.BCEWithLogitsLoss())
        best["bare"] = min(best["bare"], s)
        sampler.set_epoch(r)
        st = train_one_epoch(
            cx_model,
            cx_loader,
            cx_opt,
            loss_fn=loss_fn,
            device=torch.device("cpu"),
            scheduler=sched,
            grad_clip=1.0,
            channels_last=False,
        )
        best["chestxr"] = min(best["chestxr"], st.seconds)
    return {
        "batch": batch,
        "batches": n_batches,
        "bare_ms": 1000 * best["bare"] / n_batches,
        "chestxr_ms": 1000 * best["chestxr"] / n_batches,
        "extra_ms": 1000 * (best["chestxr"] - best["bare"]) / n_batches,
    }


def _clip_ms(model, repeats: int = 5) -> float:
    """Milliseconds of one clip_grad_norm_(max_norm=1.0) over ``model``'s gradients."""
    import torch

    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    return 1000 * (time.perf_counter() - t0) / repeats


def bench_overhead(backbone: str, *, batch: int, rounds: int, steps: int) -> list[dict[str, Any]]:
    """bare vs chestxr on the same in-memory tensors, alternating; rows with images/s and peak RSS."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from chestxr.modeling import build_model, train_one_epoch

    g = torch.Generator().manual_seed(0)
    n = batch * steps
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)
    targets = (torch.rand(n, N_FINDINGS, generator=g) < 0.2).float()
    mask = torch.ones(n, N_FINDINGS, dtype=torch.bool)
    torch.manual_seed(0)
    base = build_model(backbone, N_FINDINGS)
    bare_model, cx_model, cx2_model = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    del base
    bare_loader = DataLoader(TensorDataset(images, targets), batch_size=batch, shuffle=True)
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-4)
    crit = torch.nn.BCEWithLogitsLoss()
    dev = torch.device("cpu")
    setups = {
        "chestxr": _chestxr_setup(cx_model, images, targets.numpy(), mask.numpy(), batch=batch, channels_last=True),
        "chestxr_nchw": _chestxr_setup(
            cx2_model, images, targets.numpy(), mask.numpy(), batch=batch, channels_last=False
        ),
    }
    models = {"chestxr": cx_model, "chestxr_nchw": cx2_model}

    def run(name: str, epoch: int) -> tuple[int, float]:
        if name == "bare":
            return _bare_epoch(bare_model, bare_loader, bare_opt, crit)
        loader, sampler, opt, sched, loss_fn = setups[name]
        sampler.set_epoch(epoch)
        s = train_one_epoch(
            models[name],
            loader,
            opt,
            loss_fn=loss_fn,
            device=dev,
            scheduler=sched,
            grad_clip=1.0,
            channels_last=name == "chestxr",
        )
        return s.images, s.seconds

    # warm-up (oneDNN primitives are cached per shape and memory format for the whole process, so the
    # NCHW chestxr loop shares the bare loop's), not timed
    run("bare", 0)
    run("chestxr", 0)
    names = ["bare", "chestxr", "chestxr_nchw"]
    totals = {k: [0, 0.0, 0.0, 0.0] for k in names}  # images, wall s, cpu s, peak
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            C.reset_peak_rss()
            c0 = time.process_time()
            k, s = run(name, r + 1)
            totals[name][0] += k
            totals[name][1] += s
            totals[name][2] += time.process_time() - c0
            totals[name][3] = max(totals[name][3], C.peak_rss_mb())
    clip = _clip_ms(cx_model)
    rate = {k: v[0] / v[1] for k, v in totals.items()}
    cpu = {k: v[2] / v[0] for k, v in totals.items()}
    rows = []
    for name, label in (
        ("bare", "bare PyTorch (BCEWithLogitsLoss, AdamW, NCHW)"),
        ("chestxr", "chestxr train_one_epoch as `chestxr train` runs it (channels_last)"),
        ("chestxr_nchw", "chestxr train_one_epoch, channels_last off"),
    ):
        rows.append(
            {
                "backbone": backbone,
                "loop": label,
                "key": name,
                "batch": batch,
                "images": totals[name][0],
                "images_per_s": rate[name],
                "cpu_s_per_image": cpu[name],
                "overhead_pct": None if name == "bare" else (rate["bare"] / rate[name] - 1.0) * 100.0,
                "cpu_overhead_pct": None if name == "bare" else (cpu[name] / cpu["bare"] - 1.0) * 100.0,
                "step_ms": 1000 * totals[name][1] / totals[name][0] * batch,
                "clip_ms": clip,
                "peak_rss_mb": totals[name][3],
            }
        )
    return rows


def bench_variants(*, batch: int, bf16_batch: int, rounds: int) -> list[dict[str, Any]]:
    """resnet18 through train_one_epoch: channels_last on/off (fp32), bf16 autocast on/off."""
    import torch

    from chestxr.modeling import build_model, train_one_epoch

    rows = []
    dev = torch.device("cpu")
    for label, b, cl, amp, rnds in (
        ("fp32, channels_last off", batch, False, None, rounds),
        ("fp32, channels_last on", batch, True, None, rounds),
        ("fp32, channels_last on", bf16_batch, True, None, 1),
        ("bf16 autocast, channels_last on", bf16_batch, True, torch.bfloat16, 1),
    ):
        g = torch.Generator().manual_seed(1)
        images = torch.randn(b, 3, SIZE, SIZE, generator=g)
        targets = (torch.rand(b, N_FINDINGS, generator=g) < 0.2).float().numpy()
        mask = torch.ones(b, N_FINDINGS, dtype=torch.bool).numpy()
        torch.manual_seed(0)
        model = build_model("resnet18", N_FINDINGS)
        loader, sampler, opt, sched, loss_fn = _chestxr_setup(model, images, targets, mask, batch=b, channels_last=cl)
        train_one_epoch(
            model,
            loader,
            opt,
            loss_fn=loss_fn,
            device=dev,
            scheduler=sched,
            grad_clip=1.0,
            channels_last=cl,
            amp_dtype=amp,
        )  # warm-up
        C.reset_peak_rss()
        n, secs = 0, 0.0
        for r in range(rnds):
            sampler.set_epoch(r + 1)
            s = train_one_epoch(
                model,
                loader,
                opt,
                loss_fn=loss_fn,
                device=dev,
                scheduler=sched,
                grad_clip=1.0,
                channels_last=cl,
                amp_dtype=amp,
            )
            n, secs = n + s.images, secs + s.seconds
        rows.append(
            {"variant": label, "batch": b, "images": n, "images_per_s": n / secs, "peak_rss_mb": C.peak_rss_mb()}
        )
    return rows


def _synthetic_cache(tmp: Path, n_images: int, size: int = 320):
    """(paths, LabeledSet-like targets/mask, preprocessing, augmentation, cache_dir) with a filled cache."""
    import numpy as np

    from chestxr.core import AugmentConfig, PreprocessConfig
    from chestxr.data import generate_synthetic_dataset
    from chestxr.imaging import ImageCache, ReadOptions

    manifest = generate_synthetic_dataset(tmp / "data", n_images=n_images, seed=0, size=size, dicom_fraction=0.5)
    import pandas as pd

    frame = pd.read_csv(manifest)
    paths = [str((manifest.parent / p).resolve()) for p in frame["path"]]
    pre, aug = PreprocessConfig(size=SIZE, cache_size=SIZE + SIZE // 7), AugmentConfig()
    cache_dir = tmp / "cache"
    ImageCache(cache_dir, options=ReadOptions.from_config(pre), side=pre.cache_size).build(paths, progress=False)
    rng = np.random.default_rng(0)
    targets = (rng.random((len(paths), N_FINDINGS)) < 0.2).astype(np.float32)
    return paths, targets, np.ones_like(targets, dtype=bool), pre, aug, str(cache_dir)


def bench_pipeline(
    backbone: str, *, batch: int, steps: int, workers: int, device: str = "cpu", amp: bool = False, data=None
) -> dict[str, Any]:
    """cache read + augmentation + step through a DataLoader; data wait vs compute seconds."""
    import torch
    from torch.utils.data import DataLoader

    from chestxr.imaging import build_dataset, collate, seed_worker
    from chestxr.modeling import DistInfo, GlobalBatchSampler, build_model, make_loss, train_one_epoch

    paths, targets, mask, pre, aug, cache_dir = data
    n = min(len(paths), batch * (steps + 1))
    ds = build_dataset(
        paths=paths[:n],
        targets=targets[:n],
        mask=mask[:n],
        preprocessing=pre,
        augmentation=aug,
        train=True,
        cache_dir=cache_dir,
        seed=0,
    )
    sampler = GlobalBatchSampler(n, global_batch=batch, seed=0, shuffle=True, drop_last=True)
    dev = torch.device(device)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        pin_memory=dev.type == "cuda",
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = build_model(backbone, N_FINDINGS).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = make_loss(pos_weight=None, info=DistInfo(), ovr=False)
    amp_dtype = torch.bfloat16 if amp else None
    # warm-up epoch (also starts the persistent workers)
    train_one_epoch(model, loader, opt, loss_fn=loss_fn, device=dev, grad_clip=1.0, amp_dtype=amp_dtype)
    C.reset_peak_rss()
    sampler.set_epoch(1)
    timed = TimedLoader(loader)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    s = train_one_epoch(model, timed, opt, loss_fn=loss_fn, device=dev, grad_clip=1.0, amp_dtype=amp_dtype)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    steps_done = max(len(sampler), 1)
    return {
        "backbone": backbone,
        "device": device,
        "batch": batch,
        "workers": workers,
        "images": s.images,
        "images_per_s": s.images / s.seconds,
        "data_wait_ms_per_step": 1000 * timed.wait / steps_done,
        "compute_ms_per_step": 1000 * (s.seconds - timed.wait) / steps_done,
        "peak_rss_mb": C.peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap)
    ap.add_argument("--backbones", nargs="+", default=None, help="overhead rows for these backbones")
    args = ap.parse_args(argv)
    C.setup_torch(args.threads)
    import torch

    global SIZE
    st = _settings(args.quick, args.smoke)
    SIZE = st.get("size", 224)
    machine = C.machine_description()
    print(f"bench_train ({C.mode_name(args)}): {machine}", flush=True)
    out: dict[str, Any] = {"machine": machine, "settings": st}

    book = bench_bookkeeping(batch=st["batch"], n_batches=st["bookkeeping_batches"])
    out["bookkeeping"] = book
    C.print_table(
        "Loop bookkeeping with a near-free model (avg-pool + Linear): data path + loop extras",
        ["batch", "batches", "bare ms/batch", "chestxr ms/batch", "chestxr extra ms/batch"],
        [[book["batch"], book["batches"], book["bare_ms"], book["chestxr_ms"], book["extra_ms"]]],
    )
    rows = []
    rounds = st["rounds"]
    for bb in args.backbones or list(rounds):
        rows += bench_overhead(bb, batch=st["batch"], rounds=rounds.get(bb, 1), steps=st["steps"])
    bare_ms = {r["backbone"]: r["step_ms"] for r in rows if r["overhead_pct"] is None}
    for r in rows:
        r["estimated_overhead_pct"] = (
            None
            if r["overhead_pct"] is None
            else 100 * (max(book["extra_ms"], 0.0) + r["clip_ms"]) / bare_ms[r["backbone"]]
        )
    out["overhead"] = rows
    C.print_table(
        "Training step on in-memory tensors: chestxr's loop vs bare PyTorch (alternating)",
        [
            "backbone",
            "loop",
            "batch",
            "images timed",
            "images/s",
            "wall overhead %",
            "CPU s/image",
            "CPU overhead %",
            "step ms",
            "grad-clip ms",
            "est. overhead %",
            "peak RSS MiB",
        ],
        [
            [
                r["backbone"],
                r["loop"],
                r["batch"],
                r["images"],
                r["images_per_s"],
                r["overhead_pct"],
                r["cpu_s_per_image"],
                r["cpu_overhead_pct"],
                r["step_ms"],
                r["clip_ms"],
                r["estimated_overhead_pct"],
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )

    var = bench_variants(batch=st["variant_batch"], bf16_batch=st["bf16_batch"], rounds=st["variant_rounds"])
    out["variants"] = var
    C.print_table(
        "resnet18 through train_one_epoch: channels_last and bf16 autocast on CPU",
        ["variant", "batch", "images timed", "images/s", "peak RSS MiB"],
        [[r["variant"], r["batch"], r["images"], r["images_per_s"], r["peak_rss_mb"]] for r in var],
    )

    with tempfile.TemporaryDirectory() as tmp:
        n_img = st["pipeline_batch"] * (st["pipeline_steps"] + 1)
        if torch.cuda.is_available():
            n_img = max(n_img, 32 * 9)
        data = _synthetic_cache(Path(tmp), n_img, size=st.get("synthetic_size", 320))
        pipe = [
            bench_pipeline("resnet18", batch=st["pipeline_batch"], steps=st["pipeline_steps"], workers=2, data=data)
        ]
        out["pipeline"] = pipe
        C.print_table(
            "Full pipeline on CPU: cache read + augmentation (2 DataLoader workers) + training step",
            [
                "backbone",
                "batch",
                "workers",
                "images timed",
                "images/s",
                "data wait ms/step",
                "compute ms/step",
                "peak RSS MiB",
            ],
            [
                [
                    r["backbone"],
                    r["batch"],
                    r["workers"],
                    r["images"],
                    r["images_per_s"],
                    r["data_wait_ms_per_step"],
                    r["compute_ms_per_step"],
                    r["peak_rss_mb"],
                ]
                for r in pipe
            ],
        )
        if torch.cuda.is_available():
            gpu = [bench_pipeline("densenet121", batch=32, steps=8, workers=4, device="cuda", amp=True, data=data)]
            out["gpu"] = gpu
            C.print_table(
                f"GPU ({machine['gpu']}): densenet121, bf16 AMP + channels_last",
                ["backbone", "batch", "workers", "images/s", "data wait ms/step", "compute ms/step"],
                [
                    [
                        r["backbone"],
                        r["batch"],
                        r["workers"],
                        r["images_per_s"],
                        r["data_wait_ms_per_step"],
                        r["compute_ms_per_step"],
                    ]
                    for r in gpu
                ],
            )
        else:
            print("\nGPU section: no GPU here (torch.cuda.is_available() is False)\n", flush=True)
    C.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
