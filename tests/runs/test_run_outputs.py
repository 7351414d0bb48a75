"""evaluate/predict outputs end to end: complete or absent, never a run folder, stale files gone,
OSError as one line, files readable by the umask's group (issues 17.7, 18.5, 18.11)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_args

from chestxr.cli import main

TINY = tiny_args()
INF = ["--workers", "0", "--bootstrap", "20"]


@pytest.fixture(scope="module")
def synth(synth_manifest) -> Path:
    """The session's synthetic manifest (tests/conftest.py)."""
    return synth_manifest


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The session's tiny trained run (tests/conftest.py); read-only."""
    return tiny_run


def evaluate(run_dir, synth, out, *extra) -> int:
    return main(
        [
            "evaluate",
            "--checkpoint",
            str(run_dir),
            "--manifest",
            str(synth),
            "--out",
            str(out),
            "--split",
            "test",
            *INF,
            *extra,
        ]
    )


def test_evaluate_refuses_the_run_folder(run_dir, synth, capsys):
    before = (run_dir / "metrics.csv").read_bytes()
    assert evaluate(run_dir, synth, run_dir, "--overwrite") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "run folder" in errors[0] and "Traceback" not in err
    assert (run_dir / "metrics.csv").read_bytes() == before  # the training metrics are kept


def test_failed_overwrite_keeps_previous_complete_result(run_dir, synth, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    assert evaluate(run_dir, synth, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "report.html" in before

    import chestxr.reporting._report as report

    def boom(path, text, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_text_atomic", boom)  # report.html is written last
    assert evaluate(run_dir, synth, out, "--overwrite") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(out) in errors[0]
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary folder left


def test_full_disk_leaves_no_partial_folder(run_dir, synth, tmp_path, monkeypatch, capsys):
    import chestxr.reporting._report as report

    def boom(path, text, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_text_atomic", boom)
    out = tmp_path / "eval"
    assert evaluate(run_dir, synth, out) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()  # no valid-looking metrics.json/predictions.csv without report.html
    assert list(tmp_path.iterdir()) == []


def test_uncreatable_out_exit_2(run_dir, synth, capsys):
    assert evaluate(run_dir, synth, "/proc/chestxr-x") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "/proc/chestxr-x" in errors[0] and "Traceback" not in err


def test_predict_rerun_drops_stale_skipped_csv(run_dir, synth, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    src = sorted((synth.parent / "images").glob("*.png"))[:2]
    for p in src:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", str(images)]
    assert main([*args, "--on-bad-image", "skip"]) == 0
    assert (out / "skipped.csv").exists()
    (images / "broken.png").unlink()
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "skipped.csv").exists()
    assert len(pd.read_csv(out / "predictions.csv")) == 2


def test_outputs_honour_umask(run_dir, synth, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "eval"
        assert evaluate(run_dir, synth, out) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name
    for p in [run_dir / "model.json", run_dir / "last"]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044, p  # readable by the group/others the umask allows


def test_monai_bundle_folder_honours_umask(run_dir, tmp_path):
    pytest.importorskip("monai")
    old = os.umask(0o022)
    try:
        out = tmp_path / "bundle"
        assert main(["export", "--checkpoint", str(run_dir), "--format", "monai-bundle", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # mkdtemp alone made the bundle folder 0700
