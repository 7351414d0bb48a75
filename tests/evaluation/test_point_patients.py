"""A point rule's "moved?" check counts patients (issue 22 point 4, the gap of the image-level test).

The calibration record stores a per-patient tally (``OperatingPoint.patient_tally``: counts only), and
``evaluate`` compares calibration and test by a permutation test of per-patient success fractions whenever
either side has several images per patient. Analytic truth: in the simulation below the operating point does
NOT move (calibration and test patients are drawn from one population at one fixed threshold), so every
rejection is a false alarm; a valid test rejects at most alpha of the time. The image-level exact test, which
treats a patient's correlated images as independent, rejects far more often in the same simulation: that is
why the change matters.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from chestxr.cli import main
from chestxr.evaluation import OperatingPoint, PatientTally, check_promise, finding_counts, fit_thresholds
from chestxr.evaluation._patient_bounds import binary_fractions, patient_counts, patient_tally, tally_fractions
from chestxr.evaluation._promise_checks import two_sample_test

ALPHA = 0.05
REPS = 600
PATIENTS = 80  # per split
RHO = 0.7  # within-patient correlation of the latent score (a patient-level random effect)
CAP = 20  # images per patient: P(m >= j) = 1/j, capped (uneven: half the patients have one image)


def _split(rng: np.random.Generator, k: int, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """k patients' images of one class at a fixed threshold: (success (n,) bool, patient id (n,))."""
    m = np.minimum(np.floor(1.0 / rng.random(k)), CAP).astype(int)
    g = np.repeat(np.arange(k), m)
    z = math.sqrt(RHO) * rng.standard_normal(k)[g] + math.sqrt(1 - RHO) * rng.standard_normal(g.size)
    return z > cut, g


def _fractions(ok: np.ndarray, g: np.ndarray) -> np.ndarray:
    c = patient_counts(ok, g)
    return tally_fractions(c.tally) if c.tally is not None else binary_fractions(c.image_successes, c.k)


def _rates(cut_test: float, reps: int, seed: int) -> tuple[float, float]:
    """(patient-level permutation rejection rate, image-level exact rejection rate) at alpha."""
    rng = np.random.default_rng(seed)
    new = old = 0
    for r in range(reps):
        a, ga = _split(rng, PATIENTS, -0.84)  # success rate P(z > -0.84) = 0.80
        b, gb = _split(rng, PATIENTS, cut_test)
        p = two_sample_test(
            0, 0, 0, 0, fractions_1=_fractions(a, ga), fractions_2=_fractions(b, gb), seed=r, n_perm=999
        )
        new += p.p_value <= ALPHA
        old += two_sample_test(int(a.sum()), a.size, int(b.sum()), b.size).p_value <= ALPHA
    return new / reps, old / reps


def test_patient_level_test_keeps_its_false_alarm_rate_where_the_image_level_test_does_not():
    t0 = time.perf_counter()
    new, old = _rates(-0.84, REPS, seed=22)  # the operating point does not move
    wall = time.perf_counter() - t0
    se = math.sqrt(ALPHA * (1 - ALPHA) / REPS)
    print(f"false 'moved' rate: patients {new:.3f}, images {old:.3f} (MC s.e. {se:.4f}, {REPS} reps, {wall:.1f} s)")
    assert new <= ALPHA + 2 * se, (new, se)
    # the image-level test counts a patient's 20 agreeing images as 20 observations: far above alpha
    assert old > ALPHA + 2 * se and old > 3 * ALPHA, old


def test_patient_level_test_detects_a_real_move():
    new, _ = _rates(0.0, 200, seed=7)  # test success rate 0.50 against 0.80 at calibration
    assert new >= 0.8, new


def test_tally_is_counts_only_and_expands_to_the_fractions():
    ok = np.array([1, 1, 0, 1, 0, 0, 1], bool)
    g = np.array(["p1", "p1", "p1", "p2", "p3", "p3", "p4"])
    tally = patient_tally(ok, g)
    assert tally == ((0, 2, 1), (1, 1, 2), (2, 3, 1))  # p3 0/2; p2 and p4 1/1; p1 2/3
    assert sorted(tally_fractions(tally).tolist()) == pytest.approx([0.0, 2 / 3, 1.0, 1.0])
    assert patient_tally(ok, np.arange(7)) is None and patient_tally(ok, None) is None  # one image each


def _clustered(seed: int = 3, k: int = 60):
    rng = np.random.default_rng(seed)
    m = rng.integers(1, 6, k)
    g = np.repeat([f"P{i:03d}" for i in range(k)], m)
    y = np.repeat(rng.random(k) < 0.4, m)
    s = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * np.repeat(rng.standard_normal(k), m) * 0.5, 0, 1)
    s = np.clip(s + 0.1 * rng.standard_normal(g.size), 0, 1)
    return y, s, g


def test_calibration_stores_the_tally_and_it_round_trips():
    y, s, g = _clustered()
    (op,) = fit_thresholds(y[:, None], s[:, None], method="youden", findings=["Effusion"], groups=g)
    assert op.patient_tally is not None and op.patient_tally.positives and op.patient_tally.negatives
    pos = op.patient_tally.positives
    assert sum(k * c for k, _, c in pos) == op.tp and sum(m * c for _, m, c in pos) == op.tp + op.fn
    neg = op.patient_tally.negatives
    assert neg is not None and sum(k * c for k, _, c in neg) == op.tn
    d = json.loads(json.dumps(op.to_dict()))
    assert "P0" not in json.dumps(d["patient_tally"])  # counts, never an identifier
    assert OperatingPoint.from_dict(d) == op and OperatingPoint.from_dict(d).to_dict() == d
    (single,) = fit_thresholds(y[:, None], s[:, None], method="youden", findings=["Effusion"])  # no ids
    assert single.patient_tally is None and "patient_tally" not in single.to_dict()


