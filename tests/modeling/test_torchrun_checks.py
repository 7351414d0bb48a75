"""What a torchrun restart does with the run folder, and the rank-agreement digests (without processes:
tests/modeling/test_torchrun_elastic.py runs the real thing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import chestxr.modeling._distributed as distributed
from chestxr.core import TrainingError
from chestxr.modeling import DistInfo, check_ranks_agree, decode_digest, split_digest
from chestxr.runs import ElasticPlan, elastic_plan, remove_marker, write_marker
from chestxr.runs._folder import ELASTIC_MARKER as MARKER


@pytest.fixture
def restarted(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")


def test_first_attempt_keeps_the_usual_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert elastic_plan(tmp_path, resume=False, overwrite=False) == ElasticPlan(False, False)


def test_restart_resumes_its_own_folder_only(tmp_path, restarted, monkeypatch):
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "state.json").write_text("{}")
    # a folder this job did not create (no marker, or another job's) keeps the usual rules
    assert elastic_plan(tmp_path, resume=False, overwrite=False) == ElasticPlan(False, False)
    (tmp_path / MARKER).write_text(json.dumps({"run_id": "job-0"}))
    assert elastic_plan(tmp_path, resume=False, overwrite=False) == ElasticPlan(False, False)
    write_marker(tmp_path)
    plan = elastic_plan(tmp_path, resume=False, overwrite=False)
    assert (plan.resume, plan.overwrite) == (True, False) and "resuming" in plan.note
    (tmp_path / "last" / "state.json").unlink()  # died before the first epoch ended: start over in it
    plan = elastic_plan(tmp_path, resume=False, overwrite=False)
    assert (plan.resume, plan.overwrite) == (False, True) and "starting" in plan.note
    remove_marker(tmp_path)  # training ended: the next job's restart cannot take the folder
    assert elastic_plan(tmp_path, resume=False, overwrite=False) == ElasticPlan(False, False)


def test_split_digest_sees_another_split(synth_manifest, tmp_path):
    from conftest import tiny_config

    from chestxr.data import load_training_splits

    def digest(*extra):
        s = load_training_splits(tiny_config(synth_manifest, *extra))
        return split_digest(s["train"], s["val"])

    assert digest() == digest()
    frame = __import__("pandas").read_csv(synth_manifest)
    moved = frame.copy()
    first_train = moved.index[moved["split"] == "train"][0]
    moved.loc[moved["patient_id"] == moved.loc[first_train, "patient_id"], "split"] = "val"  # one patient moves
    other = synth_manifest.parent / "moved.csv"
    moved.to_csv(other, index=False)
    s = load_training_splits(tiny_config(other))
    assert split_digest(s["train"], s["val"]) != digest()


def test_decode_digest_sees_a_stale_cache_entry(synth_manifest, tmp_path):
    from conftest import tiny_config

    from chestxr.imaging import ImageCache, ReadOptions

    pre = tiny_config(synth_manifest).preprocessing
    paths = [str(synth_manifest.parent / p) for p in __import__("pandas").read_csv(synth_manifest)["path"][:4]]
    fresh = decode_digest(paths, pre, cache_dir=None)
    assert decode_digest(paths, pre, cache_dir=str(tmp_path / "c1")) != fresh  # cached: another setting
    a = decode_digest(paths, pre, cache_dir=str(tmp_path / "c1"))
    assert decode_digest(paths, pre, cache_dir=str(tmp_path / "c2")) == a  # two caches, same pixels
    cache = ImageCache(tmp_path / "c2", options=ReadOptions.from_config(pre), side=pre.cache_size)
    entry = cache.path_for(paths[1])
    q = np.load(entry)
    np.save(entry, np.ascontiguousarray(q[::-1]))  # a stale/corrupt entry on one node
    assert decode_digest(paths, pre, cache_dir=str(tmp_path / "c2")) != a


def test_disagreeing_rank_is_named(monkeypatch):
    gathered = [{"split": "a", "decode": "x"}, {"split": "a", "decode": "x"}, {"split": "b", "decode": "x"}]
    monkeypatch.setattr(distributed, "all_gather_objects", lambda obj, info: gathered)
    with pytest.raises(TrainingError, match=r"patient split of rank\(s\) \[2\] differs from rank 0's"):
        check_ranks_agree(DistInfo(rank=0, world=3), gathered[0])
    gathered[2] = dict(gathered[0])
    assert check_ranks_agree(DistInfo(rank=0, world=3), gathered[0]) == gathered[0]
