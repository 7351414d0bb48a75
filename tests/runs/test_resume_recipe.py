"""--resume refuses a changed recipe (issue 18.7): the resolved config and the rows' hashes are
compared with the run's; only the keys listed in chestxr.runs.MAY_CHANGE may differ."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import tiny_config

from chestxr.core import CheckpointError
from chestxr.runs import MAY_CHANGE, train

SESSION = ("train.epochs=2", "train.lr=0.003", "name=session")  # tiny_run's recipe


def test_resume_with_another_preprocessing_size_is_refused(tiny_run_copy, synth_manifest):
    before = (tiny_run_copy / "config.yaml").read_text()
    config = tiny_config(synth_manifest, *SESSION, "train.epochs=3", "preprocessing.size=48")
    with pytest.raises(CheckpointError) as info:
        train(config, out_dir=tiny_run_copy, resume=True, log=lambda s: None)
    msg = str(info.value)
    assert "preprocessing.size (run: 32, now: 48)" in msg and "train.epochs" in msg and "\n" not in msg
    assert (tiny_run_copy / "config.yaml").read_text() == before  # not rewritten


def test_resume_with_another_manifest_is_refused(tiny_run_copy, synth_manifest, tmp_path):
    frame = pd.read_csv(synth_manifest, dtype=str, keep_default_na=False)
    frame["path"] = [str(synth_manifest.parent / p) for p in frame["path"]]
    frame = frame.drop(index=frame.index[frame["split"] == "train"][:5])  # five training images fewer
    other = tmp_path / "other.csv"
    frame.to_csv(other, index=False)
    config = tiny_config(other, *SESSION, "train.epochs=3")
    with pytest.raises(CheckpointError, match="the train rows of data.manifest"):
        train(config, out_dir=tiny_run_copy, resume=True, log=lambda s: None)


def test_resume_with_more_epochs_and_moved_manifest_goes_on(tiny_run_copy, synth_manifest, tmp_path):
    moved = tmp_path / "data"
    shutil.copytree(synth_manifest.parent, moved)
    config = tiny_config(moved / synth_manifest.name, *SESSION, "train.epochs=3", "train.threads=1")
    lines = []
    train(config, out_dir=tiny_run_copy, resume=True, log=lines.append)
    assert any("resuming" in line and "epoch 3/3" in line for line in lines)
    assert len(pd.read_csv(tiny_run_copy / "metrics.csv")) == 3
    assert "epochs: 3" in (tiny_run_copy / "config.yaml").read_text()


def test_may_change_is_documented():
    import chestxr.runs._resume as resume

    for key in MAY_CHANGE:
        assert f"``{key}``" in resume.__doc__
    readme = (__import__("pathlib").Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "train.epochs" in readme and "--resume" in readme and "MAY_CHANGE" not in readme
