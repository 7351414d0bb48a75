"""Run-folder writes are serialised (fcntl lock, "run folder is busy") and thresholds.json + model.json
are one transaction (issue 18.4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

import chestxr.runs._checkpoint as ckpt
from chestxr.core import RunBusyError
from chestxr.modeling import build_model


@pytest.fixture
def run(tmp_path):
    model = build_model("tiny", 2)
    ckpt.save_model(tmp_path / "run", model, {"findings": ["A", "B"], "preprocessing": {}})
    return tmp_path / "run"


def _slow_reads(monkeypatch):
    """Widen the read-modify-write window the way a slow disk or a busy machine does."""
    real = ckpt.read_metadata

    def slow(run_dir):
        meta = real(run_dir)
        time.sleep(0.05)
        return meta

    monkeypatch.setattr(ckpt, "read_metadata", slow)


def test_concurrent_updates_lose_nothing(run, monkeypatch):
    _slow_reads(monkeypatch)
    errors = []

    def one(i):
        try:
            ckpt.update_metadata(run, {"thresholds": [{"finding": "A", "threshold": i / 10}]}, reason=f"t{i}")
        except Exception as exc:  # pragma: no cover - shown by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    meta = json.loads((run / "model.json").read_text())
    assert meta["version"] == 7  # every one of the 6 updates became its own version
    assert [h["version"] for h in meta["history"]] == list(range(1, 8))
    assert sorted(h["reason"] for h in meta["history"][1:]) == [f"t{i}" for i in range(6)]
    assert all((run / f"model.v{v}.json").exists() for v in range(1, 7))


def test_thresholds_json_and_model_json_agree_under_concurrency(run, monkeypatch):
    _slow_reads(monkeypatch)

    def one(i):
        rec = [{"finding": "A", "threshold": i / 10}]
        ckpt.update_metadata(
            run,
            {"thresholds": rec},
            reason=f"t{i}",
            companions=lambda v: {"thresholds.json": {"thresholds": rec, "model_version": v}},
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta = json.loads((run / "model.json").read_text())
    thr = json.loads((run / "thresholds.json").read_text())
    assert meta["version"] == 5 and thr["model_version"] == 5
    assert thr["thresholds"] == meta["thresholds"]
    assert not [p.name for p in run.iterdir() if p.name.endswith((".txn", ".tmp")) or p.name == ".transaction.json"]


def test_failure_before_commit_changes_nothing(run, monkeypatch):
    (run / "thresholds.json").write_text('{"model_version": 1}')
    before = {p: (run / p).read_bytes() for p in ("model.json", "thresholds.json")}

    def bad(v):
        return {"thresholds.json": {"x": object()}}  # not JSON: fails while building the transaction

    with pytest.raises(TypeError):
        ckpt.update_metadata(run, {"thresholds": None}, reason="x", companions=bad)
    assert {p: (run / p).read_bytes() for p in before} == before


def test_crash_after_commit_is_rolled_forward(run, monkeypatch):
    import chestxr.core._locking as locking

    real = os.replace
    calls = {"n": 0}

    def crash_on_second_rename(src, dst):
        if str(dst).endswith(("model.json", "thresholds.json")):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("killed mid-commit")
        return real(src, dst)

    monkeypatch.setattr(locking.os, "replace", crash_on_second_rename)
    rec = [{"finding": "A", "threshold": 0.3}]
    with pytest.raises(KeyboardInterrupt):
        ckpt.update_metadata(
            run,
            {"thresholds": rec},
            reason="cal",
            companions=lambda v: {"thresholds.json": {"thresholds": rec, "model_version": v}},
        )
    monkeypatch.setattr(locking.os, "replace", real)
    meta = ckpt.read_metadata(run)  # the reader finishes the committed transaction
    thr = json.loads((run / "thresholds.json").read_text())
    assert meta.version == 2 and thr["model_version"] == 2
    assert thr["thresholds"] == [r.to_dict() for r in meta.thresholds] == rec


def test_busy_run_folder_is_a_clear_error(run, monkeypatch):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",  # holds the lock until the test closes stdin
            str(run / ".lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("CHESTXR_LOCK_TIMEOUT", "0.3")
        t0 = time.monotonic()
        with pytest.raises(RunBusyError, match="run folder is busy"):
            ckpt.update_metadata(run, {"thresholds": None}, reason="x")
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
    assert ckpt.read_metadata(run).version == 1
    ckpt.update_metadata(run, {"thresholds": None}, reason="x")  # free again once the holder is gone
    assert ckpt.read_metadata(run).version == 2
