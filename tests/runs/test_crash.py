"""Crash safety: a training process killed with SIGKILL mid-epoch continues with --resume from its last
complete checkpoint and ends exactly where an uninterrupted run ends (same metrics, identical weights);
existing output folders are never overwritten without --overwrite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_args
from safetensors.torch import load_file

from chestxr.cli import main

ARGS = tiny_args("train.epochs=6", "train.lr=0.003")
COMPARED = ["epoch", "train_loss", "val_loss", "val_mean_auroc", "lr"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("crash") / "data", n_images=40, seed=3, size=48, with_split=True
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(synth, tmp_path):
    env = {**os.environ, "CHESTXR_NO_PROGRESS": "1"}
    crashed = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "chestxr", "train", "--manifest", str(synth), "--out", str(crashed), *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (crashed / "last" / "state.json").exists():  # the first epoch is complete
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # last/ is the commit point; metrics.csv is written after it, so at the kill it may still lack the epoch
    # last/ holds (or not exist yet). It never claims an epoch last/ does not hold.
    # (a kill between the two renames of a later save leaves that state aside as .last.old-PID: --resume uses it)
    state = [p for p in [crashed / "last", *crashed.glob(".last.old-*")] if (p / "state.json").exists()][0]
    saved = json.loads((state / "state.json").read_text())["epoch"] + 1
    assert 1 <= saved < 6, "the kill came after the end of training"
    rows = len(pd.read_csv(crashed / "metrics.csv")) if (crashed / "metrics.csv").exists() else 0
    assert saved - 1 <= rows <= saved

    # the rerun refuses the existing folder without --resume/--overwrite, then resumes
    assert main(["train", "--manifest", str(synth), "--out", str(crashed), *ARGS]) == 2
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {crashed} at epoch {saved + 1}/6" in resumed.stdout
    assert "Traceback" not in resumed.stderr

    reference = tmp_path / "reference"
    assert main(["train", "--manifest", str(synth), "--out", str(reference), *ARGS]) == 0
    a = pd.read_csv(reference / "metrics.csv")
    b = pd.read_csv(crashed / "metrics.csv")
    assert list(b["epoch"]) == [1, 2, 3, 4, 5, 6]
    cols = COMPARED + [c for c in a.columns if c.startswith("val_auroc_")]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    wa, wb = load_file(str(reference / "model.safetensors")), load_file(str(crashed / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la = load_file(str(reference / "last" / "state.safetensors"))
    lb = load_file(str(crashed / "last" / "state.safetensors"))
    assert all(torch.equal(la[k], lb[k]) for k in la if k.startswith("model."))


# ----------------------------------------------------------------------------- never overwrite silently


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The session's tiny trained run (tests/conftest.py); read-only."""
    return tiny_run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def occupied(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.txt").write_text("earlier results\n")
    return out


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "demo"])
def test_existing_output_needs_overwrite(command, synth, run_dir, tmp_path, capsys):
    out = occupied(tmp_path)
    argv = {
        "train": ["train", "--manifest", str(synth), "--out", str(out), *ARGS, "--set", "train.epochs=1"],
        "evaluate": [
            "evaluate",
            "--checkpoint",
            str(run_dir),
            "--manifest",
            str(synth),
            "--split",
            "test",
            "--out",
            str(out),
            "--workers",
            "0",
            "--bootstrap",
            "10",
        ],
        "predict": [
            "predict",
            "--checkpoint",
            str(run_dir),
            "--manifest",
            str(synth),
            "--out",
            str(out),
            "--workers",
            "0",
        ],
        "demo": ["demo", "--out", str(out), "--images", "24", "--epochs", "1", "--bootstrap", "10"],
    }[command]
    before, run_before = snapshot(out), snapshot(run_dir)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert f"chestxr {command}: error: {out}" in err and "--overwrite" in err and "Traceback" not in err
    assert snapshot(out) == before and snapshot(run_dir) == run_before
    if command in ("evaluate", "predict"):  # with --overwrite it goes ahead
        assert main([*argv, "--overwrite"]) == 0
        assert (out / "predictions.csv").exists()


def test_out_is_a_file_is_refused(synth, run_dir, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me\n")
    code = main(
        [
            "predict",
            "--checkpoint",
            str(run_dir),
            "--manifest",
            str(synth),
            "--out",
            str(target),
            "--workers",
            "0",
            "--overwrite",
        ]
    )
    assert code == 2 and "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"
