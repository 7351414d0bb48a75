"""The monitor end to end on synthetic streams with a known answer (chestxr.monitoring.simulate_streams):
no change -> alarms in at most alpha of the windows; each stated change -> detected within a stated
number of windows, by the test that should see it. Power and delays per window size are tabled by
experiments/monitor_power.py (experiments/README.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from chestxr.monitoring import (
    MonitorError,
    MonitorSettings,
    Scenario,
    WindowSpec,
    monitor_samples,
    parse_window,
    simulate_streams,
)


def _first_window(
    reps: int, alpha: float, window: int, *, one_per_patient: bool = True, seed0: int = 0, field: str | None = None
) -> int:
    """Among ``reps`` independent (reference, window) pairs with no change: the windows with any alarm, or
    with ``field``'s own p-value <= alpha (before Holm) when ``field`` is given."""
    count = 0
    for r in range(reps):
        sim = simulate_streams(n_reference=600, n_stream=window, seed=seed0 + r)
        settings = MonitorSettings(
            alpha=alpha, window=WindowSpec(count=window), seed=r, one_per_patient=one_per_patient
        )
        first = monitor_samples(sim.reference, sim.stream, sim.promises, settings).windows[0]
        if field is None:
            count += bool(first.alarms)
        else:
            count += next(t for t in first.tests if t.name == field).p_value <= alpha
    return count


def test_no_change_alarms_in_at_most_alpha_of_the_windows():
    """200 independent windows of 300 images at alpha 0.10: the count must stay within Binomial(200, 0.10)'s
    99.9 % quantile (31); measured 4/200 (Holm is conservative across ~30 correlated tests)."""
    reps, alpha = 200, 0.10
    alarms = _first_window(reps, alpha, 300)
    assert alarms <= stats.binom.ppf(0.999, reps, alpha)


def test_testing_every_image_as_independent_would_over_alarm():
    """Why the monitor reduces each window to one image per patient: the simulated log has ~1.6 images per
    patient, and a patient's age band is the same on all of them. Counted as independent images, the age
    band's own test rejects far more often than its level; one image per patient keeps it at the level."""
    reps, alpha, limit = 80, 0.05, stats.binom.ppf(0.999, 80, 0.05)
    naive = _first_window(reps, alpha, 500, one_per_patient=False, seed0=500, field="input.AgeBand")
    assert naive > limit  # measured ~25 %
    assert _first_window(reps, alpha, 500, seed0=500, field="input.AgeBand") <= limit


@pytest.mark.slow
@pytest.mark.parametrize("alpha,window", [(0.01, 500), (0.05, 500), (0.05, 100)])
def test_no_change_false_alarm_rate_over_1000_windows(alpha, window):
    """1,000 independent windows; bound: Binomial(1000, alpha) 99.9 % quantile (0.01 -> 21, 0.05 -> 69)."""
    reps = 1000
    assert _first_window(reps, alpha, window, seed0=10_000) <= stats.binom.ppf(0.999, reps, alpha)


def _alarms(scenario: Scenario, reps: int, window: int, n_windows: int, labels: float = 0.0, alpha: float = 0.01):
    out = []
    for r in range(reps):
        sim = simulate_streams(
            scenario, n_reference=600, n_stream=window * n_windows, seed=100 + r, label_fraction=labels
        )
        res = monitor_samples(
            sim.reference,
            sim.stream,
            sim.promises,
            MonitorSettings(alpha=alpha, window=WindowSpec(count=window), seed=r),
        )
        out.append((sim, res))
    return out


def test_contrast_gamma_change_on_one_of_three_scanners_is_seen_in_the_pixels():
    """No header field changes; 30 % of images rendered brighter and wider: within 3 windows of 500 in
    >= 9 of 10 streams (measured: the first window in 4 of 5), by the pixel statistics or the embedding."""
    runs = _alarms(Scenario("gamma", 1.0, fraction=0.3), reps=10, window=500, n_windows=3)
    detected = [next((w for w in res.windows if w.alarms), None) for _, res in runs]
    assert sum(w is not None for w in detected) >= 9
    fired = {t.name for w in detected if w is not None for t in w.alarms}
    assert fired & {"input.pixel_mean", "input.pixel_spread", "input.embedding"}
    assert not any(t.kind == "input" and t.name.startswith("input.Manu") for w in detected if w for t in w.alarms)


