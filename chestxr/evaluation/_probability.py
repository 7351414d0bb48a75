"""Probability calibration, kept apart from thresholds: maps a model's logits to probabilities
that match observed frequencies, per finding.

Methods (fitted on a validation split, one set of parameters per finding):

* ``temperature``: p = sigmoid(z / T), T > 0 minimising the log loss (ranking unchanged).
* ``platt``: p = sigmoid(a * z + b) fitted by logistic regression on the logit, with Platt's
  smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) so separable data cannot diverge. The
  slope must be positive: a fitted a <= 0 would invert (or flatten) the model's ranking, so for
  that finding Platt scaling is REFUSED: it keeps the identity map and warns
  (:class:`RefusedCalibrationWarning`, naming the finding and the slope); the record says why.
* ``isotonic``: a non-decreasing step-wise linear map (sklearn IsotonicRegression on the logits,
  clipped outside the fitted range); stored as its breakpoints x (logits) / y (probabilities) and
  applied with linear interpolation, so it round-trips through JSON (no pickle). It over-fits
  small sets: fewer than ``ISOTONIC_MIN_SAMPLES`` labelled samples for a finding warn.

A finding with one class only keeps the identity map (p = sigmoid(z)) and warns. Labels are
binarised at >= 0.5; masked entries are left out. ECE before/after: :func:`compare_ece`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from chestxr.core import CalibrationError, sigmoid
from chestxr.evaluation._metrics import UndefinedMetricWarning, as_matrices
from chestxr.evaluation._reliability import expected_calibration_error

METHODS = ("temperature", "platt", "isotonic")
ISOTONIC_MIN_SAMPLES = 1000
FORMAT = "chestxr.probability_calibrator"


class SmallSampleWarning(UserWarning):
    """A calibrator was fitted on fewer samples than it needs to be reliable."""


class RefusedCalibrationWarning(UserWarning):
    """A finding's calibrator was refused (e.g. a non-positive Platt slope) and the identity kept."""


