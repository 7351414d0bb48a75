"""The training loop: :func:`fit` trains a model on a labelled train split, validating every epoch.

Read top to bottom: :func:`fit` builds the model (initialised from another run's weights when asked, wrapped
for DDP), the loaders, optimizer, LR schedule, AMP, EMA and loss; resumes from the recorder's saved state;
then, per epoch, trains (:func:`chestxr.modeling.train_one_epoch`), validates (mean AUROC over all processes),
hands the best weights and everything ``--resume`` needs to its :class:`Recorder`, and stops at
``train.epochs``, at early stopping, at ``train.max_minutes`` or after ``stop_after_epochs``. The helpers
follow in the order :func:`fit` calls them.

The loop writes no file itself: a :class:`Recorder` keeps what it reports (:func:`chestxr.runs.train`'s
recorder writes the run folder: model.safetensors + model.json, last/, metrics.csv, skipped.csv). Only
TensorBoard event files are written here, into ``FitOptions.tensorboard_dir``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from chestxr.core import Config, TrainingError, say, sigmoid
from chestxr.data import LabeledSet
from chestxr.imaging import build_dataset, collate, seed_worker
from chestxr.modeling._distributed import DistInfo, GlobalBatchSampler, all_gather_objects, all_reduce_sum, barrier
from chestxr.modeling._engine import mean_auroc, predict, resolve_amp, resolve_device, train_one_epoch
from chestxr.modeling._heads import head_rows_for, transfer_findings
from chestxr.modeling._models import build_model
from chestxr.modeling._optim import build_optimizer, build_scheduler, make_loss, pos_weight_for


@dataclass(frozen=True)
class InitialWeights:
    """Weights to fine-tune from (``model.init_from``): ``load()`` gives (model, its findings); the backbone
    and the head rows of findings in both lists are copied. ``name`` is what the log line calls it."""

    name: str
    load: Callable[[], tuple[nn.Module, Sequence[str]]]


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` runs. device: None = ``config.train.device`` resolved; dist: this process's rank and
    the world size (:func:`chestxr.modeling.setup_distributed`); resume: continue from the recorder's saved
    state; init_from: weights to start from (ignored on resume); log: one line per epoch (default
    :func:`chestxr.core.say`); stop_after_epochs: end this process's work early, as a crash would (tests of
    --resume); tensorboard_dir: where ``train.tensorboard`` writes its event files."""

    device: Optional[torch.device] = None
    dist: DistInfo = field(default_factory=DistInfo)
    resume: bool = False
    init_from: Optional[InitialWeights] = None
    log: Callable[[str], None] = say
    stop_after_epochs: Optional[int] = None
    tensorboard_dir: Optional[Path] = None


@dataclass
class Resumed:
    """What a recorder restored for ``--resume`` (model, optimizer and scheduler are restored in place):
    the last finished epoch (0-based), the metrics rows so far, the best-epoch record, the EMA weights, and
    where it was restored from (for the log line)."""

    epoch: int
    history: list[dict[str, Any]]
    best: dict[str, Any]
    ema: Optional[dict[str, torch.Tensor]] = None
    source: str = ""


