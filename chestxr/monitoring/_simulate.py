"""Synthetic monitoring streams with a known answer: a reference and a log where nothing changed, or
where a stated change starts at a stated image (a scanner's contrast/gamma, resolution or photometric
interpretation, a finding's prevalence, the model's sensitivity). For the false-alarm and power
simulations (tests/monitoring, experiments/monitor_power.py) and for a fire drill of the monitor.

The model (per patient: one or more images, ``1 + Poisson(0.6)``; labels per patient):

- finding f present with probability pi_f; the model's logit for it z = a + delta y + 0.5 u + e, with a
  patient effect u ~ N(0, 1) shared by the patient's images and e ~ N(0, 1): so images of one patient
  are correlated, as in a real log;
- the score is the exact posterior P(y = 1 | z) at the reference prevalence (calibrated), the call is
  z > theta with theta set so that the true sensitivity is 0.92 (specificity then 0.90 at delta = 3);
- the embedding sketch (d = 8) is a loading of the findings plus the patient effect plus N(0, I);
- acquisition fields: Modality, Manufacturer, ManufacturerModelName, SoftwareVersions, ViewPosition,
  PhotometricInterpretation, sex, age band; numeric: pixel mean and spread, rows, pixel spacing.

Changes (``fraction`` of the images after ``change_at``, e.g. one scanner of several):

- ``gamma``: the scanner's processing renders with another contrast/gamma, with nothing in the header
  to say so: pixel mean +0.05 m and spread x(1 + 0.1 m), the embedding moves by 0.5 m along a fixed
  direction, the logits by +0.3 m (m = ``magnitude``);
- ``resolution``: a new detector: rows 1024, pixel spacing 0.3 mm, a new model name, embedding +0.3 m;
- ``monochrome1``: images arrive as MONOCHROME1; a reader that inverts them correctly (m = 0) changes
  nothing else; m > 0 moves the embedding by m and the logits by -0.5 m (a reader that does not);
- ``prevalence``: finding ``finding``'s prevalence becomes ``magnitude`` (pure label shift);
- ``sensitivity``: finding ``finding``'s positives score lower: true sensitivity becomes ``magnitude``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from chestxr.monitoring._sample import MonitorError, Promise, Sample, concat_samples

ScenarioKind = Literal["none", "gamma", "resolution", "monochrome1", "prevalence", "sensitivity"]
SCENARIOS: tuple[str, ...] = ("none", "gamma", "resolution", "monochrome1", "prevalence", "sensitivity")

PREVALENCES = (0.10, 0.15, 0.20, 0.08, 0.12, 0.05, 0.25, 0.10, 0.06, 0.18, 0.09, 0.04, 0.14, 0.07)
DELTA = 3.0
SIGMA = math.sqrt(1.0 + 0.25)  # sd of the logit given y: e plus the patient effect 0.5 u
TRUE_SENSITIVITY = 0.92
PROMISED_SENSITIVITY = 0.85
PROMISED_SPECIFICITY = 0.85
EMBED_DIM = 8
IMAGES_PER_DAY = 200

_FIELDS = {
    "Modality": (["CR", "DX"], [0.4, 0.6]),
    "Manufacturer": (["Acme", "Borealis", "Cygnus"], [0.5, 0.3, 0.2]),
    "ViewPosition": (["PA", "AP", "LL"], [0.6, 0.35, 0.05]),
    "PhotometricInterpretation": (["MONOCHROME2", "MONOCHROME1"], [0.85, 0.15]),
    "PatientSex": (["F", "M", ""], [0.49, 0.49, 0.02]),
    "AgeBand": (["18-39", "40-59", "60-79", "80+"], [0.2, 0.35, 0.35, 0.1]),
}
_MODEL = {"Acme": "Acme DR-1", "Borealis": "Borealis X", "Cygnus": "Cygnus 9"}
_SOFTWARE = {"Acme": "1.4", "Borealis": "7.2.1", "Cygnus": "3.0"}


@dataclass(frozen=True)
class Scenario:
    """A change: ``kind`` (see the module docstring), its ``magnitude``, the ``finding`` index it
    concerns (prevalence, sensitivity) and the ``fraction`` of post-change images it touches."""

    kind: ScenarioKind = "none"
    magnitude: float = 1.0
    finding: int = 0
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCENARIOS:
            raise MonitorError(f"scenario {self.kind!r} is not one of {SCENARIOS}")
        if not 0.0 <= self.fraction <= 1.0:
            raise MonitorError(f"fraction must be in [0, 1], got {self.fraction}")


@dataclass(frozen=True)
class SimulatedStreams:
    """``reference`` (labelled, the calibration patients), ``stream`` (the log; labels where given),
    ``promises`` (sensitivity and specificity >= 0.85 per finding, and PPV >= ``ppv_level`` for
    finding 0 over its ``ppv_range``), ``change_at`` (first changed row of the stream, in time order),
    ``thresholds`` (F,) on the score scale and the true per-finding ``sensitivity``/``specificity``/
    ``prevalence`` before and after."""

    reference: Sample
    stream: Sample
    promises: tuple[Promise, ...]
    change_at: int
    thresholds: np.ndarray
    truth: dict[str, np.ndarray]


def _posterior(z: np.ndarray, prevalence: np.ndarray, a: np.ndarray) -> np.ndarray:
    logit = np.log(prevalence / (1 - prevalence)) + DELTA * (z - a - DELTA / 2.0) / SIGMA**2
    return 1.0 / (1.0 + np.exp(-logit))


def _patients(n_images: int, rng: np.random.Generator) -> np.ndarray:
    """(n_images,) patient index per image, images of one patient adjacent."""
    counts = 1 + rng.poisson(0.6, size=n_images)
    owner = np.repeat(np.arange(n_images), counts)[:n_images]
    return owner


def _draw(
    n: int,
    rng: np.random.Generator,
    prevalence: np.ndarray,
    patient_prefix: str,
    loading: np.ndarray,
) -> dict[str, np.ndarray]:
    n_f = prevalence.size
    owner = _patients(n, rng)
    n_pat = int(owner.max()) + 1 if n else 0
    y_pat = (rng.random((n_pat, n_f)) < prevalence).astype(np.float64)
    u_pat = rng.normal(size=n_pat)
    y, u = y_pat[owner], u_pat[owner]
    out: dict[str, np.ndarray] = {"y": y, "u": u, "e": rng.normal(size=(n, n_f))}
    out["groups"] = np.array([f"{patient_prefix}{i}" for i in owner], dtype=object)
    out["embedding"] = (
        y @ loading + 0.7 * u[:, None] * loading[-1] / np.linalg.norm(loading[-1]) + rng.normal(size=(n, EMBED_DIM))
    )
    pat_fields = {"PatientSex", "AgeBand"}
    for name, (values, probs) in _FIELDS.items():
        if name in pat_fields:
            out[name] = np.asarray(values, dtype=object)[rng.choice(len(values), size=n_pat, p=probs)][owner]
        else:
            out[name] = np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=probs)]
    out["ManufacturerModelName"] = np.array([_MODEL[m] for m in out["Manufacturer"]], dtype=object)
    out["SoftwareVersions"] = np.array([_SOFTWARE[m] for m in out["Manufacturer"]], dtype=object)
    out["pixel_mean"] = rng.normal(0.50, 0.04, size=n) + 0.02 * u
    out["pixel_spread"] = rng.normal(0.22, 0.02, size=n)
    out["rows"] = rng.choice([2048.0, 2500.0, 3000.0], size=n)
    out["pixel_spacing"] = rng.choice([0.139, 0.143, 0.148, 0.16], size=n)
    out["logit_shift"] = np.zeros((n, n_f))
    return out


def simulate_streams(
    scenario: Scenario | None = None,
    *,
    n_reference: int = 600,
    n_stream: int = 3000,
    change_at: int = 0,
    n_findings: int = 4,
    label_fraction: float = 0.0,
    ppv_level: float = 0.40,
    ppv_range: tuple[float, float] = (0.08, 0.12),
    seed: int = 0,
) -> SimulatedStreams:
    """A reference of ``n_reference`` images and a stream of ``n_stream`` images (200 a day) whose
    rows from ``change_at`` on follow ``scenario``; ``label_fraction`` of the stream's patients have
    confirmed labels. Deterministic for ``seed``."""
    scenario = scenario or Scenario()
    if not 1 <= n_findings <= len(PREVALENCES):
        raise MonitorError(f"n_findings must be 1..{len(PREVALENCES)}")
    if not 0 <= change_at <= n_stream:
        raise MonitorError("change_at must be within the stream")
    rng = np.random.default_rng(seed)
    findings = tuple(f"Finding{j}" for j in range(n_findings))
    prev = np.array(PREVALENCES[:n_findings])
    a = np.full(n_findings, -1.0)
    theta = a + DELTA - SIGMA * stats.norm.ppf(TRUE_SENSITIVITY)
    thresholds = _posterior(theta, prev, a)
    structure = np.random.default_rng(12345)  # the "world": the same for every seed
    loading = structure.normal(size=(n_findings, EMBED_DIM))
    direction = structure.normal(size=EMBED_DIM)
    direction /= np.linalg.norm(direction)

    ref = _draw(n_reference, rng, prev, "r", loading)
    pre = _draw(change_at, rng, prev, "a", loading)
    prev_after = prev.copy()
    if scenario.kind == "prevalence":
        prev_after[scenario.finding] = scenario.magnitude
    post = _draw(n_stream - change_at, rng, prev_after, "b", loading)
    hit = rng.random(n_stream - change_at) < scenario.fraction
    m = scenario.magnitude
    sens_after = np.full(n_findings, TRUE_SENSITIVITY)
    if scenario.kind == "gamma":
        post["pixel_mean"][hit] += 0.05 * m
        post["pixel_spread"][hit] *= 1.0 + 0.1 * m
        post["embedding"][hit] += 0.5 * m * direction
        post["logit_shift"][hit] += 0.3 * m
    elif scenario.kind == "resolution":
        post["rows"][hit] = 1024.0
        post["pixel_spacing"][hit] = 0.3
        post["ManufacturerModelName"][hit] = "Acme Mobile-2"
        post["embedding"][hit] += 0.3 * m * direction
    elif scenario.kind == "monochrome1":
        post["PhotometricInterpretation"][hit] = "MONOCHROME1"
        post["embedding"][hit] += m * direction
        post["logit_shift"][hit] -= 0.5 * m
    elif scenario.kind == "sensitivity":
        j = scenario.finding
        # positives of finding j lose logit so that P(z > theta | y = 1) = magnitude
        drop = SIGMA * (stats.norm.ppf(TRUE_SENSITIVITY) - stats.norm.ppf(m))
        post["logit_shift"][hit, j] -= drop * post["y"][hit, j]
        sens_after[j] = scenario.fraction * m + (1 - scenario.fraction) * TRUE_SENSITIVITY

    def sample(part: dict[str, np.ndarray], labelled: np.ndarray | None, t0: int) -> Sample:
        z = a + DELTA * part["y"] + 0.5 * part["u"][:, None] + part["e"] + part["logit_shift"]
        scores = _posterior(z, prev, a)
        calls = (z > theta).astype(np.int8)
        n = z.shape[0]
        labels = part["y"].copy()
        if labelled is not None:
            labels[~labelled] = np.nan
        times = np.datetime64("2025-01-06T00:00:00", "ms") + (
            (np.arange(t0, t0 + n) * (86400_000 / IMAGES_PER_DAY)).astype(np.int64)
        ).astype("timedelta64[ms]")
        return Sample(
            findings=findings,
            scores=scores,
            calls=calls,
            groups=part["groups"],
            embedding=part["embedding"],
            categorical={k: part[k] for k in (*_FIELDS, "ManufacturerModelName", "SoftwareVersions")},
            numeric={k: part[k] for k in ("pixel_mean", "pixel_spread", "rows", "pixel_spacing")},
            time=times,
            labels=labels,
        )

    def labelled_rows(part: dict[str, np.ndarray]) -> np.ndarray:
        pats, inverse = np.unique(part["groups"], return_inverse=True)
        return (rng.random(pats.size) < label_fraction)[inverse]

    reference = sample(ref, None, 0)
    stream_pre = sample(pre, labelled_rows(pre), 0)
    stream_post = sample(post, labelled_rows(post), change_at)
    stream = concat_samples([stream_pre, stream_post])
    spec_true = stats.norm.cdf((theta - a) / SIGMA)
    promises = tuple(
        [Promise(f, "sensitivity", PROMISED_SENSITIVITY) for f in findings]
        + [Promise(f, "specificity", PROMISED_SPECIFICITY) for f in findings]
        + [Promise(findings[0], "ppv", ppv_level, prevalence=ppv_range)]
    )
    truth = {
        "prevalence_before": prev,
        "prevalence_after": prev_after,
        "sensitivity_before": np.full(n_findings, TRUE_SENSITIVITY),
        "sensitivity_after": sens_after,
        "specificity": spec_true,
    }
    return SimulatedStreams(reference, stream, promises, change_at, thresholds, truth)
