"""Optional TensorBoard logging of the training loop (``train.tensorboard: true``; extra ``tensorboard``).

Per epoch, into ``RUN/tb/``: ``loss/train``, ``loss/val``, ``lr``, ``throughput/train_images_per_s``,
``val_auroc/mean`` and ``val_auroc/<finding>`` for every finding - the same numbers as metrics.csv,
with the epoch (1-based) as the step. View with ``tensorboard --logdir RUN/tb``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from chestxr.core import ConfigError


class TensorBoardLogger:
    """Writes one set of scalars per epoch to an event file under ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard: true needs the tensorboard package: pip install 'chestxr[tensorboard]' "
                "(or set train.tensorboard=false)"
            ) from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, row: Mapping[str, Any], findings: Sequence[str]) -> None:
        """``row``: one metrics.csv row (epoch, train_loss, val_loss, val_mean_auroc, lr,
        train_images_per_s, val_auroc_<finding>...). NaN AUROCs (one class in val) are skipped."""
        step = int(row["epoch"])
        scalars = {
            "loss/train": row["train_loss"],
            "loss/val": row["val_loss"],
            "lr": row["lr"],
            "throughput/train_images_per_s": row["train_images_per_s"],
            "val_auroc/mean": row["val_mean_auroc"],
            **{f"val_auroc/{f}": row[f"val_auroc_{f}"] for f in findings},
        }
        for tag, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
