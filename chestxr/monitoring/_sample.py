"""What the monitor compares: a columnar batch of logged predictions (the reference, or one window of
the inference log) and the promises a signed-off run made.

A :class:`Sample` holds, for n images and F findings, the model's scores and calls, the patient each
image belongs to (a keyed hash or any key: only equality is used), optionally an embedding sketch,
non-identifying acquisition fields (categorical and numeric), the time each image was predicted and
confirmed labels. The reference (the calibration split, made by ``calibrate``) and every window of
the inference log are Samples, so every test compares two Samples.

The patient is the independent unit: a window or a reference with several images of one patient is
reduced to one image per patient (:meth:`Sample.one_per_patient`, a seeded random choice) before
any two-sample test, because images of one patient are correlated and a test that counted them as
independent would alarm more often than its stated rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from chestxr.core import ChestXRError

#: the value of ``Sample.calls`` for a finding without a threshold (not calibrated: calls nothing).
NOT_CALLED = -1
#: the category an absent categorical value is counted as (never dropped).
MISSING = "(missing)"

Metric = Literal["sensitivity", "specificity", "ppv", "npv"]
METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv")


class MonitorError(ChestXRError, ValueError):
    """Inputs to the monitor are not usable as given (shapes disagree, a level outside (0, 1), a window
    spec that cannot be parsed, a log that cannot be read). The message names the input and the fix."""


@dataclass(frozen=True)
class Promise:
    """One guarantee a signed-off run made: ``metric`` of ``finding`` is at least ``level``.

    ``confidence`` is the one-sided confidence it was made at and ``family`` the family it holds
    jointly with (e.g. "per finding", "jointly for 14 findings"); ``prevalence`` the deployment
    prevalence range a PPV/NPV promise covers (None: made at the calibration prevalence only)."""

    finding: str
    metric: Metric
    level: float
    confidence: float = 0.95
    family: str = "per finding"
    prevalence: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise MonitorError(f"promise metric {self.metric!r} is not one of {METRICS}")
        if not 0.0 < self.level < 1.0:
            raise MonitorError(f"promise level for {self.finding} {self.metric} must be in (0, 1), got {self.level!r}")
        if not 0.0 < self.confidence < 1.0:
            raise MonitorError(f"promise confidence must be in (0, 1), got {self.confidence!r}")

    def describe(self) -> str:
        """Readable: ``Effusion sensitivity >= 0.90 (95 % one-sided, per finding)``."""
        extra = self.family
        if self.prevalence is not None:
            extra += f", prevalence {self.prevalence[0]:g}-{self.prevalence[1]:g}"
        return f"{self.finding} {self.metric} >= {self.level:.2f} ({100 * self.confidence:g} % one-sided, {extra})"


def _as_2d(name: str, value: Any, n: int | None, dtype: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != 2:
        raise MonitorError(f"Sample.{name} must be 2-D (n_images, ...), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise MonitorError(f"Sample.{name} has {arr.shape[0]} rows but scores has {n}")
    return arr


@dataclass(frozen=True, eq=False)
class Sample:
    """A batch of n logged predictions over F findings (shapes below; n may be 0).

    - ``findings``: F names, in the order of the score columns;
    - ``scores``: (n, F) float, the calibrated probabilities the calls were made on;
    - ``calls``: (n, F) int8, 1 positive, 0 negative, :data:`NOT_CALLED` (-1) where the finding has no
      threshold;
    - ``groups``: (n,) patient keys (keyed hashes; only equality is used);
    - ``embedding``: (n, d) float or None, the embedding sketch;
    - ``categorical``: field -> (n,) str (``""`` or None = missing, counted as :data:`MISSING`);
    - ``numeric``: field -> (n,) float (NaN = missing);
    - ``time``: (n,) datetime64 (UTC) or None;
    - ``labels``: (n, F) float, 1 / 0 confirmed, NaN unknown; or None.
    """

    findings: tuple[str, ...]
    scores: np.ndarray
    calls: np.ndarray
    groups: np.ndarray
    embedding: np.ndarray | None = None
    categorical: Mapping[str, np.ndarray] = field(default_factory=dict)
    numeric: Mapping[str, np.ndarray] = field(default_factory=dict)
    time: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        findings = tuple(str(f) for f in self.findings)
        object.__setattr__(self, "findings", findings)
        scores = _as_2d("scores", self.scores, None, np.float64)
        n, n_f = scores.shape
        if n_f != len(findings):
            raise MonitorError(f"Sample.scores has {n_f} columns but {len(findings)} findings")
        object.__setattr__(self, "scores", scores)
        calls = _as_2d("calls", self.calls, n, np.int8)
        if calls.shape[1] != n_f:
            raise MonitorError(f"Sample.calls has {calls.shape[1]} columns but {n_f} findings")
        if calls.size and (calls.min() < NOT_CALLED or calls.max() > 1):
            raise MonitorError("Sample.calls must hold 1 (positive), 0 (negative) or -1 (not called)")
        object.__setattr__(self, "calls", calls)
        groups = np.asarray(self.groups)
        if groups.shape != (n,):
            raise MonitorError(f"Sample.groups must have shape ({n},), got {groups.shape}")
        object.__setattr__(self, "groups", groups)
        if self.embedding is not None:
            object.__setattr__(self, "embedding", _as_2d("embedding", self.embedding, n, np.float64))
        cats = {}
        for k, v in self.categorical.items():
            arr = np.asarray(v, dtype=object)
            if arr.shape != (n,):
                raise MonitorError(f"Sample.categorical[{k!r}] must have shape ({n},), got {arr.shape}")
            cats[str(k)] = arr
        object.__setattr__(self, "categorical", cats)
        nums = {}
        for k, v in self.numeric.items():
            arr = np.asarray(v, dtype=np.float64)
            if arr.shape != (n,):
                raise MonitorError(f"Sample.numeric[{k!r}] must have shape ({n},), got {arr.shape}")
            nums[str(k)] = arr
        object.__setattr__(self, "numeric", nums)
        if self.time is not None:
            t = np.asarray(self.time).astype("datetime64[ms]")
            if t.shape != (n,):
                raise MonitorError(f"Sample.time must have shape ({n},), got {t.shape}")
            object.__setattr__(self, "time", t)
        if self.labels is not None:
            lab = _as_2d("labels", self.labels, n, np.float64)
            if lab.shape[1] != n_f:
                raise MonitorError(f"Sample.labels has {lab.shape[1]} columns but {n_f} findings")
            ok = np.isnan(lab) | (lab == 0.0) | (lab == 1.0)
            if not ok.all():
                raise MonitorError("Sample.labels must hold 1, 0 or NaN (unknown)")
            object.__setattr__(self, "labels", lab)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> "Sample":
        """The rows ``index`` (an integer array or a boolean mask of shape (n,)), every column alike."""
        idx = np.asarray(index)
        return Sample(
            findings=self.findings,
            scores=self.scores[idx],
            calls=self.calls[idx],
            groups=self.groups[idx],
            embedding=None if self.embedding is None else self.embedding[idx],
            categorical={k: v[idx] for k, v in self.categorical.items()},
            numeric={k: v[idx] for k, v in self.numeric.items()},
            time=None if self.time is None else self.time[idx],
            labels=None if self.labels is None else self.labels[idx],
        )

    def patient_codes(self) -> np.ndarray:
        """(n,) int codes, equal for images of the same patient (order of first appearance)."""
        import pandas as pd

        codes, _ = pd.factorize(self.groups, use_na_sentinel=False)
        return np.asarray(codes, dtype=np.int64)

    def n_patients(self) -> int:
        return int(np.unique(self.patient_codes()).size) if len(self) else 0

    def one_per_patient_index(self, seed: int | np.random.SeedSequence) -> np.ndarray:
        """(n_patients,) row indices: one image per patient, chosen uniformly at random (seeded), in
        row order. Images of one patient are correlated; the two-sample tests need independent rows."""
        return one_per_group_index(self.patient_codes(), seed)

    def one_per_patient(self, seed: int | np.random.SeedSequence) -> "Sample":
        """This sample reduced to one image per patient (see :meth:`one_per_patient_index`)."""
        return self.take(self.one_per_patient_index(seed))


def one_per_group_index(codes: np.ndarray, seed: int | np.random.SeedSequence) -> np.ndarray:
    """(n_groups,) sorted row indices, one per distinct value of ``codes`` (n,) ints, each chosen
    uniformly at random among its group's rows (seeded)."""
    codes = np.asarray(codes)
    n = codes.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    r = np.random.default_rng(seed).random(n)
    order = np.lexsort((r, codes))
    first = np.ones(n, dtype=bool)
    first[1:] = codes[order][1:] != codes[order][:-1]
    return np.sort(order[first])


