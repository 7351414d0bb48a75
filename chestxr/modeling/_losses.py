"""Masked binary cross-entropy on logits, for hard (0/1) or soft ([0, 1]) targets.

Entries whose ``mask`` is False (uncertain or unmentioned labels under a "masked" policy) contribute
nothing: the loss is the mean over unmasked entries only. ``pos_weight`` (n_findings,) scales the
positive term per finding; :func:`compute_pos_weight` derives it from training prevalence.
"""

from __future__ import annotations

import warnings
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from chestxr.core import ConfigError


def _check(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, n_findings), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape or mask.shape != logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy over unmasked entries.

    logits (B, f), targets (B, f) in [0, 1] (masked entries may hold anything, even NaN), mask (B, f)
    bool (True = counts). Per entry: -[w t log s(x) + (1 - t) log(1 - s(x))], w = pos_weight[f] or 1.
    Computed in float32. Returns a scalar; 0 (still attached to ``logits`` for backward) when no entry
    is unmasked, never NaN.
    """
    _check(logits, targets, mask)
    mask = mask.to(device=logits.device, dtype=torch.bool)
    x = logits.float()
    t = torch.where(mask, targets.to(device=logits.device, dtype=torch.float32), torch.zeros((), device=x.device))
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=x.device, dtype=torch.float32)
        if pos_weight.shape != (x.shape[1],):
            raise ValueError(f"pos_weight must have shape ({x.shape[1]},), got {tuple(pos_weight.shape)}")
    per = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")
    per = torch.where(mask, per, torch.zeros((), device=x.device))
    return per.sum() / mask.sum().clamp_min(1)


class MaskedBCEWithLogitsLoss(nn.Module):
    """Module form of :func:`masked_bce_with_logits`; ``pos_weight`` is a buffer (moves with .to())."""

    pos_weight: torch.Tensor | None

    def __init__(self, *, pos_weight: torch.Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        self.register_buffer("pos_weight", pw)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_bce_with_logits(logits, targets, mask, pos_weight=self.pos_weight)


def compute_pos_weight(targets: torch.Tensor, mask: torch.Tensor, *, clip: float = 100.0) -> torch.Tensor:
    """Per-finding n_negative / n_positive over unmasked training entries -> (f,) float32.

    targets (n, f) in [0, 1] (soft targets count fractionally), mask (n, f) bool. Clipped to
    [1/clip, clip]. A finding with no positive (or no unmasked entry) gets 1.0 and a warning.
    """
    t = torch.as_tensor(targets, dtype=torch.float64)
    m = torch.as_tensor(mask).to(torch.bool)
    if t.ndim != 2 or m.shape != t.shape:
        raise ValueError(f"targets {tuple(t.shape)} and mask {tuple(m.shape)} must both be (n, f)")
    if clip < 1:
        raise ValueError(f"clip must be >= 1, got {clip}")
    t = torch.where(m, t, torch.zeros((), dtype=t.dtype))
    n_pos = t.sum(0)
    n_neg = (m.double() - t).sum(0)
    none = n_pos <= 0
    if bool(none.any()):
        idx = torch.nonzero(none).flatten().tolist()
        warnings.warn(f"findings at columns {idx} have no positive training label; pos_weight 1.0 used", stacklevel=2)
    ratio = torch.where(none, torch.ones_like(n_pos), n_neg / n_pos.clamp_min(1e-12))
    return ratio.clamp(1.0 / clip, clip).float()


PosWeightSetting = Union[None, str, float, Sequence[float]]


def resolve_pos_weight(
    setting: PosWeightSetting, *, targets: torch.Tensor, mask: torch.Tensor, clip: float = 100.0
) -> torch.Tensor | None:
    """Interpret ``train.pos_weight``: None | "auto" (from training prevalence) | a number | a list.

    targets, mask: the training split (n, f). Returns a (f,) float32 tensor or None.
    """
    if setting is None:
        return None
    n_findings = torch.as_tensor(targets).shape[1]
    if isinstance(setting, str):
        if setting != "auto":
            raise ConfigError(f"train.pos_weight: {setting!r} is not 'auto', a number or a list")
        return compute_pos_weight(targets, mask, clip=clip)
    if isinstance(setting, bool):
        raise ConfigError(f"train.pos_weight: {setting!r} is not 'auto', a number or a list")
    if isinstance(setting, (int, float)):
        values = [float(setting)] * n_findings
    else:
        values = [float(v) for v in setting]
        if len(values) != n_findings:
            raise ConfigError(f"train.pos_weight: {len(values)} values for {n_findings} findings")
    if any(not v > 0 for v in values):
        raise ConfigError(f"train.pos_weight: values must be > 0, got {values}")
    return torch.tensor(values, dtype=torch.float32)
