"""torch.distributed glue: process-group setup from torchrun's environment, a global-batch
sampler that makes N processes see exactly the batches one process would, and gathering.

Under ``torchrun --nproc_per_node N chestxr train ...`` every process reads the same config; rank 0
writes files. The sampler shuffles with one seeded permutation per epoch and gives rank r the r-th
slice of every global batch, so with a loss normalised by the *global* count of unmasked labels the
N-process gradients equal the single-process ones (BatchNorm statistics are per process unless
SyncBatchNorm is used, which PyTorch supports on GPUs only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


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
