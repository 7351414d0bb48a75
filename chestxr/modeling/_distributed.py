"""torch.distributed glue: process-group setup from torchrun's environment, a global-batch
sampler that makes N processes see exactly the batches one process would, and gathering.

Under ``torchrun --nproc_per_node N chestxr train ...`` every process reads the same config; rank 0
writes files. The sampler shuffles with one seeded permutation per epoch and gives rank r the r-th
slice of every global batch, so with a loss normalised by the *global* count of unmasked labels the
N-process gradients equal the single-process ones (BatchNorm statistics are per process unless
SyncBatchNorm is used, which PyTorch supports on GPUs only).

Agreement (:func:`check_ranks_agree`): every rank reads the manifest, makes the patient split and reads
images through its own decode cache. A rank that disagrees (another manifest version on that node, another
chestxr or decoder version, a stale cache) would train on other rows or other pixels without any error. So
before the first epoch each rank computes :func:`split_digest` (the train and val rows: manifest hashes of
relative paths, patients, labels; and the training targets and mask after the label policy) and
:func:`decode_digest` (the decode-cache settings and the bytes of the first ``k`` training images as its loader
returns them), and all ranks compare them (``all_gather_object``); any difference is a TrainingError on every
rank naming the ranks that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from chestxr.core import ImageReadError, TrainingError


@dataclass(frozen=True)
class DistInfo:
    """rank / world size / local rank; world == 1 means no process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device_type: str) -> DistInfo:
    """Init the process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch of a seeded per-epoch permutation.

    n: dataset size; global_batch: images per optimizer step over all ranks (must divide by world).
    With world == 1 it is a plain seeded shuffled batch sampler.
    """

    def __init__(
        self,
        n: int,
        *,
        global_batch: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} must be divisible by the {world} processes")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[np.ndarray]:
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        batches = [order[i : i + self.global_batch] for i in range(0, self.n, self.global_batch)]
        if self.drop_last and batches and len(batches[-1]) < self.global_batch:
            batches = batches[:-1]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._global_batches():
            share = np.array_split(b, self.world)[self.rank]
            if len(share):
                yield share.tolist()

    def __len__(self) -> int:
        return sum(1 for b in self._global_batches() if len(np.array_split(b, self.world)[self.rank]))


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity without a process group)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (a list of one without a process group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op without a process group)."""
    if info.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------- agreement between ranks


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def split_digest(train_set: Any, val_set: Any) -> str:
    """SHA-256 of the train/val rows (their manifest hashes) and the training targets and mask."""
    return _sha(
        train_set.manifest_hash,
        val_set.manifest_hash,
        np.ascontiguousarray(train_set.targets, dtype=np.float32).tobytes(),
        np.ascontiguousarray(train_set.mask, dtype=bool).tobytes(),
    )


def decode_digest(paths: Sequence[str], preprocessing: Any, *, cache_dir: Optional[str], k: int = 4) -> str:
    """SHA-256 of the decode settings and of the first ``k`` images of ``paths`` as the loader returns them
    (an unreadable one counts by its reason)."""
    from chestxr.imaging import CACHE_VERSION, ReadOptions, build_image_loader

    loader = build_image_loader(preprocessing, cache_dir=cache_dir)
    settings = json.dumps(
        {
            "options": ReadOptions.from_config(preprocessing).to_dict(),
            "side": preprocessing.cache_size,
            "cache": bool(cache_dir),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    parts: list[bytes | str] = [settings]
    for path in list(paths)[:k]:
        try:
            image = np.ascontiguousarray(loader(path), dtype=np.float32)
            parts += [str(image.shape), image.tobytes()]
        except ImageReadError as exc:
            parts.append(f"unreadable: {exc.reason}")
    return _sha(*parts)


def check_ranks_agree(info: DistInfo, digests: dict[str, str]) -> dict[str, str]:
    """Compare ``digests`` ({"split": ..., "decode": ...}) over all ranks; TrainingError on every rank when
    any differs (naming which and the ranks that differ from rank 0). Returns ``digests``."""
    gathered: list[dict[str, str]] = all_gather_objects(digests, info)
    problems = []
    for name, value in gathered[0].items():
        differ = [r for r, d in enumerate(gathered) if d.get(name) != value]
        if differ:
            what = {"split": "patient split", "decode": "decoded images (decode cache)"}.get(name, name)
            problems.append(f"the {what} of rank(s) {differ} differs from rank 0's")
    if problems:
        raise TrainingError(
            "; ".join(problems) + ": every node must see the same manifest, preprocessing, chestxr and decoder "
            "versions (and an up-to-date data.cache_dir)"
        )
    return digests
