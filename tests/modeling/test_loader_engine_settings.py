"""The loader and engine settings a GPU run needs, checked on the CPU (issue 26): persistent DataLoader workers that
still see every epoch's augmentation, pinned memory only on CUDA, cudnn.benchmark as an opt-in config key, and
one host sync per training step whose loss check also holds under DDP (every process raises together)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch


def _train_dataset(tmp_path, n=4):
    from chestxr.core import AugmentConfig, PreprocessConfig
    from chestxr.data import generate_synthetic_dataset
    from chestxr.imaging import build_dataset

    manifest = generate_synthetic_dataset(tmp_path / "data", n_images=n, seed=5, size=48, dicom_fraction=0.0)
    paths = sorted(str(p) for p in (manifest.parent / "images").iterdir())
    targets = np.zeros((len(paths), 2), np.float32)
    return build_dataset(
        paths=paths,
        targets=targets,
        mask=np.ones_like(targets, dtype=bool),
        preprocessing=PreprocessConfig(size=32, cache_size=40),
        augmentation=AugmentConfig(rotate_deg=20.0, translate=0.1),
        train=True,
        cache_dir=None,
        seed=3,
    )


def test_persistent_workers_see_every_epochs_augmentation(tmp_path):
    """A persistent worker keeps the dataset copy it got at the first epoch; set_epoch must still reach it, so
    each epoch's items equal what the main process makes for that epoch (and epochs differ)."""
    from torch.utils.data import DataLoader

    from chestxr.imaging import collate

    ds = _train_dataset(tmp_path)
    assert ds.persistent_workers_safe
    expected = {}
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        expected[epoch] = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert not torch.equal(expected[0], expected[1])  # the augmentation depends on the epoch
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, persistent_workers=True, collate_fn=collate)
    workers = set()
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        it = iter(loader)
        batch = next(it)
        workers.update(w.pid for w in it._workers)
        assert torch.equal(batch["image"], expected[epoch]), f"epoch {epoch}: the worker used another epoch"
    assert len(workers) == 1  # one worker process served all three epochs


def test_build_loaders_pin_on_cuda_only_and_keep_workers(tmp_path):
    from chestxr.core import load_config
    from chestxr.data import generate_synthetic_dataset, load_training_splits
    from chestxr.modeling import DistInfo, build_loaders

    manifest = generate_synthetic_dataset(tmp_path / "data", n_images=24, seed=6, size=48, with_split=True)
    for workers, persistent in ((2, True), (0, False)):
        config = load_config(
            None, [f"data.manifest={manifest}", "preprocessing.size=32", f"data.num_workers={workers}"]
        )
        splits = load_training_splits(config)
        _, _, train_loader, val_loader = build_loaders(
            config, splits["train"], splits["val"], torch.device("cpu"), DistInfo()
        )
        for loader in (train_loader, val_loader):
            assert loader.pin_memory is False  # pinned memory only for a CUDA device
            assert loader.persistent_workers is persistent
            assert loader.num_workers == workers


def test_cudnn_benchmark_is_an_opt_in_config_key():
    from chestxr.core import Config, load_config
    from chestxr.modeling import seed_everything
    from chestxr.runs import MAY_CHANGE

    assert Config().train.cudnn_benchmark is False
    assert load_config(None, ["train.cudnn_benchmark=true"]).train.cudnn_benchmark is True
    assert "train.cudnn_benchmark" in MAY_CHANGE  # a speed setting: --resume may change it
    old = torch.backends.cudnn.benchmark
    try:
        seed_everything(0, cudnn_benchmark=True)
        assert torch.backends.cudnn.benchmark is True
        seed_everything(0)
        assert torch.backends.cudnn.benchmark is False
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = old


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, results) -> None:
    """One of 2 gloo processes: rank 1's batch has an infinite logit. Puts (rank, outcome) on ``results``."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from chestxr.core import TrainingError
        from chestxr.imaging import collate
        from chestxr.modeling import DistInfo, all_reduce_sum, make_loss, train_one_epoch

        info = DistInfo(rank=rank, world=2)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
        value = float("inf") if rank == 1 else 0.5
        batch = collate(
            [
                {
                    "image": torch.full((3, 2, 2), value),
                    "target": torch.tensor([1.0, 0.0]),
                    "mask": torch.tensor([True, True]),
                    "index": i,
                    "ok": True,
                    "reason": "",
                    "path": f"x{i}.png",
                }
                for i in range(2)
            ]
        )
        try:
            train_one_epoch(
                model,
                [batch],
                torch.optim.SGD(model.parameters(), lr=0.1),
                loss_fn=make_loss(pos_weight=None, info=info, ovr=False),
                device=torch.device("cpu"),
                channels_last=False,
                reduce_fn=lambda x: all_reduce_sum(x, info),
                world=2,
            )
            results.put((rank, "no error"))
        except TrainingError as exc:
            results.put((rank, f"TrainingError: {exc}"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_non_finite_loss_stops_every_process_at_the_same_batch():
    """Only rank 1's loss is infinite; the loss check reads the summed loss, so both ranks raise at batch 0
    (before, rank 0 went on into the next all-reduce and waited for rank 1 for ever)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not alive, "a process hung (waiting in a collective)"
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert all("TrainingError" in o and "at batch 0" in o for o in outcomes.values()), outcomes
