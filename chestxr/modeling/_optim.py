"""What training optimises and how: the masked, DDP-normalised loss, the optimizer's parameter groups,
the per-step learning-rate schedule, and ``train.pos_weight`` resolved on the training split.

Used by the training loop (:func:`chestxr.modeling.fit`, chestxr/modeling/_training.py) and by
benchmarks/bench_train.py (the same objects a run uses, against a plain loop).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import nn

from chestxr.core import Config
from chestxr.data import LabeledSet
from chestxr.modeling._distributed import DistInfo, all_reduce_sum


def make_loss(
    *, pos_weight: Optional[torch.Tensor], info: DistInfo, ovr: bool
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Masked BCE normalised by the GLOBAL count of unmasked labels (so DDP == one process).

    One-vs-rest: the sum over findings of each finding's own masked mean, so every binary model
    gets the gradient it would get if trained alone.
    """
    from chestxr.modeling._losses import masked_bce_with_logits

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ovr:
            local = mask.sum(dim=0).float()
            glob = all_reduce_sum(local.detach(), info).clamp_min(1.0)
            total = logits.new_zeros(())
            for j in range(logits.shape[1]):
                pw = pos_weight[j : j + 1] if pos_weight is not None else None
                mean_j = masked_bce_with_logits(
                    logits[:, j : j + 1], targets[:, j : j + 1], mask[:, j : j + 1], pos_weight=pw
                )
                total = total + mean_j * local[j] / glob[j] * info.world
            return total
        local = mask.sum().float()
        glob = all_reduce_sum(local.detach(), info).clamp_min(1.0)
        mean = masked_bce_with_logits(logits, targets, mask, pos_weight=pos_weight)
        return mean * local / glob * info.world

    return loss_fn


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """AdamW (or Nesterov SGD) over two groups: weight decay on weights, none on biases and norms."""
    t = config.train
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)


class LRSchedule:
    """LR multiplier per step: linear warmup, then cosine / step / constant. A plain object (not a
    lambda), so the scheduler state saved for --resume is JSON."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int) -> None:
        self.kind, self.total, self.warmup = kind, max(total_steps, 1), warmup_steps

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(max(step - self.warmup, 0) / max(self.total - self.warmup, 1), 1.0)
        if self.kind in ("cosine", "onecycle"):
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return 0.1 ** int(progress * 3)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: Config, steps_per_epoch: int) -> Any:
    """A per-step LambdaLR with :class:`LRSchedule` (onecycle: 10 % warmup unless warmup_epochs is set)."""
    t = config.train
    warm = int(round(t.warmup_epochs * steps_per_epoch))
    if t.scheduler == "onecycle" and not warm:
        warm = max(1, int(0.1 * t.epochs * steps_per_epoch))
    fn = LRSchedule(t.scheduler, t.epochs * steps_per_epoch, warm)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=fn)


def pos_weight_for(config: Config, train: LabeledSet, device) -> Optional[torch.Tensor]:
    """train.pos_weight as a (f,) tensor on ``device`` (:func:`chestxr.modeling.resolve_pos_weight`)."""
    from chestxr.modeling._losses import resolve_pos_weight

    pw = resolve_pos_weight(
        config.train.pos_weight, targets=torch.as_tensor(train.targets), mask=torch.as_tensor(train.mask)
    )
    return pw.to(device) if pw is not None else None