def concat_samples(samples: list[Sample]) -> Sample:
    """Rows of several Samples with the same findings and columns, in the order given."""
    if not samples:
        raise MonitorError("nothing to concatenate: no samples")
    first = samples[0]
    for s in samples[1:]:
        if s.findings != first.findings:
            raise MonitorError(f"samples disagree on findings: {first.findings} vs {s.findings}")
        if set(s.categorical) != set(first.categorical) or set(s.numeric) != set(first.numeric):
            raise MonitorError("samples disagree on their acquisition fields")

    def opt(get: Any) -> Any:
        parts = [get(s) for s in samples]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    return Sample(
        findings=first.findings,
        scores=np.concatenate([s.scores for s in samples]),
        calls=np.concatenate([s.calls for s in samples]),
        groups=np.concatenate([s.groups for s in samples]),
        embedding=opt(lambda s: s.embedding),
        categorical={k: np.concatenate([s.categorical[k] for s in samples]) for k in first.categorical},
        numeric={k: np.concatenate([s.numeric[k] for s in samples]) for k in first.numeric},
        time=opt(lambda s: s.time),
        labels=opt(lambda s: s.labels),
    )


def check_level(name: str, value: float) -> float:
    """``value`` as a float in (0, 1), else a :class:`MonitorError` naming ``name``."""
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise MonitorError(f"{name} must be in (0, 1), got {value!r}")
    return v