def test_resolution_and_monochrome1_changes_are_named_by_their_fields():
    for scenario, expect in (
        (
            Scenario("resolution", 1.0, fraction=0.3),
            {"input.rows", "input.pixel_spacing", "input.ManufacturerModelName"},
        ),
        (Scenario("monochrome1", 0.0, fraction=0.3), {"input.PhotometricInterpretation"}),
    ):
        for _, res in _alarms(scenario, reps=4, window=500, n_windows=2):
            first = res.windows[0]
            assert expect <= {t.name for t in first.alarms}, (scenario, [t.name for t in first.alarms])
            if scenario.kind == "monochrome1":  # read correctly: the model's outputs did not move
                assert not [t.name for w in res.windows for t in w.alarms if t.kind != "input"]
            a = res.alarms[0]
            assert a.threatens == res.promises and "re-approve" in a.action


def test_prevalence_change_alarms_on_the_call_rate_and_the_estimate_follows_it():
    """Finding0 0.10 -> 0.40 (pure label shift): its call rate or score test fires in the first window of 500;
    the exact-box interval covers 0.40 and EM is within 0.05 of it on average (0.10 -> 0.30: the first
    window of 500 in ~75 % of streams, experiments/README.md)."""
    runs = _alarms(Scenario("prevalence", 0.40), reps=4, window=500, n_windows=2)
    covered, em = [], []
    for _sim, res in runs:
        assert {"output.calls.Finding0", "output.score.Finding0"} & {t.name for t in res.windows[0].alarms}
        assert not [t.name for w in res.windows for t in w.alarms if t.name.startswith("labels.")]
        for w in res.windows:
            est = next(p for p in w.prevalence if p.finding == "Finding0")
            covered.append(est.low <= 0.40 <= est.high)
            em.append(est.em)
            assert est.ppv_low <= est.ppv <= est.ppv_high
    assert all(covered)
    assert abs(np.mean(em) - 0.40) < 0.05


def test_sensitivity_drop_with_labels_is_caught_by_the_confidence_sequence():
    """Finding0's sensitivity 0.92 -> 0.70 against a promise of 0.85, half the patients labelled: the
    anytime bound falls below 0.85 within 10 windows of 500 (measured: windows 3-7), and no other
    promise is contradicted."""
    runs = _alarms(Scenario("sensitivity", 0.70), reps=5, window=500, n_windows=10, labels=0.5)
    for _, res in runs:
        hits = [w for w in res.windows if any(t.name == "labels.Finding0.sensitivity" for t in w.alarms)]
        assert hits, [w.labels[0] for w in res.windows][-1]
        bound = next(b for b in hits[0].labels if b.promise.startswith("Finding0 sensitivity"))
        assert bound.upper < 0.85 or bound.p_value <= res.alpha
        others = {t.name for w in res.windows for t in w.alarms if t.kind == "labels"} - {"labels.Finding0.sensitivity"}
        assert not others
        # once contradicted, it stays contradicted (evidence accumulates)
        later = res.windows[hits[0].index :]
        assert all(any(t.name == "labels.Finding0.sensitivity" and t.alarm for t in w.tests) for w in later)


def test_time_windows_and_the_result_serialises_without_nan():
    sim = simulate_streams(n_reference=300, n_stream=900, seed=3, label_fraction=0.2)
    res = monitor_samples(
        sim.reference, sim.stream, sim.promises, MonitorSettings(alpha=0.01, window=parse_window("2d"))
    )
    assert [w.n_images for w in res.windows] == [400, 400, 100]  # 200 images a day from Monday 00:00
    assert res.windows[0].begins == "2025-01-06T00:00:00Z" and res.windows[-1].partial
    text = json.dumps(res.to_dict(), allow_nan=False)
    assert "NaN" not in text and json.loads(text)["quiet"] == res.quiet
    assert res.n_reference_patients < res.n_reference_images == 300
    assert all(w.n_patients <= w.n_images for w in res.windows)
    for t in res.windows[0].tests:
        assert t.undefined or not math.isnan(t.p_value)


def test_monitor_refuses_a_log_from_another_run():
    sim = simulate_streams(n_reference=100, n_stream=100, seed=0)
    other = simulate_streams(n_reference=100, n_stream=100, seed=0, n_findings=3)
    with pytest.raises(MonitorError, match="findings"):
        monitor_samples(sim.reference, other.stream)
    with pytest.raises(MonitorError, match="not one of the run's findings"):
        monitor_samples(other.reference, other.stream, sim.promises)
