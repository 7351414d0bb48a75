"""Training and inference loops on tensors; no config parsing, no file I/O.

``train_one_epoch`` runs one pass with masked BCE, optional AMP, channels_last and gradient
clipping; ``predict`` returns logits (n, n_findings) in dataset order and the rows that were
skipped (unreadable images with ``on_bad_image="skip"``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from chestxr.core import Progress, TrainingError, progress_mode


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda if available else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """AMP dtype for ``amp`` ("auto" = bf16 on CUDA with bf16 support, fp16 on older CUDA, off on CPU:
    bf16 autocast on small CPUs measured 10-35x slower)."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def progress_enabled() -> bool:
    """True when tqdm bars are shown (stderr is a terminal, no CHESTXR_NO_PROGRESS / CHESTXR_QUIET);
    see chestxr/core/_progress.py."""
    return progress_mode() == "bar"


def check_bad_images(loader: Iterable[Any], batch: dict[str, Any]) -> list[tuple[int, str]]:
    """(index, reason) of the unreadable items in ``batch``; raises ImageReadError for the first one
    when the loader's dataset says ``on_bad_image == "error"``."""

    ok = batch["ok"]
    if bool(ok.all()):
        return []
    bad = [(int(i), r, p) for i, r, p, o in zip(batch["index"], batch["reason"], batch["path"], ok) if not o]
    return _raise_or_list(loader, bad)


