"""Every distributed wait is bounded (CHESTXR_DIST_TIMEOUT) and ends in one line, and a torchrun elastic
restart never joins through the killed attempt's keys. The test plays torchrun's elastic agent: it hosts the
TCPStore that the agent keeps for the whole job (TORCHELASTIC_USE_AGENT_STORE=True) and starts the ranks of
two attempts itself (tests/modeling/test_torchrun_elastic.py runs the real torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

from chestxr.core import TrainingError

REPO = Path(__file__).resolve().parents[2]
RANK_SCRIPT = """
import os, sys, time
from pathlib import Path
import torch
from chestxr.modeling import all_reduce_sum, barrier, cleanup_distributed, setup_distributed
rank, ready = os.environ["RANK"], Path(sys.argv[1])
if rank == "0":  # let rank 1 look for rank 0's address first: it finds the killed attempt's, if any
    while not ready.exists():
        time.sleep(0.01)
    time.sleep(1.0)
else:
    ready.touch()
info = setup_distributed("cpu")
print("sum", int(all_reduce_sum(torch.ones(1), info).item()), flush=True)
barrier(info, "the test's end")
cleanup_distributed()
"""


def _agent_store() -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30), wait_for_workers=False)


def _env(port: int, rank: int, attempt: int, timeout: str = "20") -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "WORLD_SIZE": "2",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_RUN_ID": "chestxr-test",
        "TORCHELASTIC_RESTART_COUNT": str(attempt),
        "CHESTXR_DIST_TIMEOUT": timeout,
    }


def _attempt(port: int, attempt: int, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    ready = tmp_path / f"rank1-ready-{attempt}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(ready)],
            env=_env(port, rank, attempt),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (1, 0)
    ]
    deadline = time.monotonic() + 120  # CHESTXR_DIST_TIMEOUT=20 ends any wait long before
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    hung = [p.poll() is None for p in procs]
    for p in procs:
        if p.poll() is None:
            p.kill()
    done = [subprocess.CompletedProcess(p.args, p.returncode, *p.communicate()) for p in procs]
    if any(hung):
        logs = "\n".join(f"--- rank {r} stderr\n{d.stderr[-2000:]}" for r, d in zip((1, 0), done))
        pytest.fail(f"attempt {attempt}: a rank still waited after 120 s (CHESTXR_DIST_TIMEOUT=20)\n{logs}")
    return done


def test_a_restarted_attempt_never_joins_through_the_killed_attempts_keys(tmp_path):
    """Attempt 0 leaves each rank's gloo address in the agent's store; attempt 1's rank 1 looks first. It
    used to read attempt 0's rank 0 address and fail with 'Connection refused' (or hang for 30 minutes)."""
    store = _agent_store()
    for attempt in (0, 1):
        for r in _attempt(store.port, attempt, tmp_path):
            assert r.returncode == 0 and "sum 2" in r.stdout, f"attempt {attempt}: {r.stderr[-3000:]}"
    keys = store.list_keys()
    assert any(k.startswith("chestxr/attempt_0/") for k in keys), keys
    assert any(k.startswith("chestxr/attempt_1/") for k in keys), keys


def test_a_rank_whose_peer_never_comes_fails_in_one_line_within_the_timeout(synth_manifest, tmp_path):
    from conftest import tiny_args

    store = _agent_store()
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "chestxr", "train", "--manifest", str(synth_manifest), "--out", str(tmp_path / "r")]
        + tiny_args(),
        env=_env(store.port, 1, 0, timeout="3"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert time.monotonic() - started < 90
    ours = [
        line for line in r.stderr.splitlines() if line.startswith("chestxr train:")
    ]  # (torch's C++ log lines aside)
    assert len(ours) == 1 and ours[0] == r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
    assert ours[0].startswith("chestxr train: error: rank 1 of 2: could not join the process group at 127.0.0.1:")
    assert "within 3 s" in ours[0] and "CHESTXR_DIST_TIMEOUT" in ours[0] and "Traceback" not in r.stderr


def test_dist_timeout_setting(monkeypatch):
    from chestxr.modeling._distributed import dist_timeout

    monkeypatch.delenv("CHESTXR_DIST_TIMEOUT", raising=False)
    assert dist_timeout() == timedelta(seconds=600)
    monkeypatch.setenv("CHESTXR_DIST_TIMEOUT", "45")
    assert dist_timeout() == timedelta(seconds=45)
    for bad in ("0", "-3", "ten", "nan", "inf", "1e9"):
        monkeypatch.setenv("CHESTXR_DIST_TIMEOUT", bad)
        with pytest.raises(TrainingError, match="CHESTXR_DIST_TIMEOUT=.*seconds above 0"):
            dist_timeout()
