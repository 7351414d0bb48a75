"""Dataset: one manifest row -> {"image", "target", "mask", "index", "ok"}; and :class:`LoaderOptions`, how
images are loaded into batches (batch size, worker processes, decode cache, what to do with a bad image).

Images are read through a loader (:func:`~chestxr.imaging.build_image_loader`: decode once, reuse every epoch)
and turned into model input by a transform (:func:`~chestxr.imaging.build_transform`). Any unreadable image
gives ``ok=False``, an all-False mask and the reason; the engine raises
ImageReadError for it (``on_bad_image="error"``, in the main process, so the message stays one
readable line even with worker processes) or, with ``"skip"``, leaves such rows out of losses, predictions and metrics, so a skipped image
is never counted as a negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from chestxr.core import ConfigError, ImageReadError

BadImagePolicy = Literal["error", "skip"]


@dataclass(frozen=True)
class LoaderOptions:
    """How images are loaded into batches for scoring (calibrate, evaluate, predict, :class:`chestxr.Run`).

    batch_size: images per forward pass (>= 1). num_workers: DataLoader worker processes (0: in this
    process; used only when there is more than one batch). cache_dir: the decode cache folder
    (:class:`~chestxr.imaging.ImageCache`), None for none. on_bad_image: "error" (an unreadable image, or a
    NaN/inf model output, is an ImageReadError naming the file) or "skip" (listed in skipped.csv, never
    scored). The CLI's ``--batch-size``, ``--workers``, ``--cache-dir`` and ``--on-bad-image``.
    """

    batch_size: int = 32
    num_workers: int = 2
    cache_dir: Optional[str] = None
    on_bad_image: BadImagePolicy = "error"

    def __post_init__(self) -> None:
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be one of ['error', 'skip'], got {self.on_bad_image!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")

    @classmethod
    def from_config(cls, config: Any) -> "LoaderOptions":
        """The options a training config implies (``train.batch_size``, ``data.num_workers`` / ``cache_dir`` /
        ``on_bad_image``)."""
        return cls(
            batch_size=config.train.batch_size,
            num_workers=config.data.num_workers,
            cache_dir=config.data.cache_dir,
            on_bad_image=config.data.on_bad_image,
        )


#: in-process loading (no worker processes): the default of the Python API's one-off calls
IN_PROCESS = LoaderOptions(num_workers=0)


class ChestXRayDataset(Dataset):
    """Map-style dataset over image paths with (n, n_findings) targets and mask.

    Args (keyword-only):
        paths: n image paths (absolute).
        targets: float32 (n, n_findings) in [0, 1]; ignored where ``mask`` is False.
        mask: bool (n, n_findings); True = the label is known and counts.
        loader: path -> float32 (H, W) in [0, 1].
        transform: float32 (H, W) -> tensor (C, S, S).
        on_bad_image: "error" raises ImageReadError; "skip" returns ok=False for that item.
        seed: when set, each item's random augmentation is seeded from (seed, epoch, index), so
            augmentation does not depend on the number of DataLoader workers or DDP processes
            (call ``set_epoch`` every epoch). The epoch is then kept in shared memory, so
            ``set_epoch`` also reaches the worker processes of a ``DataLoader(persistent_workers=True)``,
            which hold their own copy of the dataset from the first epoch on
            (:attr:`persistent_workers_safe`).
    """

    def __init__(
        self,
        *,
        paths: Sequence[str],
        targets: np.ndarray,
        mask: np.ndarray,
        loader: Callable[[str], np.ndarray],
        transform: Callable[[np.ndarray], torch.Tensor],
        on_bad_image: Literal["error", "skip"] = "error",
        image_shape: tuple[int, int, int] = (3, 224, 224),
        seed: int | None = None,
    ) -> None:
        if len(paths) != len(targets) or targets.shape != mask.shape:
            raise ValueError(f"paths ({len(paths)}), targets {targets.shape} and mask {mask.shape} must agree")
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        self.loader = loader
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.image_shape = image_shape
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64)
        self._epoch_shared = False
        if seed is not None:
            try:
                self._epoch.share_memory_()
                self._epoch_shared = True
            except (RuntimeError, OSError):  # no shared memory here: workers must then be restarted per epoch
                pass

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def persistent_workers_safe(self) -> bool:
        """True when ``DataLoader(persistent_workers=True)`` gives the same items as fresh workers every
        epoch: nothing depends on the epoch (no ``seed``), or the epoch is in shared memory."""
        return self.seed is None or self._epoch_shared

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (with ``seed`` set), in this process and in the
        DataLoader workers (the value lives in shared memory). Call it before the epoch's iterator is
        created: workers already holding prefetched items keep the epoch those were made for."""
        self._epoch.fill_(int(epoch))

    def _transform(self, img: np.ndarray, index: int) -> torch.Tensor:
        if self.seed is None:
            return self.transform(img)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            return self.transform(img)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = self._transform(self.loader(path), index)
            ok, reason = True, ""
        except ImageReadError as exc:
            # Never raise here: an exception in a DataLoader worker comes back as a traceback dump.
            # The engine raises (on_bad_image="error") or skips in the main process.
            image = torch.zeros(self.image_shape, dtype=torch.float32)
            ok, reason = False, exc.reason
        mask = self.mask[index] if ok else torch.zeros_like(self.mask[index])
        return {
            "image": image,
            "target": self.targets[index],
            "mask": mask,
            "index": index,
            "ok": ok,
            "reason": reason,
            "path": path,
        }


def build_dataset(
    *,
    paths: Sequence[str],
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    preprocessing: Any,
    augmentation: Any | None,
    train: bool,
    cache_dir: str | None,
    on_bad_image: Literal["error", "skip"] = "error",
    n_findings: int | None = None,
    seed: int | None = None,
) -> ChestXRayDataset:
    """Dataset with the loader and transform built from the config sections.

    ``targets``/``mask`` may be None for unlabeled prediction: zeros and all-False are used
    (``n_findings`` columns).
    """
    from chestxr.imaging._cache import build_image_loader
    from chestxr.imaging._transforms import build_transform

    n = len(paths)
    if targets is None or mask is None:
        f = int(n_findings or 1)
        targets = np.zeros((n, f), dtype=np.float32)
        mask = np.zeros((n, f), dtype=bool)
    loader = build_image_loader(preprocessing, cache_dir=cache_dir)
    transform = build_transform(preprocessing, augmentation if train else None, train=train)
    return ChestXRayDataset(
        paths=paths,
        targets=targets,
        mask=mask,
        loader=loader,
        transform=transform,
        on_bad_image=on_bad_image,
        image_shape=(preprocessing.channels, preprocessing.size, preprocessing.size),
        seed=seed if train else None,
    )


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items into a batch dict (image (B, C, S, S), target/mask (B, f), index (B,))."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "target": torch.stack([b["target"] for b in batch]),
        "mask": torch.stack([b["mask"] for b in batch]),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "ok": torch.tensor([b["ok"] for b in batch], dtype=torch.bool),
        "reason": [b["reason"] for b in batch],
        "path": [b["path"] for b in batch],
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed numpy/random from torch's per-worker seed (deterministic)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
