"""Training past one process stays on torchrun: a 2-process gloo run whose rank 1 is SIGKILLed mid-training
is restarted by torchrun's elastic agent (--max-restarts, c10d rendezvous on a 127.0.0.1 endpoint), resumes
from last/ and ends where one uninterrupted process ends; every rank checks that the patient split and the
images it decodes (through the decode cache) are the same as rank 0's."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
EPOCHS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _rank(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    return int(env[b"RANK"]) if b"RANK" in env and b"TORCHELASTIC_RUN_ID" in env else None


def _train_args(manifest: Path, cache: Path) -> list[str]:
    sets = [
        "model.backbone=tiny_gn",  # GroupNorm: no per-process BatchNorm statistics
        "preprocessing.size=32",
        "data.num_workers=0",
        f"data.cache_dir={cache}",
        f"train.epochs={EPOCHS}",
        "train.batch_size=8",
        "train.lr=0.003",
    ]
    return ["train", "--manifest", str(manifest), *[a for s in sets for a in ("--set", s)]]


def test_killed_rank_is_restarted_by_torchrun_and_resumes(tmp_path):
    from chestxr.data import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(tmp_path / "data", n_images=40, seed=2, size=48)
    env = {**os.environ, "CHESTXR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "elastic"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        "3",  # a restarted gloo group can fail to connect on a loaded machine; torchrun then tries again
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv-id",
        "chestxr-elastic-test",
        "-m",
        "chestxr",
        *_train_args(manifest, tmp_path / "cache"),
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 400
        while not (run / "metrics.csv").exists():  # epoch 1 is checkpointed (last/ is written first)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 400 s"
            time.sleep(0.01)
        killed = next(p for p in _descendants(proc.pid) if _rank(p) == 1)
        os.kill(killed, signal.SIGKILL)
        done_before = len(pd.read_csv(run / "metrics.csv"))
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            for p in _descendants(proc.pid):
                os.kill(p, signal.SIGKILL)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out[-2000:], err[-3000:])
    assert 1 <= done_before < EPOCHS, "the kill came after the end of training"
    assert re.search(r"torchrun restart \d: resuming", out), out[-3000:]
    assert out.count("2 ranks agree: patient split") >= 2  # checked by the first attempt and the restart
    assert not (run / ".torchelastic.json").exists()  # a later job cannot take the folder for its own

    single = subprocess.run(
        [sys.executable, "-m", "chestxr", *_train_args(manifest, tmp_path / "cache1"), "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a = pd.read_csv(tmp_path / "one" / "metrics.csv")
    b = pd.read_csv(run / "metrics.csv")
    assert b["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for col in ["train_loss", "val_loss", "val_mean_auroc"]:
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-4, abs=1e-5), col
