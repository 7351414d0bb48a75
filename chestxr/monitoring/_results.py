"""The monitor's typed results: per window every test (with its Holm-adjusted p-value and alarm), the
label-shift prevalence estimates, the anytime-valid bounds on each promise once labels arrive, and
the alarms, each naming the promises it threatens and the action to take."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

#: what to do about any alarm: the run's promises were made on the calibration patients.
ACTION = (
    "re-calibrate on recent patients from the current setting (chestxr calibrate), review the new "
    "evaluation, then re-approve (chestxr approve); until then treat the threatened promises as unverified"
)
KINDS = ("input", "output", "prevalence", "labels")


def iso_time(value: np.datetime64 | None) -> str | None:
    """``2025-01-06T00:00:00Z`` (UTC, whole seconds) or None."""
    if value is None:
        return None
    seconds = np.asarray(value).astype("datetime64[s]")
    return str(np.datetime_as_string(seconds, unit="s")) + "Z"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class TestResult:
    """One test of one window against the reference.

    ``name``: ``input.<field>``, ``input.embedding``, ``output.score.<finding>``,
    ``output.calls.<finding>``, ``prevalence.<finding>.<ppv|npv>`` or ``labels.<finding>.<metric>``;
    ``p_value`` the test's own p-value (NaN when undefined: ``undefined`` says why), ``p_holm`` Holm's
    adjustment across the window's defined tests, ``alarm`` = p_holm <= alpha; ``summary`` reference
    vs window in words; ``threatens`` the promises (or operating points) an alarm puts in doubt."""

    __test__ = False  # not a pytest class

    window: int
    name: str
    kind: str
    finding: str | None
    method: str
    statistic: float
    p_value: float
    p_holm: float
    alarm: bool
    n_reference: int
    n_window: int
    summary: str
    threatens: tuple[str, ...]
    undefined: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class PrevalenceEstimate:
    """A finding's prevalence in one window under label shift (BBSE with the exact-box interval at
    ``confidence``; ``em`` the Saerens EM point estimate) and the PPV / NPV it implies at the signed
    threshold, with the same interval construction. ``identified`` False: the reference's TPR and FPR
    intervals overlap, so the call rate says nothing about the prevalence (interval [0, 1])."""

    window: int
    finding: str
    reference: float
    estimate: float
    low: float
    high: float
    em: float
    ppv: float
    ppv_low: float
    ppv_high: float
    npv: float
    npv_low: float
    npv_high: float
    confidence: float
    n_window: int
    identified: bool
    method: str = "BBSE (Lipton et al. 2018), exact box: Clopper-Pearson for q, TPR, FPR at 1-(1-c)/3 each"

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class LabelBound:
    """A promise checked on labelled patients up to the end of a window (cumulative since the log's
    start, one image per patient): ``successes`` of ``n``, the anytime-valid upper confidence bound
    ``upper`` at 1 - alpha (beta-binomial mixture confidence sequence, running minimum over window
    ends) and the anytime p-value of "metric >= level"."""

    window: int
    promise: str
    finding: str
    metric: str
    level: float
    n: int
    successes: int
    estimate: float
    upper: float
    alpha: float
    p_value: float
    method: str = "one-sided beta-binomial mixture confidence sequence (Howard et al. 2021), anytime-valid"

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class Alarm:
    """A test that alarmed: where (window, its time span), what (``test``, ``summary``), how sure
    (``p_holm`` at the stated ``alpha`` per window), which promises it threatens and what to do."""

    window: int
    begins: str | None
    ends: str | None
    test: str
    kind: str
    finding: str | None
    p_holm: float
    summary: str
    threatens: tuple[str, ...]
    action: str = ACTION

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class WindowResult:
    """One window: its span (``begins``/``ends`` ISO UTC, None without times), images and patients
    (the tests use one image per patient), ``partial`` (still open), and its results."""

    index: int
    begins: str | None
    ends: str | None
    n_images: int
    n_patients: int
    partial: bool
    tests: tuple[TestResult, ...]
    prevalence: tuple[PrevalenceEstimate, ...] = ()
    labels: tuple[LabelBound, ...] = ()

    @property
    def alarms(self) -> tuple[TestResult, ...]:
        return tuple(t for t in self.tests if t.alarm)

    @property
    def n_undefined(self) -> int:
        return sum(1 for t in self.tests if math.isnan(t.p_value))

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "index": self.index,
                "begins": self.begins,
                "ends": self.ends,
                "n_images": self.n_images,
                "n_patients": self.n_patients,
                "partial": self.partial,
                "n_tests": len(self.tests),
                "n_undefined": self.n_undefined,
                "alarm": bool(self.alarms),
                "tests": [t.to_dict() for t in self.tests],
                "prevalence": [p.to_dict() for p in self.prevalence],
                "labels": [b.to_dict() for b in self.labels],
            }
        )


@dataclass(frozen=True)
class LogSummary:
    """What was read: log ``files``, ``entries`` compared, ``torn_lines`` skipped (file:line), ``duplicates``
    left out, ``other_runs`` (entries of other weights / thresholds / profile, left out, per key),
    ``labelled`` entries joined to a confirmed label, ``labels_unmatched`` label rows that matched no entry."""

    files: tuple[str, ...]
    entries: int
    torn_lines: tuple[str, ...] = ()
    duplicates: int = 0
    other_runs: dict[str, int] = field(default_factory=dict)
    labelled: int = 0
    labels_unmatched: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass(frozen=True)
class MonitorResult:
    """Everything the monitor found. ``alpha`` is the false-alarm rate per window (Holm across the
    window's tests); ``quiet`` is True when no window alarmed."""

    alpha: float
    window: str
    windows: tuple[WindowResult, ...]
    findings: tuple[str, ...]
    promises: tuple[str, ...]
    n_reference_images: int
    n_reference_patients: int
    n_images: int
    settings: dict[str, Any] = field(default_factory=dict)
    log: Optional[LogSummary] = None

    @property
    def alarms(self) -> tuple[Alarm, ...]:
        out = []
        for w in self.windows:
            for t in w.alarms:
                out.append(
                    Alarm(w.index, w.begins, w.ends, t.name, t.kind, t.finding, t.p_holm, t.summary, t.threatens)
                )
        return tuple(out)

    @property
    def quiet(self) -> bool:
        return not any(w.alarms for w in self.windows)

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "alpha": self.alpha,
                "window": self.window,
                "quiet": self.quiet,
                "findings": list(self.findings),
                "promises": list(self.promises),
                "n_reference_images": self.n_reference_images,
                "n_reference_patients": self.n_reference_patients,
                "n_images": self.n_images,
                "settings": self.settings,
                "log": None if self.log is None else self.log.to_dict(),
                "alarms": [a.to_dict() for a in self.alarms],
                "windows": [w.to_dict() for w in self.windows],
            }
        )
