"""What the epoch loop trains on: the model (built, initialised from another run, DDP-wrapped) and the loaders.

``build_train_model`` and ``build_loaders`` are called by :func:`chestxr.modeling.fitting.fit` in this order; a
train loader draws global batches of ``train.batch_size`` split over the processes (GlobalBatchSampler).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from chestxr.core.config import Config
from chestxr.core.errors import TrainingError
from chestxr.data.labels import LabeledSet
from chestxr.imaging.dataset import build_dataset, collate, seed_worker
from chestxr.modeling.distributed import DistInfo, GlobalBatchSampler


def build_train_model(
    config: Config,
    findings: list[str],
    *,
    device: torch.device,
    info: DistInfo,
    resume: bool,
    say: Callable[[str], None],
) -> tuple[nn.Module, nn.Module]:
    """(model, the module to train: the model itself or its DDP wrapper, with SyncBatchNorm on CUDA)."""
    from chestxr.modeling.models import build_model

    t = config.train
    model = build_model(
        config.model.backbone,
        len(findings),
        mode=config.model.mode,
        weights=config.model.weights,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
    )
    if config.model.init_from and not resume:
        init_from_checkpoint(model, config.model.init_from, findings, say)
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
    return model, train_model


def build_loaders(
    config: Config, train_set: LabeledSet, val_set: LabeledSet, *, device: torch.device, info: DistInfo
) -> tuple[Any, GlobalBatchSampler, DataLoader, DataLoader]:
    """(train dataset, its batch sampler, train loader, val loader); TrainingError when train.batch_size does not
    divide over the processes."""
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
    return train_ds, train_sampler, train_loader, val_loader


def init_from_checkpoint(model: nn.Module, path: str, findings: list[str], say) -> None:
    """Fine-tune from a chestxr run: copy the backbone, and head rows for findings in both lists."""
    from chestxr.modeling.checkpoint import load_model
    from chestxr.modeling.models import head_rows_for, transfer_findings

    old_model, meta = load_model(path)
    state = transfer_findings(old_model.state_dict(), meta.findings, findings, model)
    model.load_state_dict(state)
    kept = sum(i is not None for i in head_rows_for(meta.findings, findings))
    say(f"initialised from {path}: {meta.n_findings} -> {len(findings)} findings ({kept} head rows kept)")