def _log_loss(z: np.ndarray, t: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(z) against targets t in [0, 1] (stable)."""
    return float(np.mean(np.logaddexp(0.0, z) - t * z))


def _fit_temperature(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: _log_loss(z / math.exp(log_t), y), bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6}
    )
    return {"temperature": float(math.exp(res.x))}


def _fit_platt(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize

    n_pos = float(y.sum())
    t = np.where(y > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (y.size - n_pos + 2.0))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        u = ab[0] * z + ab[1]
        r = sigmoid(u) - t
        return _log_loss(u, t), np.array([np.mean(r * z), np.mean(r)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"a": float(res.x[0]), "b": float(res.x[1])}


def _fit_isotonic(z: np.ndarray, y: np.ndarray, name: str) -> dict[str, list[float]]:
    from sklearn.isotonic import IsotonicRegression

    if z.size < ISOTONIC_MIN_SAMPLES:
        warnings.warn(
            f"{name}: isotonic calibration fitted on {z.size} samples (< {ISOTONIC_MIN_SAMPLES}) "
            "tends to over-fit; consider 'temperature' or 'platt'",
            SmallSampleWarning,
            stacklevel=4,
        )
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(z, y)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def _apply_one(method: str, params: Mapping[str, Any], z: np.ndarray) -> np.ndarray:
    if params.get("identity"):
        return sigmoid(z)
    if method == "temperature":
        return sigmoid(z / params["temperature"])
    if method == "platt":
        return sigmoid(params["a"] * z + params["b"])
    return np.interp(z, params["x"], params["y"])


@dataclass
class ProbabilityCalibrator:
    """Fitted per-finding maps logits -> probabilities. ``params[j]`` holds finding j's parameters
    ({"temperature"}, {"a", "b"}, {"x", "y"} breakpoints, or {"identity": True})."""

    method: str
    params: list[dict[str, Any]]
    findings: list[str] | None = None
    n_samples: list[int] = field(default_factory=list)

    def apply(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities (n_samples, n_findings) from logits (n_samples, n_findings)."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim == 1 and len(self.params) == 1:
            z = z[:, None]
        if z.ndim != 2 or z.shape[1] != len(self.params):
            raise CalibrationError(f"calibrator has {len(self.params)} findings, logits have shape {z.shape}")
        return np.stack([_apply_one(self.method, p, z[:, j]) for j, p in enumerate(self.params)], axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (floats and lists only)."""
        return {
            "format": FORMAT,
            "version": 1,
            "method": self.method,
            "findings": self.findings,
            "n_samples": list(self.n_samples),
            "params": [dict(p) for p in self.params],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbabilityCalibrator":
        """Rebuild from :meth:`to_dict` output, checking every parameter."""
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise CalibrationError(f"not a probability calibrator (expected format {FORMAT!r})")
        method, params = d.get("method"), d.get("params")
        if method not in METHODS or not isinstance(params, list):
            raise CalibrationError(f"calibrator method must be one of {METHODS} with a params list, got {method!r}")
        need = {"temperature": ("temperature",), "platt": ("a", "b"), "isotonic": ("x", "y")}[method]
        for j, p in enumerate(params):
            if not isinstance(p, Mapping) or not (p.get("identity") or all(k in p for k in need)):
                raise CalibrationError(f"calibrator params[{j}] must hold {need} or identity")
            if method == "platt" and not p.get("identity") and not float(p["a"]) > 0:
                raise CalibrationError(
                    f"calibrator params[{j}]: Platt slope a must be > 0 (a <= 0 inverts the ranking)"
                )
            if method == "temperature" and not p.get("identity") and not float(p["temperature"]) > 0:
                raise CalibrationError(f"calibrator params[{j}]: temperature must be > 0")
            if method == "isotonic" and not p.get("identity"):
                x = np.asarray(p["x"], dtype=np.float64)
                if x.size == 0 or x.size != len(p["y"]) or np.any(np.diff(x) < 0):
                    raise CalibrationError(
                        f"calibrator params[{j}]: isotonic breakpoints must be non-empty, equal length and sorted"
                    )
        findings = d.get("findings")
        if findings is not None and len(findings) != len(params):
            raise CalibrationError(f"{len(findings)} finding names for {len(params)} parameter sets")
        return cls(
            method=method,
            params=[dict(p) for p in params],
            findings=None if findings is None else [str(f) for f in findings],
            n_samples=[int(n) for n in d.get("n_samples", [])],
        )


def fit_probability_calibrator(
    logits: Any, y_true: Any, mask: Any, method: str, *, findings: Sequence[str] | None = None
) -> ProbabilityCalibrator:
    """Fit ``method`` ("temperature" | "platt" | "isotonic") per finding on validation data.

    logits (n_samples, n_findings) raw model outputs (not probabilities), y_true (n_samples,
    n_findings) 0/1 (binarised at >= 0.5), mask (n_samples, n_findings) bool or None."""
    if method not in METHODS:
        raise CalibrationError(f"probability calibration method {method!r} is not one of {', '.join(METHODS)}")
    try:
        y, z, m = as_matrices(y_true, logits, mask)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc
    if findings is not None and len(findings) != y.shape[1]:
        raise CalibrationError(f"{len(findings)} finding names for {y.shape[1]} logit columns")
    params: list[dict[str, Any]] = []
    counts: list[int] = []
    for j in range(y.shape[1]):
        name = findings[j] if findings is not None else f"finding {j}"
        yj, zj = y[m[:, j], j].astype(np.float64), z[m[:, j], j]
        n_pos = int(yj.sum())
        counts.append(int(yj.size))
        if n_pos == 0 or n_pos == yj.size:
            warnings.warn(
                f"{name}: {method} calibration needs both classes ({n_pos} positive of {yj.size}); "
                "keeping sigmoid(logit)",
                UndefinedMetricWarning,
                stacklevel=2,
            )
            params.append({"identity": True})
        elif method == "temperature":
            params.append(_fit_temperature(zj, yj))
        elif method == "platt":
            ab = _fit_platt(zj, yj)
            if not ab["a"] > 0:
                warnings.warn(
                    f"{name}: Platt scaling refused: fitted slope a = {ab['a']:.3g} <= 0 would invert the "
                    "ranking (scores anti-informative on this split: check the labels and finding order); "
                    "keeping sigmoid(logit)",
                    RefusedCalibrationWarning,
                    stacklevel=2,
                )
                params.append({"identity": True, "refused": f"platt slope {ab['a']:.3g} <= 0"})
            else:
                params.append(ab)
        else:
            params.append(_fit_isotonic(zj, yj, name))
    return ProbabilityCalibrator(
        method=method,
        params=params,
        findings=None if findings is None else [str(f) for f in findings],
        n_samples=counts,
    )


def compare_ece(
    logits: Any,
    y_true: Any,
    mask: Any,
    calibrator: ProbabilityCalibrator,
    *,
    n_bins: int = 10,
    findings: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per finding {finding, n, ece_before (sigmoid of the logits), ece_after (calibrated)}."""
    y, z, m = as_matrices(y_true, logits, mask)
    after = calibrator.apply(z)
    names = list(findings or calibrator.findings or [str(j) for j in range(y.shape[1])])
    rows = []
    for j, name in enumerate(names):
        v = m[:, j]
        rows.append(
            {
                "finding": name,
                "n": int(v.sum()),
                "ece_before": expected_calibration_error(y[v, j], sigmoid(z[v, j]), n_bins=n_bins),
                "ece_after": expected_calibration_error(y[v, j], after[v, j], n_bins=n_bins),
            }
        )
    return rows