class Recorder(Protocol):
    """Where :func:`fit` reports, on the main process only. ``skipped`` maps (split, dataset index) to the
    reason an image was skipped (``data.on_bad_image: skip``)."""

    def resume(self, model: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
        """Restore model, optimizer and scheduler (and the RNG states) in place from the saved state."""
        ...

    def best_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """The weights saved as best so far (one-vs-rest keeps each member's own best epoch), or None."""
        ...

    def save_best(
        self, model: nn.Module, *, epoch: int, val_mean_auroc: Optional[float], per_member: Optional[list]
    ) -> None:
        """Keep ``model`` as the best model (epoch 1-based; per_member: one-vs-rest members' best AUROC)."""
        ...

    def end_epoch(
        self,
        epoch: int,
        *,
        model: nn.Module,
        optimizer: Any,
        scheduler: Any,
        history: list[dict[str, Any]],
        best: dict[str, Any],
        ema: Optional[dict[str, torch.Tensor]],
        skipped: dict[tuple[str, int], str],
    ) -> None:
        """After every epoch (0-based): everything a resume needs, the metrics rows and the skipped images."""
        ...

    def finish(self, model: nn.Module) -> None:
        """After the last epoch: keep ``model`` as the model if no best weights were kept (no epoch improved)."""
        ...


@dataclass
class TrainingResult:
    """What :func:`fit` did: best epoch (1-based, None if none improved), its validation mean AUROC, the
    epochs run by this call, one metrics row per epoch, and the skipped images."""

    best_epoch: Optional[int]
    best_val_mean_auroc: Optional[float]
    epochs_run: int
    history: list[dict[str, Any]]
    skipped: dict[tuple[str, int], str]


def fit(
    config: Config, train_set: LabeledSet, val_set: LabeledSet, recorder: Recorder, options: FitOptions = FitOptions()
) -> TrainingResult:
    """Train ``train_set``'s findings for ``config.train.epochs`` epochs, validating on ``val_set`` (its
    ``eval_true`` / ``eval_mask``), reporting to ``recorder``; see the module docstring."""
    t, dist, log = config.train, options.dist, options.log
    device = options.device or resolve_device(t.device)
    ovr = config.model.mode == "ovr"
    findings = train_set.findings
    init_from = None if options.resume else options.init_from
    model, train_model = build_train_model(config, findings, device=device, dist=dist, init_from=init_from, log=log)
    train_ds, train_sampler, train_loader, val_loader = build_loaders(config, train_set, val_set, device, dist)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(train_sampler))
    amp_dtype = resolve_amp(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = None
    if t.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    loss_fn = make_loss(pos_weight=pos_weight_for(config, train_set, device), info=dist, ovr=ovr)

    best: dict[str, Any] = {"score": -math.inf, "epoch": -1, "per_member": None}
    start_epoch, history, skipped = 0, [], {}
    if options.resume:
        resumed = recorder.resume(model, optimizer, scheduler)
        start_epoch, history, best = resumed.epoch + 1, resumed.history, resumed.best or best
        if ema is not None and resumed.ema is not None:
            ema.module.load_state_dict(resumed.ema)
        log(f"resuming {resumed.source} at epoch {start_epoch + 1}/{t.epochs}")
    best_state = recorder.best_weights() if options.resume and ovr else None
    tb = None  # flushed every epoch, so a crash loses nothing
    if t.tensorboard and dist.is_main and options.tensorboard_dir is not None:
        from chestxr.modeling._tensorboard import TensorBoardLogger

        tb = TensorBoardLogger(options.tensorboard_dir)

    started = time.perf_counter()
    bad_epochs = 0 if not history else max(len(history) - 1 - int(best.get("epoch", -1)), 0)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, t.epochs):
        train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        seed_everything(config.seed * 1000 + epoch, cudnn_benchmark=t.cudnn_benchmark)
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
            reduce_fn=(lambda x: all_reduce_sum(x, dist)) if dist.enabled else None,
            world=dist.world,
        )
        skipped.update({("train", i): r for i, r in stats.skipped})
        eval_model = ema.module if ema is not None else model
        val_auc, per, val_loss, val_skipped = validate(eval_model, val_loader, val_set, amp_dtype, t, dist, device)
        skipped.update({("val", i): r for i, r in val_skipped})
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
        if dist.is_main and ovr:  # every member keeps the weights of its own best epoch
            best_state, best = update_ovr_best(eval_model, per, best, best_state, epoch)
            per_member = [None if not math.isfinite(a) else float(a) for a in best["per_member"]]
            recorder.save_best(
                assemble_best(eval_model, best_state),
                epoch=best["epoch"] + 1,
                val_mean_auroc=None,
                per_member=per_member,
            )
        elif dist.is_main and improved:
            recorder.save_best(eval_model, epoch=epoch + 1, val_mean_auroc=float(val_auc), per_member=None)
        if improved:
            best = {**best, "score": val_auc, "epoch": epoch}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if dist.is_main:
            ema_state = (
                {k: v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()}
                if ema is not None
                else None
            )
            recorder.end_epoch(
                epoch,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                history=history,
                best=best,
                ema=ema_state,
                skipped=skipped,
            )
        log(
            f"epoch {epoch + 1}/{t.epochs}: loss {stats.loss:.4f}  val loss {val_loss:.4f}  "
            f"val mean AUROC {val_auc:.4f}  {stats.images_per_s:.1f} img/s"
        )
        barrier(dist, f"the end of epoch {epoch + 1}")
        if options.stop_after_epochs is not None and epoch + 1 - start_epoch >= options.stop_after_epochs:
            break
        if t.early_stopping_patience and bad_epochs >= t.early_stopping_patience:
            log(f"early stopping: no improvement for {bad_epochs} epochs")
            break
        if t.max_minutes and (time.perf_counter() - started) / 60 > t.max_minutes:
            log(f"stopping: time budget train.max_minutes={t.max_minutes} reached")
            break
    if tb is not None:
        tb.close()
    if dist.is_main:
        recorder.finish(model)
    best_epoch = int(best["epoch"]) + 1 if best.get("epoch", -1) >= 0 else None
    score = float(best["score"]) if math.isfinite(best.get("score", -math.inf)) else None
    return TrainingResult(best_epoch, score, epoch + 1 - start_epoch, history, skipped)


