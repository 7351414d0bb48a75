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

Bounded waits (:func:`dist_timeout`): joining the group, every collective and every barrier give up after
``CHESTXR_DIST_TIMEOUT`` seconds (default 600; torch's own default for gloo is 30 minutes) with a one-line
:class:`~chestxr.core.TrainingError` naming the rank and what it waited for, so a dead or stuck peer ends the
process (and torchrun restarts the group) instead of hanging it.

Elastic restarts (``torchrun --max-restarts N``): the elastic agent hosts one TCPStore for the whole job at
``MASTER_ADDR:MASTER_PORT`` (``TORCHELASTIC_USE_AGENT_STORE=True``) and keeps it, keys and all, across restarts.
``init_process_group("gloo")`` writes each rank's listening address under the same keys in every attempt, so a
restarted rank could read the address of a rank of the attempt that was just killed and connect to a dead port
("Connection refused"): the restart failed at once or hung until the timeout. :func:`setup_distributed` therefore
gives every attempt its own key space in that store (``chestxr/attempt_<TORCHELASTIC_RESTART_COUNT>/``, as
torch up to 2.3 did itself).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

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


#: environment variable: seconds a rank waits for the others (join, collective, barrier) before it fails
TIMEOUT_ENV = "CHESTXR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
_T = TypeVar("_T")


def dist_timeout() -> timedelta:
    """How long any distributed wait may take: ``CHESTXR_DIST_TIMEOUT`` seconds (default 600)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds < 7 * 24 * 3600):
        raise TrainingError(
            f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds above 0 and below 604800 (a week; default 600)"
        )
    return timedelta(seconds=seconds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _elastic_attempt_store(world: int, timeout: timedelta) -> Optional[Any]:
    """This torchrun attempt's own key space in the elastic agent's store (module doc), or None when the
    agent does not host the store (plain env:// then: rank 0 hosts a fresh store at MASTER_PORT)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(addr, int(port), world_size=world, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"chestxr/attempt_{attempt}/", store)


def setup_distributed(device_type: str) -> DistInfo:
    """Init the process group when launched by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU, every
    wait bounded by :func:`dist_timeout`; one torchrun attempt never reads another's keys (module doc).
    TrainingError (one line) when the group cannot be joined in time."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        timeout = dist_timeout()
        rank = os.environ.get("RANK", "?")
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        try:
            store = _elastic_attempt_store(world, timeout)
            if store is not None:
                dist.init_process_group(
                    backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world, timeout=timeout
                )
            else:
                dist.init_process_group(backend=backend, timeout=timeout)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise TrainingError(
                f"rank {rank} of {world}: could not join the process group at {where} within "
                f"{timeout.total_seconds():g} s ({_first_line(exc)}); a rank died or is not started "
                f"(raise {TIMEOUT_ENV} for slow starts)"
            ) from exc
    info = DistInfo(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def _waited(info: DistInfo, what: str, call: Callable[[], _T]) -> _T:
    """``call()``, a collective of every rank: its failure (a peer died, or no answer within
    :func:`dist_timeout`) becomes one TrainingError line naming this rank and ``what`` it waited for."""
    try:
        return call()
    except RuntimeError as exc:  # torch.distributed.DistError and gloo/nccl errors
        raise TrainingError(
            f"rank {info.rank} of {info.world}: {what} failed ({_first_line(exc)}); another rank died, is stuck "
            f"or took longer than {TIMEOUT_ENV}={dist_timeout().total_seconds():g} s"
        ) from exc


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
        _waited(info, "summing over the ranks", lambda: dist.all_reduce(value, op=dist.ReduceOp.SUM))
    return value


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (a list of one without a process group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    _waited(info, "gathering from the ranks", lambda: dist.all_gather_object(out, obj))
    return out


def barrier(info: DistInfo, what: str = "the barrier") -> None:
    """Wait for all ranks (no-op without a process group), at most :func:`dist_timeout`: on gloo a
    ``monitored_barrier`` that names the ranks that did not arrive; TrainingError (one line) otherwise."""
    if not info.enabled:
        return
    timeout = dist_timeout()
    if dist.get_backend() == "gloo":
        _waited(info, f"waiting at {what}", lambda: dist.monitored_barrier(timeout=timeout, wait_all_ranks=True))
    else:
        _waited(info, f"waiting at {what}", lambda: dist.barrier())


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
