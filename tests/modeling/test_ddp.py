"""`chestxr train` under torchrun with 2 CPU processes (gloo) gives the metrics of one process on the
same global batch. Uses the GroupNorm tiny CNN: BatchNorm statistics are per process by design."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_single_process(tmp_path):
    from chestxr.data import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(tmp_path / "data", n_images=40, seed=2, size=48)
    common = [
        "train",
        "--manifest",
        str(manifest),
        "--set",
        "model.backbone=tiny_gn",
        "--set",
        "preprocessing.size=32",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.lr=0.003",
    ]
    env = {**os.environ, "CHESTXR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "chestxr", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "chestxr",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = pd.read_csv(tmp_path / "one" / "metrics.csv")
    b = pd.read_csv(tmp_path / "two" / "metrics.csv")
    for col in ["train_loss", "val_loss", "val_mean_auroc"]:
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-4, abs=1e-5), col
    assert (tmp_path / "two" / "model.safetensors").exists()
