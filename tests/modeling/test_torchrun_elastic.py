"""Training past one process stays on torchrun: a 2-process gloo run whose rank 1 is SIGKILLed mid-training
is restarted by torchrun's elastic agent (--max-restarts, c10d rendezvous on a 127.0.0.1 endpoint), resumes
from last/ and ends where one uninterrupted process ends; every rank checks that the patient split and the
images it decodes (through the decode cache) are the same as rank 0's.

One restart must be enough (--max-restarts 1): torchrun's agent keeps its store across restarts, and a
restarted gloo group that read the killed attempt's addresses from it failed to connect or hung (fixed in
chestxr/modeling/_distributed.py). Every wait is bounded: CHESTXR_DIST_TIMEOUT=60 in the ranks, TORCHRUN_TIMEOUT
for the whole job; on failure the test prints every attempt's rank logs (torchrun --log-dir)."""

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
TORCHRUN_TIMEOUT = 300  # seconds for the whole torchrun job (about 30 s on an idle 2-core machine)


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


def _torchrun_logs(log_dir: Path, torchrun_err: str = "") -> str:
    """Every attempt's rank logs (torchrun --log-dir) and the tail of torchrun's own stderr, for a failure."""
    parts = []
    for f in sorted(log_dir.rglob("*.log")):
        text = f.read_text(errors="replace")
        parts.append(f"----- {f.relative_to(log_dir)} (last 3000 characters)\n{text[-3000:]}")
    parts.append(f"----- torchrun stderr (last 4000 characters)\n{torchrun_err[-4000:]}")
    return "\n".join(parts)


def _rank0_output(log_dir: Path) -> str:
    return "".join(f.read_text(errors="replace") for f in sorted(log_dir.rglob("attempt_*/0/stdout.log")))


def _kill_tree(proc: subprocess.Popen) -> None:
    for p in _descendants(proc.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()


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
    env = {**os.environ, "CHESTXR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "CHESTXR_DIST_TIMEOUT": "60"}
    run, logs = tmp_path / "elastic", tmp_path / "torchrun-logs"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv-id",
        "chestxr-elastic-test",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "-m",
        "chestxr",
        *_train_args(manifest, tmp_path / "cache"),
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = err = ""
    try:
        deadline = time.monotonic() + TORCHRUN_TIMEOUT
        # last/state.json is the committed checkpoint (metrics.csv is written after it)
        while not (run / "last" / "state.json").exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"torchrun ended ({proc.returncode}) before epoch 1 was saved\n{_torchrun_logs(logs, err)}")
            if time.monotonic() > deadline:
                _kill_tree(proc)
                out, err = proc.communicate()
                pytest.fail(f"no checkpoint after {TORCHRUN_TIMEOUT} s\n{_torchrun_logs(logs, err)}")
            time.sleep(0.01)
        killed = next(p for p in _descendants(proc.pid) if _rank(p) == 1)
        os.kill(killed, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 60))
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            out, err = proc.communicate()
            pytest.fail(f"torchrun did not finish within {TORCHRUN_TIMEOUT} s\n{_torchrun_logs(logs, err)}")
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
            proc.communicate()
    ranks0 = _rank0_output(logs)
    assert proc.returncode == 0, _torchrun_logs(logs, err)
    restarted = re.search(r"torchrun restart 1: resuming .* from last/", ranks0)
    assert restarted, _torchrun_logs(logs, err)
    assert ranks0.count("2 ranks agree: patient split") == 2  # checked by the first attempt and the restart
    resumed_at = re.search(r"resuming .* at epoch (\d+)/", ranks0)
    assert resumed_at and 2 <= int(resumed_at.group(1)) <= EPOCHS, "the kill came after the end of training"
    assert not (run / ".torchelastic.json").exists()  # a later job cannot take the folder for its own

    single = subprocess.run(
        [sys.executable, "-m", "chestxr", *_train_args(manifest, tmp_path / "cache1"), "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a = pd.read_csv(tmp_path / "one" / "metrics.csv")
    b = pd.read_csv(run / "metrics.csv")
    assert b["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for col in ["train_loss", "val_loss", "val_mean_auroc"]:
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-4, abs=1e-5), col
