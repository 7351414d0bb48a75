"""Floor between runs and pacs: watch a signed-off model in use and say when its promises may no longer
hold. Imports core .. runs; imported only by cli.

Post-deployment monitoring compares windows of the inference log (a count of images or a span of
time) with the reference profile that ``calibrate`` stored: input drift (acquisition fields, the
embedding sketch), output drift (score distributions, positive-call rates), the prevalence in use
(label-shift estimates and the PPV / NPV they imply) and, once labels arrive, anytime-valid bounds on
each promise. Holm's adjustment within a window holds the false-alarm rate per window at ``alpha``.

Public API::

    from chestxr.monitoring import monitor                 # also chestxr.monitor
    result = monitor("runs/nih", ["predict-out/", "listen/"], window="7d", alpha=0.01, labels="confirmed.csv",
                     out="monitor-out")                  # monitor.html, monitor.json, alarms.csv
    result.quiet, result.alarms      # typed: MonitorResult, Alarm, WindowResult, TestResult ...

    # the statistics on arrays (any reference and stream of logged predictions):
    from chestxr.monitoring import Sample, Promise, MonitorSettings, monitor_samples, parse_window
    result = monitor_samples(reference, stream, promises, MonitorSettings(alpha=0.01, window=parse_window("500")))
"""

from __future__ import annotations

from chestxr.monitoring._battery import MonitorSettings, monitor_samples
from chestxr.monitoring._confseq import anytime_pvalues, log_mixture, upper_bound
from chestxr.monitoring._holm import holm_adjust
from chestxr.monitoring._labelshift import bbse_intervals, em_prevalence, predictive_value_pvalue
from chestxr.monitoring._mmd import EmbeddingReference, mmd_test, prepare_embedding_reference
from chestxr.monitoring._monitor import join_labels, log_sample, monitor, promises_from_points, reference_sample
from chestxr.monitoring._report import alarms_csv, write_monitor_outputs
from chestxr.monitoring._results import (
    ACTION,
    Alarm,
    LabelBound,
    LogSummary,
    MonitorResult,
    PrevalenceEstimate,
    TestResult,
    WindowResult,
)
from chestxr.monitoring._sample import METRICS, MISSING, NOT_CALLED, MonitorError, Promise, Sample, concat_samples
from chestxr.monitoring._simulate import SCENARIOS, Scenario, SimulatedStreams, simulate_streams
from chestxr.monitoring._twosample import chi2_homogeneity, fisher_exact_two_sided, ks_test
from chestxr.monitoring._windows import Window, WindowSpec, parse_window, split_windows

__all__ = [
    "ACTION",
    "Alarm",
    "EmbeddingReference",
    "LabelBound",
    "LogSummary",
    "METRICS",
    "MISSING",
    "MonitorError",
    "MonitorResult",
    "MonitorSettings",
    "NOT_CALLED",
    "PrevalenceEstimate",
    "Promise",
    "SCENARIOS",
    "Sample",
    "Scenario",
    "SimulatedStreams",
    "TestResult",
    "Window",
    "WindowResult",
    "WindowSpec",
    "alarms_csv",
    "anytime_pvalues",
    "bbse_intervals",
    "chi2_homogeneity",
    "concat_samples",
    "em_prevalence",
    "fisher_exact_two_sided",
    "holm_adjust",
    "join_labels",
    "log_sample",
    "ks_test",
    "log_mixture",
    "mmd_test",
    "monitor",
    "monitor_samples",
    "parse_window",
    "predictive_value_pvalue",
    "prepare_embedding_reference",
    "promises_from_points",
    "reference_sample",
    "simulate_streams",
    "split_windows",
    "upper_bound",
    "write_monitor_outputs",
]
