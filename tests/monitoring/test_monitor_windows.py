"""Windows (count and time), Holm's adjustment, and the Sample / Promise checks."""

from __future__ import annotations

import numpy as np
import pytest

from chestxr.monitoring import (
    MonitorError,
    Promise,
    Sample,
    WindowSpec,
    holm_adjust,
    parse_window,
    split_windows,
)


def test_parse_window():
    assert parse_window("500") == WindowSpec(count=500)
    assert parse_window(250) == WindowSpec(count=250)
    assert parse_window("7d") == WindowSpec(seconds=7 * 86400)
    assert parse_window(" 12H ") == WindowSpec(seconds=12 * 3600)
    assert parse_window("2w").describe() == "2w" and parse_window("14d").describe() == "2w"
    assert parse_window("36h").describe() == "36h" and parse_window("500").describe() == "500 images"
    for bad in ("", "7x", "-3", "0", "1.5d", "1", "7 days"):
        with pytest.raises(MonitorError, match="--window"):
            parse_window(bad)


def test_count_windows_and_the_partial_last_one():
    ws = split_windows(None, 1250, WindowSpec(count=500))
    assert [(w.start, w.stop, w.partial) for w in ws] == [(0, 500, False), (500, 1000, False), (1000, 1250, True)]
    assert split_windows(None, 0, WindowSpec(count=500)) == []


def test_time_windows_start_at_midnight_and_skip_empty_spans():
    day = np.timedelta64(86400_000, "ms")
    t0 = np.datetime64("2025-03-05T15:30:00", "ms")
    times = np.array([t0, t0 + day, t0 + 3 * day, t0 + 20 * day, t0 + 20 * day + np.timedelta64(1, "h")])
    ws = split_windows(times, times.size, WindowSpec(seconds=7 * 86400))
    assert [(w.start, w.stop) for w in ws] == [(0, 3), (3, 5)]
    assert ws[0].begins == np.datetime64("2025-03-05T00:00:00", "ms")
    assert ws[1].begins == np.datetime64("2025-03-19T00:00:00", "ms")  # the third week; the second is empty
    assert ws[1].ends - ws[1].begins == 7 * day
    assert ws[1].partial and not ws[0].partial
    with pytest.raises(MonitorError, match="time order"):
        split_windows(times[::-1], times.size, WindowSpec(count=2))
    with pytest.raises(MonitorError, match="needs the time"):
        split_windows(None, 5, WindowSpec(seconds=86400))


def test_holm_against_a_hand_computed_example():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    # m = 4 defined: sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, 0.06 (monotone)
    np.testing.assert_allclose(holm_adjust(p), [0.03, 0.06, 0.06, np.nan, 0.02])
    assert np.isnan(holm_adjust(np.array([np.nan]))).all()
    assert holm_adjust(np.array([0.9, 0.8])).tolist() == [1.0, 1.0]


def _sample(n=4, **kw):
    base = dict(
        findings=("A", "B"),
        scores=np.full((n, 2), 0.5),
        calls=np.zeros((n, 2), dtype=np.int8),
        groups=np.arange(n),
    )
    base.update(kw)
    return Sample(**base)


def test_sample_refuses_inconsistent_shapes_with_a_clear_message():
    with pytest.raises(MonitorError, match="scores has 2 columns but 3 findings"):
        _sample(findings=("A", "B", "C"))
    with pytest.raises(MonitorError, match="calls has 3 rows"):
        _sample(calls=np.zeros((3, 2)))
    with pytest.raises(MonitorError, match="calls must hold"):
        _sample(calls=np.full((4, 2), 2))
    with pytest.raises(MonitorError, match="groups"):
        _sample(groups=np.arange(5))
    with pytest.raises(MonitorError, match="labels must hold"):
        _sample(labels=np.full((4, 2), 0.5))
    with pytest.raises(MonitorError, match="categorical"):
        _sample(categorical={"Modality": ["CR"]})


def test_one_image_per_patient_is_seeded_and_uniform():
    s = _sample(n=6, groups=np.array(["p1", "p1", "p2", "p1", "p3", "p3"]))
    a, b = s.one_per_patient_index(0), s.one_per_patient_index(0)
    assert a.tolist() == b.tolist() and len(a) == 3
    counts = np.zeros(6)
    for seed in range(3000):
        counts[s.one_per_patient_index(seed)] += 1
    # p1's three images each chosen ~1/3 of the time, p3's two ~1/2, p2's one always
    np.testing.assert_allclose(counts / 3000, [1 / 3, 1 / 3, 1, 1 / 3, 1 / 2, 1 / 2], atol=0.04)


def test_promise_describe_and_checks():
    p = Promise("Effusion", "ppv", 0.4, 0.95, "jointly for 3 findings", (0.05, 0.1))
    assert p.describe() == "Effusion ppv >= 0.40 (95 % one-sided, jointly for 3 findings, prevalence 0.05-0.1)"
    with pytest.raises(MonitorError):
        Promise("Effusion", "auroc", 0.4)  # type: ignore[arg-type]
    with pytest.raises(MonitorError):
        Promise("Effusion", "sensitivity", 1.0)