def _raise_or_list(loader: Iterable[Any], bad: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
    """Raise ImageReadError for the first (index, reason, path) when the loader's dataset says
    ``on_bad_image == "error"``, else return the (index, reason) pairs to list as skipped."""
    from chestxr.core import ImageReadError

    dataset = getattr(loader, "dataset", None)
    if bad and getattr(dataset, "on_bad_image", "error") == "error":
        i, reason, path = bad[0]
        raise ImageReadError(
            path,
            reason + " (set data.on_bad_image=skip / --on-bad-image skip to skip "
            "unreadable images and list them instead)",
        )
    return [(i, r) for i, r, _ in bad]


def non_finite_outputs(
    logits: torch.Tensor, batch: dict[str, Any], findings: Optional[Sequence[str]] = None
) -> list[tuple[int, str, str]]:
    """(index, reason, path) of the readable rows of ``batch`` whose logits (b, f) hold NaN/inf: such an
    output is never a call, so the row is treated like an unreadable image."""
    finite = torch.isfinite(logits).all(dim=1).cpu()
    bad_rows = torch.nonzero(batch["ok"] & ~finite).flatten().tolist()
    out = []
    for r in bad_rows:
        cols = torch.nonzero(~torch.isfinite(logits[r].cpu())).flatten().tolist()
        names = [findings[c] if findings is not None and c < len(findings) else f"output {c}" for c in cols]
        reason = f"the model's output is NaN/inf for {', '.join(names)}: the image cannot be scored (check the file)"
        out.append((int(batch["index"][r]), reason, str(batch["path"][r])))
    return out


def _members_of(model: nn.Module) -> Optional[list[nn.Module]]:
    inner = getattr(model, "module", model)
    members = getattr(inner, "members", None)
    return list(members) if members is not None else None


@dataclass
class EpochStats:
    """What one training epoch did."""

    loss: float
    images: int
    seconds: float
    images_per_s: float
    skipped: list[tuple[int, str]] = field(default_factory=list)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    scheduler: Any = None,
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    grad_clip: Optional[float] = None,
    channels_last: bool = True,
    ema: Optional[AveragedModel] = None,
    description: str = "train",
    total: Optional[int] = None,
    reduce_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    world: int = 1,
) -> EpochStats:
    """One pass over ``loader``; batches are dicts from ``dataset.collate``.

    loss_fn(logits (B, f), targets (B, f), mask (B, f)) -> scalar. ``scheduler`` (if given) steps
    once per batch. Under DDP, ``reduce_fn`` sums a tensor over the ``world`` processes, so the
    reported loss and image counts are global (each process's loss is already scaled so that the
    sum over processes / world is the global batch mean). Raises TrainingError on a NaN/inf loss (naming the batch), before the
    optimizer step, so the weights stay finite; under DDP the check is on the summed loss, so every
    process raises at the same batch instead of the others waiting for it in the next all-reduce.

    One host-device synchronisation per step: the loss value (summed over processes under DDP, on the
    device so NCCL can reduce it) is read once, after the forward pass, for the finite check, the
    running loss and the progress bar; the backward pass and the optimizer step are then queued
    without waiting, so the host prepares the next batch while the GPU computes.
    """
    model.train()
    members = _members_of(model)
    total_loss, n_seen, skipped = 0.0, 0, []
    start = time.perf_counter()
    # the epoch's summary line is the training loop's (with the validation numbers), not this bar's
    bar = Progress(total, description, summary=False)
    for step, batch in enumerate(loader):
        ok = batch["ok"]
        skipped.extend(check_bad_images(loader, batch))
        images = batch["image"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch["target"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        loss = loss_fn(logits.float(), targets, mask)
        n_ok = float(ok.sum())  # a CPU tensor: no device sync
        if reduce_fn is not None:
            pair = reduce_fn(torch.stack([loss.detach().float(), torch.full((), n_ok, device=loss.device)]))
            loss_sum, n_sum = pair.tolist()  # the step's one host sync
            loss_value, n = loss_sum / world, int(round(n_sum))
        else:
            loss_value, n = float(loss.detach()), int(n_ok)  # the step's one host sync
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at batch {step} of {description}; lower train.lr, "
                "check the labels (values must be in [0, 1]) or turn off mixed precision (train.amp=off)"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            if members is not None:  # one-vs-rest: clip each binary model on its own
                for m in members:
                    nn.utils.clip_grad_norm_(m.parameters(), grad_clip)
            else:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss_value * n
        n_seen += n
        rate = n_seen / max(time.perf_counter() - start, 1e-9)
        bar.update(1, items=n, loss=f"{loss_value:.4f}", img_s=f"{rate:.1f}")
    bar.close()
    seconds = time.perf_counter() - start
    return EpochStats(
        loss=total_loss / max(n_seen, 1),
        images=n_seen,
        seconds=seconds,
        images_per_s=n_seen / max(seconds, 1e-9),
        skipped=skipped,
    )


@dataclass
class Predictions:
    """Output of ``predict``: logits (n, f) float32 for the dataset rows in ``indices`` order
    (sorted), plus (index, reason) for each skipped row (not in ``indices``)."""

    logits: np.ndarray
    indices: np.ndarray
    skipped: list[tuple[int, str]]
    seconds: float
    #: with ``predict(..., features=True)``: (n, D) penultimate features (the input of the final linear
    #: layer; a OneVsRest model's members side by side) and (n, 2) mean and standard deviation of each
    #: model input tensor, in the rows of ``logits``
    features: Optional[np.ndarray] = None
    input_stats: Optional[np.ndarray] = None

    @property
    def scores(self) -> np.ndarray:
        """Sigmoid probabilities (n, f)."""
        from chestxr.core import sigmoid

        return sigmoid(self.logits)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = True,
    description: str = "predict",
    total: Optional[int] = None,
    findings: Optional[Sequence[str]] = None,
    summary: bool = True,
    features: bool = False,
) -> Predictions:
    """Run the model in eval mode over ``loader``; returns logits sorted by dataset index.

    ``features``: also return each image's penultimate features and input statistics
    (:class:`Predictions`), captured by a forward hook on the final linear layer(s).

    ``summary``: print the one-line stage summary off a terminal (chestxr/core/_progress.py);
    the training loop turns it off for validation, whose numbers are in its line per epoch.

    Rows whose logits hold NaN/inf are handled like unreadable images (the dataset's on_bad_image:
    ImageReadError naming the file and the ``findings`` name, or listed in ``skipped``): a
    non-finite output is never returned as a score."""
    model.eval()
    out_logits, out_idx, skipped = [], [], []
    out_feats: list[torch.Tensor] = []
    out_stats: list[torch.Tensor] = []
    captured: list[torch.Tensor] = []
    hooks = []
    if features:
        from chestxr.modeling._heads import feature_heads

        for head in feature_heads(model):
            hooks.append(head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach())))
    start = time.perf_counter()
    bar = Progress(total, description, summary=summary)
    try:
        for batch in loader:
            ok = batch["ok"]
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            captured.clear()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images).float()
            skipped.extend(check_bad_images(loader, batch))
            nonfinite = non_finite_outputs(logits, batch, findings)
            if nonfinite:
                skipped.extend(_raise_or_list(loader, nonfinite))
                ok = ok & ~torch.isin(batch["index"], torch.tensor([i for i, _, _ in nonfinite]))
            keep = ok.to(logits.device)
            out_logits.append(logits[keep].cpu())
            out_idx.append(batch["index"][ok])
            if features:
                feats = torch.cat([c.float().flatten(1) for c in captured], dim=1)
                x = images.float().flatten(1)
                out_feats.append(feats[keep].cpu())
                out_stats.append(torch.stack([x.mean(dim=1), x.std(dim=1)], dim=1)[keep].cpu())
            bar.update(1, items=int(ok.sum()))
    finally:
        for h in hooks:
            h.remove()
    bar.close()
    logits = torch.cat(out_logits).numpy() if out_logits else np.zeros((0, 0), np.float32)
    idx = torch.cat(out_idx).numpy() if out_idx else np.zeros((0,), np.int64)
    order = np.argsort(idx, kind="stable")
    feats_np = stats_np = None
    if features:
        feats_np = torch.cat(out_feats).numpy()[order] if out_feats else np.zeros((0, 0), np.float32)
        stats_np = torch.cat(out_stats).numpy()[order] if out_stats else np.zeros((0, 2), np.float32)
    return Predictions(
        logits=logits[order],
        indices=idx[order],
        skipped=sorted(skipped),
        seconds=time.perf_counter() - start,
        features=feats_np,
        input_stats=stats_np,
    )


def mean_auroc(y_true: np.ndarray, y_score: np.ndarray, mask: np.ndarray) -> tuple[float, list[float]]:
    """Mean over findings of AUROC on unmasked entries (findings with one class are NaN and skipped).

    y_true (n, f) in [0, 1] (binarised at 0.5), y_score (n, f), mask (n, f) bool.
    Returns (mean, per-finding list).
    """
    from sklearn.metrics import roc_auc_score

    per = []
    for j in range(y_true.shape[1]):
        m = mask[:, j]
        t = y_true[m, j] >= 0.5
        if t.size == 0 or t.all() or not t.any():
            per.append(float("nan"))
            continue
        per.append(float(roc_auc_score(t, y_score[m, j])))
    finite = [p for p in per if not math.isnan(p)]
    return (float(np.mean(finite)) if finite else float("nan")), per
