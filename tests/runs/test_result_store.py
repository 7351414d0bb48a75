"""The pieces of --engine ray that need no Ray: the job hashes, the keyed result store, a run shipped as
bytes, and the one-line error when Ray is not installed."""

from __future__ import annotations

import dataclasses
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from chestxr.runs import Run
from chestxr.runs._packed_run import load_packed, pack_run
from chestxr.runs._result_store import ResultStore, model_sha256, result_key, thresholds_sha256


@pytest.fixture(scope="module")
def run(tiny_run) -> Run:
    return Run.load(tiny_run, device="cpu")


def _hashes(meta, weights="w" * 64, abstain=False):
    return model_sha256(meta, weights_sha256=weights), thresholds_sha256(meta, abstain=abstain)


def test_model_hash_follows_what_changes_probabilities(run):
    meta = run.metadata
    m0, t0 = _hashes(meta)
    assert _hashes(meta) == (m0, t0)  # deterministic
    assert _hashes(meta, weights="x" * 64)[0] != m0
    pre = dataclasses.replace(meta.preprocessing, size=meta.preprocessing.size + 1)
    assert _hashes(dataclasses.replace(meta, preprocessing=pre))[0] != m0
    assert _hashes(dataclasses.replace(meta, probability_calibration={"method": "temperature", "t": [2.0]}))[0] != m0
    # names, dates and approvals do not change a probability, nor do thresholds
    assert _hashes(dataclasses.replace(meta, created="2001-01-01", approval={"reviewer": "x"}))[0] == m0


def test_thresholds_hash_follows_the_calls(run):
    from chestxr.evaluation import OperatingPoint

    meta = run.metadata
    m0, t0 = _hashes(meta)
    recs = [OperatingPoint(f, threshold=0.3) for f in meta.findings]
    m1, t1 = _hashes(dataclasses.replace(meta, thresholds=recs))
    assert m1 == m0 and t1 != t0
    recs[0] = OperatingPoint(meta.findings[0])  # threshold NaN: not calibrated, calls nothing
    assert _hashes(dataclasses.replace(meta, thresholds=recs))[1] not in (t0, t1)
    assert _hashes(meta, abstain=True)[1] != t0


def _rows(shas, findings, status="ok"):
    out = pd.DataFrame({"image_sha256": shas, "status": status, "reason": ""})
    for j, f in enumerate(findings):
        out[f"prob_{f}"] = np.linspace(0, 1, len(shas)) * (j + 1) / len(findings)
    for f in findings:
        out[f"call_{f}"] = "negative"
    return out


def test_store_appends_each_image_once_and_survives_a_damaged_part(tmp_path):
    findings = ["A", "B"]
    store = ResultStore(tmp_path, model_sha="m" * 64, thresholds_sha="t" * 64, findings=findings)
    assert store.load().empty
    assert store.append(_rows(["a", "b", "b"], findings)) == 2  # a duplicate within one batch
    assert store.append(_rows(["b", "c"], findings)) == 1  # "b" is already held
    assert store.append(_rows(["a"], findings)) == 0
    assert len(store.parts()) == 2
    again = ResultStore(tmp_path, model_sha="m" * 64, thresholds_sha="t" * 64, findings=findings)
    held = again.load()
    assert sorted(held["image_sha256"]) == ["a", "b", "c"]
    assert held.loc["c", "key"] == result_key("c", "m" * 64, "t" * 64)
    assert list(again.holds(["a", "x"])) == [True, False]
    # another model's rows live in another partition
    other = ResultStore(tmp_path, model_sha="n" * 64, thresholds_sha="t" * 64, findings=findings)
    assert other.load().empty
    # a part damaged on disk is reported and ignored: its images are scored again, nothing else is lost
    damaged = again.parts()[0]
    damaged.write_bytes(b"PAR1 not really")
    with pytest.warns(UserWarning, match="unreadable result part ignored"):
        left = ResultStore(tmp_path, model_sha="m" * 64, thresholds_sha="t" * 64, findings=findings).load()
    assert 0 < len(left) < 3


def test_store_rows_carry_no_path(tmp_path):
    store = ResultStore(tmp_path, model_sha="m" * 64, thresholds_sha="t" * 64, findings=["A"])
    store.append(_rows(["a"], ["A"]))
    frame = pd.read_parquet(store.parts()[0])
    assert not [c for c in frame.columns if "path" in c or "patient" in c or "study" in c]


def test_packed_run_scores_like_the_folder(run, tiny_run, synth_manifest, tmp_path):
    packed = pack_run(tiny_run)
    assert {name for name, _ in packed.files} == {"model.json", "model.safetensors"}  # never the patient key
    shipped = load_packed(packed, device="cpu")
    assert load_packed(packed, device="cpu") is shipped  # loaded once per process
    paths = pd.read_csv(synth_manifest)["path"].map(lambda p: str(synth_manifest.parent / p)).tolist()[:6]
    assert np.array_equal(shipped.scores(paths), run.scores(paths))
    # weights that do not match model.json are refused, as Run.load refuses them
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    from chestxr.core import CheckpointError

    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_packed(pack_run(copy), device="cpu")


def test_without_ray_one_clear_error(monkeypatch):
    from chestxr.runs._ray_predict import RayUnavailableError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError, match=r"pip install 'chestxr\[ray\]'"):
        import_ray()


def test_import_chestxr_does_not_import_ray():
    import subprocess

    code = "import chestxr, chestxr.runs._ray_predict, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