def seed_everything(seed: int, *, cudnn_benchmark: bool = False) -> None:
    """Seed python, numpy and torch; deterministic algorithms where available (warn only);
    ``cudnn.benchmark`` as ``cudnn_benchmark`` (``train.cudnn_benchmark``: off unless asked for)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)


def build_train_model(
    config: Config,
    findings: list[str],
    *,
    device: torch.device,
    dist: DistInfo,
    init_from: Optional[InitialWeights] = None,
    log: Callable[[str], None] = say,
) -> tuple[nn.Module, nn.Module]:
    """(model, the module to train: the model itself or its DDP wrapper, with SyncBatchNorm on CUDA).

    ``init_from``: copy the backbone, and the head rows of findings in both lists, from those weights."""
    t = config.train
    model = build_model(
        config.model.backbone,
        len(findings),
        mode=config.model.mode,
        weights=config.model.weights,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
    )
    if init_from is not None:
        old_model, old_findings = init_from.load()
        state = transfer_findings(old_model.state_dict(), list(old_findings), findings, model)
        model.load_state_dict(state)
        kept = sum(i is not None for i in head_rows_for(old_findings, findings))
        log(
            f"initialised from {init_from.name}: {len(old_findings)} -> {len(findings)} findings ({kept} head rows kept)"
        )
    model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if dist.enabled:
        if device.type == "cuda":
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return model, train_model


def build_loaders(
    config: Config, train_set: LabeledSet, val_set: LabeledSet, device: torch.device, dist: DistInfo
) -> tuple[Any, GlobalBatchSampler, DataLoader, DataLoader]:
    """(train dataset, its batch sampler, train loader, val loader): global batches of ``train.batch_size``
    split over the processes (GlobalBatchSampler); TrainingError when it does not divide over them."""
    t = config.train
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
    if t.batch_size % dist.world:
        raise TrainingError(f"train.batch_size {t.batch_size} must be divisible by {dist.world} processes")
    train_sampler = GlobalBatchSampler(
        len(train_ds), global_batch=t.batch_size, rank=dist.rank, world=dist.world, seed=config.seed, shuffle=True
    )
    # pinned host memory on CUDA (the engine's non_blocking copies are then asynchronous); workers kept
    # between epochs (no start-up per epoch and per validation) when the dataset's epoch reaches them
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_ds,
        batch_sampler=train_sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        pin_memory=pin,
        persistent_workers=workers > 0 and train_ds.persistent_workers_safe,
    )
    val_sampler = GlobalBatchSampler(
        len(val_ds), global_batch=t.batch_size * dist.world, rank=dist.rank, world=dist.world, shuffle=False
    )
    val_loader = DataLoader(
        val_ds,
        batch_sampler=val_sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        persistent_workers=workers > 0 and val_ds.persistent_workers_safe,
    )
    return train_ds, train_sampler, train_loader, val_loader


def validate(
    model: nn.Module, loader: DataLoader, val: LabeledSet, amp_dtype: Any, t: Any, dist: DistInfo, device: torch.device
) -> tuple[float, list[float], float, list[tuple[int, str]]]:
    """(val mean AUROC, per-finding AUROC, val loss, skipped (index, reason)) over all processes."""
    preds = predict(
        model,
        loader,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=t.channels_last,
        description="val",
        total=len(loader),
        findings=val.findings,
        summary=False,  # the epoch's line carries the validation numbers
    )
    parts = all_gather_objects((preds.logits, preds.indices, preds.skipped), dist)
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
    target = torch.as_tensor(true, dtype=torch.float32)
    m = torch.as_tensor(msk)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(logits, dtype=torch.float32), target, reduction="none"
    )
    val_loss = float((loss * m).sum() / m.sum().clamp_min(1))
    return mean, per, val_loss, val_skipped


def update_ovr_best(
    model: nn.Module, per: list[float], best: dict[str, Any], best_state: Optional[dict], epoch: int
) -> tuple[dict, dict[str, Any]]:
    """One-vs-rest: keep, for each binary member, the weights of its own best epoch (by its val AUROC)."""
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


def assemble_best(model: nn.Module, state: dict) -> nn.Module:
    """A CPU copy of ``model`` carrying the member-wise best weights ``state``."""
    m = copy.deepcopy(model).cpu()
    m.load_state_dict(state)
    return m
