"""CUDA smoke test (issue 26): two epochs with AMP on the GPU give a finite loss and AUROC, and calibrate /
evaluate / predict on the GPU give the same calls as on the CPU for the same weights.

Skipped without CUDA (CI has no GPU; benchmarks/gpu_session.sh runs this file on a GPU machine).
``CHESTXR_TEST_ACCEL=cpu`` runs the same checks with the CPU standing in for the accelerator (bf16 autocast on
the CPU for training and for the "accelerator" side's inference, fp32 on the other side, the tiny backbone): a
dry run of this file and of its tolerance on a machine without a GPU, not a test of CUDA. tests/test_benchmarks.py
runs that dry run, so this file cannot rot unseen while CI has no GPU.

Tolerance. On CUDA, ``Run.logits`` runs under bf16 autocast (``train.amp: auto``), the CPU in fp32, so the
same weights give slightly different probabilities. bf16 keeps 8 significant bits (relative rounding 2^-9);
through a few conv/norm layers with fp32 accumulation the logits of these small models move by a few
hundredths at most, and a probability moves by at most a quarter of its logit's change (the sigmoid's
slope is <= 1/4). ``EPS = 0.02`` (probability units) leaves a margin of 2 or more, and the test first checks
that every probability agrees within it. A call (score >= threshold) may then differ between the devices
only for an image whose score is within ``EPS`` of its threshold on either device; every other call must be
equal. Calibration uses ``sensitivity:0.8@point`` (a threshold at an order statistic of the positives'
scores, which moves by at most the largest score change), so the GPU and CPU thresholds must also agree
within ``EPS``; evaluate and predict are compared on identical run folders (the same thresholds).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ACCEL = os.environ.get("CHESTXR_TEST_ACCEL", "cuda")
EPS = 0.02
RULE = "sensitivity:0.8@point"
# the CPU dry run (tests/test_benchmarks.py runs it in CI) checks the same plumbing on a smaller network
BACKBONE, SIZE = ("resnet18", 64) if ACCEL == "cuda" else ("tiny", 48)

needs_accel = pytest.mark.skipif(
    ACCEL == "cuda" and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); CHESTXR_TEST_ACCEL=cpu runs a CPU dry run",
)


def call_disagreements(
    score_a: np.ndarray,
    thr_a: np.ndarray,
    call_a: np.ndarray,
    score_b: np.ndarray,
    thr_b: np.ndarray,
    call_b: np.ndarray,
    eps: float = EPS,
) -> list[tuple[int, int]]:
    """(row, finding) where the calls differ although the score is farther than ``eps`` from its threshold
    on both sides. Scores and calls (n, f); thresholds (f,)."""
    near = (np.abs(score_a - thr_a[None, :]) <= eps) | (np.abs(score_b - thr_b[None, :]) <= eps)
    bad = (call_a != call_b) & ~near
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(bad))]


def test_call_disagreements_flags_only_calls_away_from_the_threshold():
    thr = np.array([0.5, 0.3])
    a = np.array([[0.51, 0.9], [0.2, 0.31], [0.8, 0.1]])
    b = np.array([[0.49, 0.9], [0.2, 0.29], [0.8, 0.1]])  # rows 0 and 1 cross their thresholds within eps
    calls_a, calls_b = a >= thr, b >= thr
    assert call_disagreements(a, thr, calls_a, b, thr, calls_b) == []
    calls_b[2, 0] = False  # a flip at 0.8 against 0.5 is a real disagreement
    calls_b[0, 1] = False
    assert call_disagreements(a, thr, calls_a, b, thr, calls_b) == [(0, 1), (2, 0)]
    # thresholds that moved: near either side's own threshold counts as near
    assert call_disagreements(a, thr, a >= thr, a, thr + 0.015, a >= thr + 0.015) == []


@contextlib.contextmanager
def _accel_inference(run):
    """Inference as on the accelerator: on CUDA ``Run.logits`` already picks bf16 autocast (amp auto); in the
    CPU dry run the CPU's autocast is switched to bf16 for this side, so the tolerance is still exercised."""
    if ACCEL == "cuda":
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules[type(run).__module__], "resolve_amp", lambda amp, device: torch.bfloat16)
        yield