def test_an_old_record_without_the_tally_loads_and_keeps_the_image_level_test_with_its_caveat():
    y, s, g = _clustered()
    (op,) = fit_thresholds(y[:, None], s[:, None], method="youden", findings=["Effusion"], groups=g)
    old = op.to_dict()
    del old["patient_tally"]
    legacy = OperatingPoint.from_dict(old)
    assert legacy.patient_tally is None and legacy.to_dict() == old  # written back as it was
    achieved = {"tp": 30, "fn": 10, "tn": 50, "fp": 10, "sensitivity": 0.75, "specificity": 50 / 60}
    counts = finding_counts(y, s >= op.threshold, g)
    rec = check_promise(achieved, legacy, counts=counts, with_ids=True)
    assert rec is not None and all("exact test" in t["test"] and t["unit_kind"] == "images" for t in rec["tests"])
    assert "no per-patient tally" in rec["detail"]
    new = check_promise(achieved, op, counts=counts, with_ids=True)
    assert new is not None and all(t["unit_kind"] == "patients" for t in new["tests"])
    assert all("permutation" in t["test"] for t in new["tests"]) and "patients as the unit" in new["detail"]
    again = check_promise(achieved, op, counts=counts, with_ids=True)
    assert again is not None and [t["p_value"] for t in again["tests"]] == [t["p_value"] for t in new["tests"]]


def test_one_image_per_patient_on_both_sides_keeps_the_exact_test():
    op = OperatingPoint("X", method="youden", threshold=0.5, sensitivity=0.8, specificity=0.9, tp=16, fn=4, tn=45,
                        fp=5, patient_tally=PatientTally(positives=((1, 2, 1), (2, 2, 3)), negatives=None))  # fmt: skip
    y = np.array([1] * 10 + [0] * 10, bool)
    called = np.array([1] * 7 + [0] * 3 + [0] * 9 + [1], bool)
    counts = finding_counts(y, called, np.arange(20))  # one image per test patient
    achieved = {"tp": 7, "fn": 3, "tn": 9, "fp": 1, "sensitivity": 0.7, "specificity": 0.9}
    rec = check_promise(achieved, op, counts=counts, with_ids=True)
    assert rec is not None
    sens, spec = rec["tests"]
    assert "permutation" in sens["test"] and sens["calibration_patients"] == 4  # calibration side clustered
    assert "exact test" in spec["test"] and spec["unit_kind"] == "patients"  # one image each on both


def _calibrate(run, manifest):
    args = ["calibrate", "--checkpoint", str(run), "--manifest", str(manifest), "--split", "val"]
    assert main([*args, "--method", "youden", "--bootstrap", "20", "--workers", "0"]) == 0


def test_the_tally_is_bound_by_the_approval_and_an_old_record_binds_as_before(tiny_run_copy, synth_manifest, capsys):
    from chestxr.runs import approval_status
    from chestxr.runs._approval import _thresholds_part, read_metadata

    run = tiny_run_copy
    _calibrate(run, synth_manifest)
    path = run / "model.json"
    meta = json.loads(path.read_text())
    assert any(r.get("patient_tally") for r in meta["thresholds"])  # the synthetic patients have several images
    tallies = {r["finding"]: r.get("patient_tally") for r in meta["thresholds"]}
    for r in meta["thresholds"]:  # an older record: no tally
        r.pop("patient_tally", None)
    path.write_text(json.dumps(meta, indent=1))
    part = _thresholds_part(read_metadata(run))
    assert set(part) <= {"records", "decision", "guarantees"} and "patient_tallies" not in part  # as before
    assert main(["approve", str(run), "--reviewer", "Dr A"]) == 0
    assert approval_status(run).state == "approved"

    def put_back(change=None):
        meta = json.loads(path.read_text())  # with the approval record
        for r in meta["thresholds"]:
            if tallies[r["finding"]] is not None:
                r["patient_tally"] = json.loads(json.dumps(tallies[r["finding"]]))
                if change:
                    change(r["patient_tally"])
        path.write_text(json.dumps(meta, indent=1))

    put_back()  # the tally appears: a different record, bound
    status = approval_status(run)
    assert status.state == "void" and "thresholds" in status.changed, status
    assert main(["approve", str(run), "--reviewer", "Dr A"]) == 0
    assert approval_status(run).state == "approved"

    def one_more(t):  # one more patient in the tally
        side = "positives" if t["positives"] else "negatives"
        t[side][0][2] += 1

    put_back(one_more)
    assert approval_status(run).state == "void"
    capsys.readouterr()


def test_evaluate_says_patients_for_a_point_rule_on_clustered_data(tiny_run_copy, synth_manifest, tmp_path, capsys):
    run = tiny_run_copy
    _calibrate(run, synth_manifest)
    ev = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(run), "--manifest", str(synth_manifest), "--split", "test"]
    assert main([*args, "--out", str(ev), "--bootstrap", "10", "--workers", "0"]) == 0
    capsys.readouterr()
    metrics = json.loads((ev / "metrics.json").read_text())
    tests = [t for f in metrics["findings"].values() if (f.get("promise") or {}).get("kind") == "point"
             for t in f["promise"]["tests"] if t.get("test")]  # fmt: skip
    assert tests and any(t["unit_kind"] == "patients" and "permutation" in t["test"] for t in tests), tests
    assert "patients as the unit" in metrics["promise_summary"]["text"]
    assert "patients as the unit" in (ev / "report.html").read_text()
