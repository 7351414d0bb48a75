"""``train(config, out_dir=...)``: the run-folder contract around the engine.

Writes, atomically: config.yaml (resolved), splits.csv (when it made the split), model.safetensors +
model.json (best epoch by validation mean AUROC), last/ (everything --resume needs: weights,
optimizer, scheduler, epoch, RNG, history; no pickle), metrics.csv (one row per epoch) and
skipped.csv (images skipped with on_bad_image=skip). Works unchanged under torchrun (DDP).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from chestxr.core.config import Config, config_to_dict, write_config
from chestxr.core.csvsafe import escape_row
from chestxr.core.errors import CheckpointError, TrainingError
from chestxr.core.fileio import prepare_output_dir, write_text_atomic
from chestxr.core.numeric import sigmoid
from chestxr.data.labels import LabeledSet, load_training_splits
from chestxr.imaging.dataset import build_dataset, collate, seed_worker
from chestxr.modeling.distributed import (
    DistInfo,
    GlobalBatchSampler,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from chestxr.modeling.engine import mean_auroc, predict, resolve_amp, resolve_device, train_one_epoch
from chestxr.modeling.optim import build_optimizer, build_scheduler, make_loss, pos_weight_for
from chestxr.modeling.run_metadata import RunMetadata


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; deterministic algorithms where available (warn only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def build_metadata(
    config: Config, findings: list[str], train_set: LabeledSet, run_dir: Optional[Path] = None
) -> RunMetadata:
    """The self-description stored in model.json (everything predict needs).

    Training patients are stored as keyed hashes (HMAC-SHA256 under the run's secret key in
    ``run_dir/patient_hash.key``, see :mod:`chestxr.core.patient_ids`); without ``run_dir`` none are stored.
    """
    from chestxr.core.patient_ids import training_patient_record

    patients: dict[str, Any] = (
        training_patient_record(run_dir, train_set.patient_ids.tolist()) if run_dir is not None else {}
    )
    n = len(findings)
    return RunMetadata(
        findings=list(findings),
        mode=config.model.mode,
        task="binary" if n == 1 and config.model.task != "multiclass" else config.model.task,
        backbone=config.model.backbone,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
        preprocessing=config.preprocessing,
        label_policy=config.labels,
        config=config_to_dict(config),
        training_patients_sha=list(patients.get("training_patients_sha", [])),
        patient_hash=patients.get("patient_hash"),
        training_manifest_hash=train_set.manifest_hash,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(keys))
    for row in history:
        w.writerow(escape_row(row.get(k, "") for k in keys))
    write_text_atomic(path, buf.getvalue())


def _validate(
    model, loader, val: LabeledSet, *, device, amp_dtype, channels_last, info
) -> tuple[float, list[float], float, list[tuple[int, str]]]:
    """(val mean AUROC, per-finding AUROC, val loss, skipped (index, reason)) over all processes."""
    preds = predict(
        model,
        loader,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        description="val",
        total=len(loader),
        findings=val.findings,
    )
    parts = all_gather_objects((preds.logits, preds.indices, preds.skipped), info)
    val_skipped = sorted({x for p in parts for x in p[2]})
    logits = (
        np.concatenate([p[0] for p in parts if len(p[1])])
        if any(len(p[1]) for p in parts)
        else np.zeros((0, len(val.findings)))
    )
    idx = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, int)
    order = np.argsort(idx, kind="stable")
    logits, idx = logits[order], idx[order]
    scores = sigmoid(logits)
    true, msk = val.eval_true[idx], val.eval_mask[idx]
    mean, per = mean_auroc(true, scores, msk)
    t = torch.as_tensor(true, dtype=torch.float32)
    m = torch.as_tensor(msk)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logits, dtype=torch.float32), t, reduction="none"
    )
    val_loss = float((loss * m).sum() / m.sum().clamp_min(1))
    return mean, per, val_loss, val_skipped


def train(
    config: Config,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
    stop_after_epochs: Optional[int] = None,
) -> Path:
    """Train a model as configured; returns the run folder.

    ``stop_after_epochs`` ends the process's work early (for tests of --resume), as a crash would.
    ``log`` gets one line per epoch (default :func:`chestxr.core.progress.say`: stdout, silent with --quiet).
    """
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    info = setup_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    run_dir = Path(out_dir)
    if log is None:
        from chestxr.core.progress import say as log
    say = log if info.is_main else (lambda s: None)
    try:
        if resume:
            if not (run_dir / "last" / "state.json").exists():
                raise CheckpointError(f"{run_dir}: nothing to resume (no last/state.json); start without --resume")
        elif info.is_main:
            prepare_output_dir(run_dir, overwrite=overwrite)
        if info.is_main:
            from chestxr.core.patient_ids import load_or_create_key

            load_or_create_key(run_dir)  # the other ranks read it after the barrier
        barrier(info)
        seed_everything(config.seed)
        splits = load_training_splits(config, run_dir=run_dir if (info.is_main and not resume) else None)
        train_set, val_set = splits["train"], splits.get("val")
        if val_set is None or len(val_set) == 0:
            raise TrainingError("no validation rows: set data.val_fraction > 0 or give a split column with 'val'")
        findings = train_set.findings
        if resume:
            from chestxr.modeling.resume import check_resume_recipe

            check_resume_recipe(
                run_dir,
                config,
                manifest_hashes={"train": train_set.manifest_hash, "val": val_set.manifest_hash},
                recorded=_recorded_hashes(run_dir),
            )
        if info.is_main:
            write_config(config, run_dir / "config.yaml")
        return _fit(
            config,
            run_dir=run_dir,
            train_set=train_set,
            val_set=val_set,
            findings=findings,
            device=device,
            info=info,
            resume=resume,
            say=say,
            stop_after_epochs=stop_after_epochs,
        )
    finally:
        cleanup_distributed()


def _fit(
    config: Config,
    *,
    run_dir: Path,
    train_set: LabeledSet,
    val_set: LabeledSet,
    findings: list[str],
    device,
    info: DistInfo,
    resume: bool,
    say,
    stop_after_epochs: Optional[int],
) -> Path:
    from chestxr.modeling.checkpoint import save_model
    from chestxr.modeling.models import build_model
    from chestxr.modeling.training_state import capture_rng_state, load_training_state, save_training_state

    t = config.train
    ovr = config.model.mode == "ovr"
    model = build_model(
        config.model.backbone,
        len(findings),
        mode=config.model.mode,
        weights=config.model.weights,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
    )
    if config.model.init_from and not resume:
        _init_from_checkpoint(model, config.model.init_from, findings, say)
    model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if info.enabled:
        if device.type == "cuda":
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    workers = config.data.num_workers
    train_ds = build_dataset(
        paths=train_set.paths,
        targets=train_set.targets,
        mask=train_set.mask,
        preprocessing=config.preprocessing,
        augmentation=config.augmentation if config.augmentation.enabled else None,
        train=True,
        cache_dir=config.data.cache_dir,
        on_bad_image=config.data.on_bad_image,
        seed=config.seed,
    )
    val_ds = build_dataset(
        paths=val_set.paths,
        targets=val_set.eval_true,
        mask=val_set.eval_mask,
        preprocessing=config.preprocessing,
        augmentation=None,
        train=False,
        cache_dir=config.data.cache_dir,
        on_bad_image=config.data.on_bad_image,
    )
    if t.batch_size % info.world:
        raise TrainingError(f"train.batch_size {t.batch_size} must be divisible by {info.world} processes")
    train_sampler = GlobalBatchSampler(
        len(train_ds), global_batch=t.batch_size, rank=info.rank, world=info.world, seed=config.seed, shuffle=True
    )
    train_loader = DataLoader(
        train_ds,
        batch_sampler=train_sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    val_sampler = GlobalBatchSampler(
        len(val_ds), global_batch=t.batch_size * info.world, rank=info.rank, world=info.world, shuffle=False
    )
    val_loader = DataLoader(
        val_ds, batch_sampler=val_sampler, num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda"
    )
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(train_sampler))
    amp_dtype = resolve_amp(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = None
    if t.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    loss_fn = make_loss(pos_weight=pos_weight_for(config, train_set, device), info=info, ovr=ovr)
    metadata = build_metadata(config, findings, train_set, run_dir)

    best: dict[str, Any] = {"score": -math.inf, "epoch": -1, "per_member": None}
    start_epoch = 0
    history: list[dict[str, Any]] = []
    skipped: dict[tuple[str, int], str] = {}
    if resume:
        state = load_training_state(run_dir / "last", model=model, optimizer=optimizer, scheduler=scheduler)
        extra = state.get("extra", {})
        start_epoch = int(state["epoch"]) + 1
        history = extra.get("history", [])
        best = extra.get("best", best)
        if ema is not None and extra.get("ema") is not None:
            ema.module.load_state_dict(extra["ema"])
        say(f"resuming {run_dir} at epoch {start_epoch + 1}/{t.epochs}")
    best_state = _load_best_state(run_dir) if resume and ovr else None

    tb = None  # flushed every epoch, so a crash loses nothing
    if t.tensorboard and info.is_main:
        from chestxr.modeling.tblog import TensorBoardLogger

        tb = TensorBoardLogger(run_dir / "tb")
    started = time.perf_counter()
    bad_epochs = 0 if not history else _epochs_since_best(history, best)
    for epoch in range(start_epoch, t.epochs):
        train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        seed_everything(config.seed * 1000 + epoch)
        stats = train_one_epoch(
            train_model,
            train_loader,
            optimizer,
            loss_fn=loss_fn,
            device=device,
            scheduler=scheduler,
            amp_dtype=amp_dtype,
            scaler=scaler,
            grad_clip=t.grad_clip,
            channels_last=t.channels_last,
            ema=ema,
            description=f"epoch {epoch + 1}/{t.epochs}",
            total=len(train_sampler),
            reduce_fn=(lambda x: all_reduce_sum(x, info)) if info.enabled else None,
            world=info.world,
        )
        for i, r in stats.skipped:
            skipped[("train", i)] = r
        eval_model = ema.module if ema is not None else model
        val_auc, per, val_loss, val_skipped = _validate(
            eval_model,
            val_loader,
            val_set,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=t.channels_last,
            info=info,
        )
        for i, r in val_skipped:
            skipped[("val", i)] = r
        row = {
            "epoch": epoch + 1,
            "train_loss": round(stats.loss, 6),
            "val_loss": round(val_loss, 6),
            "val_mean_auroc": round(val_auc, 6),
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": round(stats.images_per_s, 2),
            "seconds": round(stats.seconds, 2),
        }
        row.update({f"val_auroc_{f}": round(a, 6) for f, a in zip(findings, per)})
        history.append(row)
        if tb is not None:
            tb.log_epoch(row, findings)
        improved = (not math.isnan(val_auc)) and val_auc > best["score"]
        if info.is_main:
            if ovr:
                best_state, best = _update_ovr_best(eval_model, per, best, best_state, epoch)
                per_member = [None if not math.isfinite(a) else float(a) for a in best["per_member"]]
                save_model(
                    run_dir,
                    _assemble(eval_model, best_state),
                    dataclasses.replace(metadata, best_epoch=best["epoch"] + 1, best_val_auroc_per_finding=per_member),
                )
            elif improved:
                save_model(
                    run_dir,
                    eval_model,
                    dataclasses.replace(metadata, best_epoch=epoch + 1, best_val_mean_auroc=float(val_auc)),
                )
        if improved:
            best = {**best, "score": val_auc, "epoch": epoch}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if info.is_main:
            extra = {
                "history": history,
                "best": best,
                "manifest_hashes": {"train": train_set.manifest_hash, "val": val_set.manifest_hash},
            }
            if ema is not None:
                extra["ema"] = {k: v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()}
            save_training_state(
                run_dir / "last",
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=epoch,
                rng=capture_rng_state(),
                extra=extra,
            )
            _write_metrics_csv(run_dir / "metrics.csv", history)
            _write_skipped(run_dir, train_set, val_set, skipped)
        say(
            f"epoch {epoch + 1}/{t.epochs}: loss {stats.loss:.4f}  val loss {val_loss:.4f}  "
            f"val mean AUROC {val_auc:.4f}  {stats.images_per_s:.1f} img/s"
        )
        barrier(info)
        if stop_after_epochs is not None and epoch + 1 - start_epoch >= stop_after_epochs:
            break
        if t.early_stopping_patience and bad_epochs >= t.early_stopping_patience:
            say(f"early stopping: no improvement for {bad_epochs} epochs")
            break
        if t.max_minutes and (time.perf_counter() - started) / 60 > t.max_minutes:
            say(f"stopping: time budget train.max_minutes={t.max_minutes} reached")
            break
    if tb is not None:
        tb.close()
    if skipped:
        say(f"{len(skipped)} image(s) skipped as unreadable; see {run_dir / 'skipped.csv'}")
    if info.is_main and not (run_dir / "model.safetensors").exists():
        save_model(run_dir, model, metadata)
    return run_dir


def _recorded_hashes(run_dir: Path) -> Optional[dict[str, str]]:
    """{"train", "val"} row hashes saved in last/state.json (older runs: model.json's training hash).

    Read through the run-folder JSON caps (checkpoint.read_run_json): a hostile file is a
    CheckpointError naming it; a missing one gives None."""
    from chestxr.modeling.checkpoint import read_run_json

    try:
        state = run_dir / "last" / "state.json"
        doc = read_run_json(state) if state.is_file() else {}
        hashes = (doc.get("extra") or {}).get("manifest_hashes") if isinstance(doc.get("extra"), dict) else None
        if isinstance(hashes, dict):
            return {k: str(v) for k, v in hashes.items() if isinstance(v, str)}
        model = run_dir / "model.json"
        meta = read_run_json(model) if model.is_file() else {}
        return {"train": meta["training_manifest_hash"]} if meta.get("training_manifest_hash") else None
    except (OSError, KeyError):
        return None


def _epochs_since_best(history: list[dict], best: dict) -> int:
    return max(len(history) - 1 - int(best.get("epoch", -1)), 0)


def _write_skipped(
    run_dir: Path, train_set: LabeledSet, val_set: LabeledSet, skipped: dict[tuple[str, int], str]
) -> None:
    if not skipped:
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(["split", "path", "reason"]))
    for (split, i), r in sorted(skipped.items()):
        w.writerow(escape_row([split, (train_set if split == "train" else val_set).paths[i], r]))
    write_text_atomic(run_dir / "skipped.csv", buf.getvalue())


def _update_ovr_best(model: nn.Module, per: list[float], best: dict, best_state: Optional[dict], epoch: int):
    """Keep, for each binary model of a one-vs-rest wrapper, the weights of its own best epoch."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    per_member = list(best.get("per_member") or [-math.inf] * len(per))
    if best_state is None:
        best_state = sd
    for j, a in enumerate(per):
        score = -math.inf if math.isnan(a) else a
        if score > per_member[j] or best["epoch"] < 0:
            prefix = f"members.{j}."
            for k, v in sd.items():
                if k.startswith(prefix):
                    best_state[k] = v
            per_member[j] = max(score, per_member[j]) if best["epoch"] >= 0 else score
    return best_state, {**best, "per_member": per_member}


def _assemble(model: nn.Module, state: dict) -> nn.Module:
    import copy

    m = copy.deepcopy(model).cpu()
    m.load_state_dict(state)
    return m


def _load_best_state(run_dir: Path) -> Optional[dict]:
    p = run_dir / "model.safetensors"
    if not p.exists():
        return None
    from safetensors.torch import load_file

    return load_file(str(p))


def _init_from_checkpoint(model: nn.Module, path: str, findings: list[str], say) -> None:
    """Fine-tune from a chestxr run: copy the backbone, and head rows for findings in both lists."""
    from chestxr.modeling.checkpoint import load_model
    from chestxr.modeling.models import head_rows_for, transfer_findings

    old_model, meta = load_model(path)
    state = transfer_findings(old_model.state_dict(), meta.findings, findings, model)
    model.load_state_dict(state)
    kept = sum(i is not None for i in head_rows_for(meta.findings, findings))
    say(f"initialised from {path}: {meta.n_findings} -> {len(findings)} findings ({kept} head rows kept)")
