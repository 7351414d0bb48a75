"""Progress output: tqdm bars on a terminal; on a non-terminal (CI, nohup, a log file) no carriage
returns, one plain line per epoch and per stage with the same numbers; ``--quiet`` prints results only."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_args

from chestxr.core import Progress, progress_mode

REPO = Path(__file__).resolve().parents[2]
SMALL = tiny_args("train.epochs=2", "train.batch_size=8")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_images=24, seed=3, size=48)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mode_follows_the_stream_and_the_environment(monkeypatch):
    monkeypatch.delenv("CHESTXR_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CHESTXR_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress_mode() == "bar"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_mode() == "lines"
    monkeypatch.setenv("CHESTXR_QUIET", "1")
    assert progress_mode() == "quiet"


def test_bar_on_a_terminal_one_line_elsewhere(monkeypatch):
    monkeypatch.delenv("CHESTXR_NO_PROGRESS", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with Progress(3, "predict") as p:
        for _ in range(3):
            p.update(1, items=16)
    assert "\r" in term.getvalue() and "predict" in term.getvalue()

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with Progress(3, "predict") as p:
        for _ in range(3):
            p.update(1, items=16, loss="0.5000")
    text = log.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert re.fullmatch(r"predict: 3 batches, 48 images in \d+\.\d s, \d+\.\d img/s  loss 0\.5000\n", text), text


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CHESTXR_NO_PROGRESS", "CHESTXR_QUIET")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    # stdout and stderr are pipes: a non-terminal, as under CI or nohup
    return subprocess.run([sys.executable, "-m", "chestxr", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_log_file_gets_plain_lines_and_quiet_gets_results_only(synth, tmp_path):
    out = _cli(["train", "--manifest", str(synth), "--out", "run", *SMALL], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr
    epochs = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    assert "val:" not in out.stderr  # validation is in the epoch line, not a stage line of its own
    assert re.match(r"epoch 1/2: loss \d\.\d{4}  val loss \d\.\d{4}  val mean AUROC [\d.]+  [\d.]+ img/s", epochs[0])
    assert out.stdout.splitlines()[-1] == "run folder: run"

    cal = _cli(
        ["calibrate", "--checkpoint", "run", "--manifest", "run/splits.csv", "--split", "val", "--bootstrap", "20"],
        tmp_path,
    )
    assert cal.returncode == 0, cal.stderr
    assert "\r" not in cal.stderr
    assert re.search(r"^predict: \d+ batch(es)?, \d+ images in [\d.]+ s, [\d.]+ img/s$", cal.stderr, re.M), cal.stderr

    quiet = _cli(["train", "--manifest", str(synth), "--out", "run2", *SMALL, "--quiet"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == ["run folder: run2"]
    assert "\r" not in quiet.stderr and "epoch" not in quiet.stderr
    also = _cli(["--quiet", "train", "--manifest", str(synth), "--out", "run3", *SMALL], tmp_path)
    assert also.stdout.splitlines() == ["run folder: run3"]
