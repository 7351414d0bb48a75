"""chestxr: train, calibrate and audit multi-label chest X-ray classifiers.

Data flow (one direction)::

    manifest CSV -> manifest.read_manifest -> images.read_image -> transforms -> dataset
      -> models (logits, (B, n_findings)) -> calibration.fit_thresholds -> checkpoint -> report

The public API is imported lazily so that ``import chestxr`` stays cheap (no torch import).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
