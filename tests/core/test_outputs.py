"""Output folders are complete or absent (staged under a temporary name, swapped in when complete),
files honour the umask, and OSError becomes one line naming the path (issues 17.7, 18.5, 18.11)."""

from __future__ import annotations

import os
import stat

import pytest

from chestxr.core import OutputExistsError, OutputWriteError, make_temp_dir, staged_output_dir, write_text_atomic


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_honours_umask(tmp_path, umask022):
    p = tmp_path / "report.html"
    write_text_atomic(p, "x")
    assert _mode(p) == 0o644
    os.umask(0o027)
    write_text_atomic(p, "y")
    assert _mode(p) == 0o640


def test_secret_file_stays_private(tmp_path, umask022):
    p = tmp_path / "salt.key"
    write_text_atomic(p, "secret", secret=True)
    assert _mode(p) == 0o600


def test_temp_dir_honours_umask(tmp_path, umask022):
    d = make_temp_dir(tmp_path, prefix=".x.tmp-")
    assert _mode(d) == 0o755


def test_staged_dir_replaces_only_when_complete(tmp_path, umask022):
    out = tmp_path / "out"
    with staged_output_dir(out) as tmp:
        assert tmp != out and not out.exists()
        (tmp / "report.html").write_text("v1")
        (tmp / "skipped.csv").write_text("stale")
    assert (out / "report.html").read_text() == "v1"
    assert _mode(out) == 0o755
    # a failed rerun leaves the previous complete result, and no temporary folder
    with pytest.raises(RuntimeError):
        with staged_output_dir(out, overwrite=True) as tmp:
            (tmp / "report.html").write_text("half")
            raise RuntimeError("crash while writing")
    assert (out / "report.html").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a clean rerun does not keep files of the previous result (no stale skipped.csv)
    with staged_output_dir(out, overwrite=True) as tmp:
        (tmp / "report.html").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    assert (out / "report.html").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_refuses_existing_results_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with staged_output_dir(out) as tmp:  # an empty folder is fine
        (tmp / "a").write_text("1")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with staged_output_dir(out):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        with staged_output_dir(tmp_path / "file", overwrite=True):
            pass


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_staged_dir_refuses_a_run_folder(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("{}")
    (run / "metrics.csv").write_text("training metrics")
    from chestxr.runs import refuse_run_folder  # how evaluate/predict/export call it: a run folder is never --out

    with pytest.raises(OutputExistsError, match="run folder"):
        with staged_output_dir(run, overwrite=True, refuse=refuse_run_folder):
            pass
    assert (run / "metrics.csv").read_text() == "training metrics"


def test_uncreatable_out_is_one_line(tmp_path):
    with pytest.raises(OutputWriteError) as info:
        with staged_output_dir("/proc/chestxr-x/out"):
            pass
    msg = str(info.value)
    assert "/proc/chestxr-x/out" in msg and "\n" not in msg and "--out" in msg


def test_oserror_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"

    with pytest.raises(OutputWriteError) as info:
        with staged_output_dir(out) as tmp:
            (tmp / "metrics.csv").write_text("x")
            raise OSError(28, "No space left on device", str(tmp / "report.html"))
    msg = str(info.value)
    assert "No space left on device" in msg and str(out) in msg and "\n" not in msg
    assert ".tmp" not in msg  # names the output folder the user asked for, not the staging name
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_parent_is_one_line(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(OutputWriteError, match="Permission denied"):
            with staged_output_dir(parent / "out"):
                pass
    finally:
        parent.chmod(0o700)
