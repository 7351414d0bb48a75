"""A Run never goes stale (issue 21.2): calibrate_run and approve_run update the Run they are given, a change
written by another process is picked up before the next workflow, and export takes a Run."""

from __future__ import annotations

import json
import warnings

import numpy as np

from chestxr import Run, approve_run, calibrate_run, evaluate_run, export_model
from chestxr.imaging import IN_PROCESS
from chestxr.runs import read_thresholds, update_metadata


def _thresholds_of(folder) -> list:
    return json.loads((folder / "metrics.json").read_text())["thresholds"]


def test_calibrate_then_evaluate_the_same_object_uses_the_new_thresholds(tiny_run_copy, synth_manifest, tmp_path):
    run = Run.load(tiny_run_copy, device="cpu")
    assert not run.calibrated and run.thresholds.tolist() == [0.5] * 4
    before = evaluate_run(run, synth_manifest, tmp_path / "before", split="test", n_boot=20, loading=IN_PROCESS)
    with warnings.catch_warnings():  # the tiny split is small: undefined intervals are warned about
        warnings.simplefilter("ignore")
        result = calibrate_run(run, synth_manifest, split="val", method="f1", n_boot=20, loading=IN_PROCESS)
    stored = read_thresholds(tiny_run_copy)
    assert stored is not None and stored.model_version == result.model_version == run.metadata.version
    new = np.array([p.threshold for p in result.thresholds])
    np.testing.assert_array_equal(run.thresholds, new)  # the object the user holds, not only the folder
    np.testing.assert_array_equal(Run.load(tiny_run_copy, device="cpu").thresholds, new)
    after = evaluate_run(run, synth_manifest, tmp_path / "after", split="test", n_boot=20, loading=IN_PROCESS)
    got = [t if t is not None else np.nan for t in after.metrics["thresholds"].values()]
    np.testing.assert_array_equal(got, new)
    assert list(before.metrics["thresholds"].values()) == [0.5] * 4 and after.metrics["model_info"]["calibrated"]
    assert after.metrics["model_info"]["model_version"] == run.metadata.version


def test_a_change_by_another_process_is_read_before_the_next_workflow(tiny_run_copy, synth_manifest, tmp_path):
    from chestxr.evaluation import OperatingPoint

    run = Run.load(tiny_run_copy, device="cpu")
    points = [OperatingPoint(f, method="fixed:0.25", threshold=0.25) for f in run.findings]
    update_metadata(tiny_run_copy, {"thresholds": points}, reason="another process calibrates")  # not via `run`
    assert run.metadata.thresholds is None  # the object has not looked yet ...
    out = evaluate_run(run, synth_manifest, tmp_path / "ev", split="test", n_boot=20, loading=IN_PROCESS)
    assert list(out.metrics["thresholds"].values()) == [0.25] * 4  # ... every workflow looks first
    assert run.thresholds.tolist() == [0.25] * 4 and run.calibrated


def test_approve_updates_the_run_and_export_takes_it(tiny_run_copy, synth_manifest, tmp_path):
    run = Run.load(tiny_run_copy, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrate_run(run, synth_manifest, split="val", n_boot=20, loading=IN_PROCESS)
    record = approve_run(run, reviewer="Dr R")
    assert run.metadata.approval == record and run.metadata.approval.reviewer == "Dr R"
    out = export_model(run, tmp_path / "model.pt")
    side = json.loads((tmp_path / "model.pt.json").read_text())
    assert out.exists() and side["source"]["metadata_version"] == run.metadata.version
    assert side["probability_thresholds"] == [t if t == t else None for t in run.thresholds.tolist()]
