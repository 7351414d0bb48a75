"""The epoch loop of ``train``: optimizer, scheduler, AMP, EMA and loss around the engine, one epoch at a time.

After every epoch: validation (mean AUROC over all processes), best weights to model.safetensors + model.json,
everything --resume needs to last/, metrics.csv and skipped.csv (chestxr/modeling/run_outputs.py). Stops at
train.epochs, at early stopping, at train.max_minutes, or after ``stop_after_epochs`` (tests of --resume).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from chestxr.core.config import Config
from chestxr.core.numeric import sigmoid
from chestxr.data.labels import LabeledSet
from chestxr.modeling.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
from chestxr.modeling.engine import mean_auroc, predict, resolve_amp, train_one_epoch
from chestxr.modeling.fit_setup import build_loaders, build_train_model
from chestxr.modeling.optim import build_optimizer, build_scheduler, make_loss, pos_weight_for
from chestxr.modeling.ovr_best import assemble_best, load_best_state, update_ovr_best
from chestxr.modeling.run_outputs import build_metadata, write_metrics_csv, write_skipped


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; deterministic algorithms where available (warn only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def validate(
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
        summary=False,  # the epoch's line carries the validation numbers
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


def fit(
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
    """Train ``train_set``'s findings for config.train.epochs (from last/ when ``resume``); returns ``run_dir``."""
    from chestxr.modeling.checkpoint import save_model
    from chestxr.modeling.training_state import capture_rng_state, load_training_state, save_training_state

    t = config.train
    ovr = config.model.mode == "ovr"
    model, train_model = build_train_model(config, findings, device=device, info=info, resume=resume, say=say)
    train_ds, train_sampler, train_loader, val_loader = build_loaders(
        config, train_set, val_set, device=device, info=info
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
    best_state = load_best_state(run_dir) if resume and ovr else None

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
        val_auc, per, val_loss, val_skipped = validate(
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
                best_state, best = update_ovr_best(eval_model, per, best, best_state, epoch)
                per_member = [None if not math.isfinite(a) else float(a) for a in best["per_member"]]
                save_model(
                    run_dir,
                    assemble_best(eval_model, best_state),
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
            write_metrics_csv(run_dir / "metrics.csv", history)
            write_skipped(run_dir, train_set, val_set, skipped)
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


def _epochs_since_best(history: list[dict], best: dict) -> int:
    return max(len(history) - 1 - int(best.get("epoch", -1)), 0)