def _as_calls(frame: pd.DataFrame, finding: str) -> np.ndarray:
    """The call column of ``finding`` as bool, whatever its name (call_/pred_/positive_) and spelling."""
    for prefix in ("call_", "pred_", "positive_"):
        col = f"{prefix}{finding}"
        if col in frame.columns:
            values = frame[col].astype(str).str.lower()
            return values.isin(["1", "1.0", "true", "positive"]).to_numpy()
    raise AssertionError(f"no call column for {finding} in {list(frame.columns)}")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A run trained 2 epochs on the accelerator with AMP (train.amp auto: bf16 on a bf16 GPU), 2 loader
    workers (pinned memory), resnet18 at 64 px (the dry run: tiny at 48 px) on 240 synthetic PNGs split by
    patient."""
    from chestxr.core import load_config
    from chestxr.data import generate_synthetic_dataset
    from chestxr.runs import train

    root = tmp_path_factory.mktemp("cuda")
    manifest = generate_synthetic_dataset(
        root / "data", n_images=240, seed=3, size=80, dicom_fraction=0.0, with_split=True
    )
    amp = "auto" if ACCEL == "cuda" else "bf16"
    config = load_config(
        None,
        [
            f"data.manifest={manifest}",
            f"model.backbone={BACKBONE}",
            f"preprocessing.size={SIZE}",
            f"preprocessing.cache_size={SIZE + 8}",
            f"data.cache_dir={root / 'cache'}",
            "data.num_workers=2",
            "train.batch_size=32",
            "train.epochs=2",
            "train.lr=0.003",
            f"train.amp={amp}",
            f"train.device={ACCEL}",
            "name=cuda-smoke",
        ],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHESTXR_NO_PROGRESS", "1")
        if ACCEL == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run_dir = train(config, out_dir=root / "run", log=lambda s: None).run_dir
        used = torch.cuda.max_memory_allocated() if ACCEL == "cuda" else None
    return {"run": run_dir, "manifest": manifest, "root": root, "cuda_bytes": used}


@needs_accel
def test_two_amp_epochs_on_the_accelerator_give_finite_loss_and_auroc(gpu_run):
    metrics = pd.read_csv(gpu_run["run"] / "metrics.csv")
    assert len(metrics) == 2, metrics
    for col in ("train_loss", "val_loss", "val_mean_auroc"):
        assert np.isfinite(metrics[col].to_numpy()).all(), metrics[[col]]
    assert (metrics["train_images_per_s"] > 0).all()
    assert (gpu_run["run"] / "model.safetensors").is_file()
    if ACCEL == "cuda":
        assert gpu_run["cuda_bytes"] and gpu_run["cuda_bytes"] > 0  # the training really ran on the GPU


@needs_accel
def test_fp16_amp_with_grad_scaler_trains_on_cuda(tmp_path):
    """train.amp=fp16 takes the GradScaler path (never run on a CPU)."""
    if ACCEL != "cuda":
        pytest.skip("fp16 autocast + GradScaler is a CUDA path")
    from chestxr.core import load_config
    from chestxr.data import generate_synthetic_dataset
    from chestxr.runs import train

    manifest = generate_synthetic_dataset(
        tmp_path / "data", n_images=80, seed=4, size=48, dicom_fraction=0.0, with_split=True
    )
    config = load_config(
        None,
        [
            f"data.manifest={manifest}",
            "model.backbone=tiny",
            "preprocessing.size=32",
            "preprocessing.cache_size=40",
            "data.num_workers=0",
            "train.batch_size=16",
            "train.epochs=2",
            "train.amp=fp16",
            "train.device=cuda",
        ],
    )
    run_dir = train(config, out_dir=tmp_path / "run", log=lambda s: None).run_dir
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert np.isfinite(metrics[["train_loss", "val_loss", "val_mean_auroc"]].to_numpy()).all(), metrics


def _split_paths(manifest: Path, split: str) -> list[str]:
    frame = pd.read_csv(manifest)
    return [str((manifest.parent / p).resolve()) for p in frame.loc[frame["split"] == split, "path"]]


@needs_accel
def test_calibrate_evaluate_predict_on_the_accelerator_make_the_cpu_calls(gpu_run, tmp_path):
    from chestxr.imaging import LoaderOptions
    from chestxr.runs import Run, calibrate_run, evaluate_run, predict_run

    two_workers = LoaderOptions(num_workers=2)

    manifest = gpu_run["manifest"]
    runs = {}
    for side in ("cpu", "accel"):
        runs[side] = tmp_path / f"run-{side}"
        shutil.copytree(gpu_run["run"], runs[side])
    device = {"cpu": "cpu", "accel": ACCEL}

    # calibrate on each device: the same rule must give thresholds within EPS and the same calls
    fitted, scores, thresholds = {}, {}, {}
    val_paths = _split_paths(manifest, "val")
    for side in ("cpu", "accel"):
        run = Run.load(runs[side], device=device[side])
        assert run.device.type == device[side]
        with _accel_inference(run) if side == "accel" else contextlib.nullcontext():
            fitted[side] = calibrate_run(run, manifest, split="val", method=RULE, n_boot=20, loading=two_workers)
            reloaded = Run.load(runs[side], device=device[side])
            thresholds[side] = reloaded.thresholds
            scores[side] = reloaded.scores(val_paths, loading=two_workers)
    findings = Run.load(runs["cpu"], device="cpu").findings
    diff = float(np.nanmax(np.abs(scores["cpu"] - scores["accel"])))
    assert 0 < diff <= EPS, f"validation probabilities differ by up to {diff:.4f} between the CPU and {ACCEL}"
    print(f"max |p_{ACCEL} - p_cpu| on validation: {diff:.5f} (EPS {EPS})")
    assert np.isfinite(thresholds["cpu"]).all() and np.isfinite(thresholds["accel"]).all(), fitted
    assert np.abs(thresholds["cpu"] - thresholds["accel"]).max() <= EPS, (thresholds, diff)
    bad = call_disagreements(
        scores["cpu"],
        thresholds["cpu"],
        scores["cpu"] >= thresholds["cpu"],
        scores["accel"],
        thresholds["accel"],
        scores["accel"] >= thresholds["accel"],
    )
    assert not bad, f"calls differ away from the threshold (row, finding): {bad}"

    # evaluate and predict with identical run folders (the CPU calibration on both sides)
    shutil.rmtree(runs["accel"])
    shutil.copytree(runs["cpu"], runs["accel"])
    tables = {}
    for side in ("cpu", "accel"):
        run = Run.load(runs[side], device=device[side])
        with _accel_inference(run) if side == "accel" else contextlib.nullcontext():
            evaluate_run(run, manifest, tmp_path / f"eval-{side}", split="test", n_boot=20, loading=two_workers)
            predict_run(run, tmp_path / f"pred-{side}", manifest=manifest, loading=two_workers)
        tables[side] = {
            "evaluate": pd.read_csv(tmp_path / f"eval-{side}" / "predictions.csv"),
            "predict": pd.read_csv(tmp_path / f"pred-{side}" / "predictions.csv"),
        }
    thr = thresholds["cpu"]
    for kind in ("evaluate", "predict"):
        a, b = tables["cpu"][kind], tables["accel"][kind]
        assert list(a["path"]) == list(b["path"]), f"{kind}: rows in a different order"
        pa = a[[f"prob_{f}" for f in findings]].to_numpy(float)
        pb = b[[f"prob_{f}" for f in findings]].to_numpy(float)
        diff = float(np.nanmax(np.abs(pa - pb)))
        assert diff <= EPS, f"{kind}: probabilities differ by up to {diff:.4f}"
        print(f"{kind}: max |p_{ACCEL} - p_cpu| {diff:.5f}; thresholds {np.round(thr, 4).tolist()}")
        ca = np.stack([_as_calls(a, f) for f in findings], axis=1)
        cb = np.stack([_as_calls(b, f) for f in findings], axis=1)
        assert ca.any(), f"{kind}: no positive call at all; the comparison would be empty"
        bad = call_disagreements(pa, thr, ca, pb, thr, cb)
        assert not bad, f"{kind}: calls differ away from the threshold (row, finding): {bad}"


@needs_accel
def test_train_one_epoch_synchronizes_with_the_host_once_per_step():
    """The engine reads the loss once per step (finite check, running loss, bar); before issue 26 it also
    synchronised for isfinite() and for a .cpu() copy after the optimizer step, so the host could not queue
    the next step while the GPU worked. Counted with torch.cuda.set_sync_debug_mode("warn")."""
    if ACCEL != "cuda":
        pytest.skip("torch.cuda.set_sync_debug_mode counts CUDA synchronisations")
    import warnings

    from chestxr.imaging import collate
    from chestxr.modeling import DistInfo, build_model, make_loss, train_one_epoch

    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)

    def batch(k: int) -> dict:
        items = [
            {
                "image": torch.randn(3, 64, 64, generator=g),
                "target": (torch.rand(4, generator=g) < 0.3).float(),
                "mask": torch.ones(4, dtype=torch.bool),
                "index": 8 * k + i,
                "ok": True,
                "reason": "",
                "path": f"{k}-{i}.png",
            }
            for i in range(8)
        ]
        out = collate(items)
        for key in ("image", "target", "mask"):
            out[key] = out[key].pin_memory()  # as a pin_memory DataLoader hands them over
        return out

    batches = [batch(k) for k in range(5)]
    model = build_model("resnet18", 4).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    kw = {
        "loss_fn": make_loss(pos_weight=None, info=DistInfo(), ovr=False),
        "device": dev,
        "amp_dtype": torch.bfloat16,
        "grad_clip": 1.0,
        "channels_last": True,
    }
    train_one_epoch(model, batches[:1], opt, **kw)  # first step: optimizer state, cuDNN handles
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stats = train_one_epoch(model, batches[1:], opt, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message)[:160] for w in caught if "synchroniz" in str(w.message).lower()]
    assert np.isfinite(stats.loss) and stats.images == 32
    assert len(syncs) <= 4, f"{len(syncs)} host syncs in 4 steps: {syncs}"


@needs_accel
def test_the_ddp_loss_reduction_runs_on_nccl(tmp_path):
    """torchrun on GPUs uses NCCL, which refuses CPU tensors: the engine's per-step loss/count all-reduce must
    be on the device (before issue 26 it was a CPU tensor and the first step failed). One process, world 1."""
    if ACCEL != "cuda":
        pytest.skip("NCCL needs CUDA")
    import socket

    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    from chestxr.imaging import collate
    from chestxr.modeling import DistInfo, all_reduce_sum, make_loss, train_one_epoch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        info = DistInfo(rank=0, world=1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).cuda()
        batch = collate(
            [
                {
                    "image": torch.full((3, 2, 2), 0.5 + i),
                    "target": torch.tensor([1.0, 0.0]),
                    "mask": torch.tensor([True, True]),
                    "index": i,
                    "ok": True,
                    "reason": "",
                    "path": f"x{i}.png",
                }
                for i in range(4)
            ]
        )
        stats = train_one_epoch(
            model,
            [batch],
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=make_loss(pos_weight=None, info=info, ovr=False),
            device=torch.device("cuda"),
            channels_last=False,
            reduce_fn=lambda x: all_reduce_sum(x, DistInfo(rank=0, world=2)),  # enabled: really all-reduces
            world=1,
        )
    finally:
        dist.destroy_process_group()
    assert stats.images == 4 and np.isfinite(stats.loss)
