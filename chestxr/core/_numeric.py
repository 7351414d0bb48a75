"""Numeric helpers shared by every layer (one implementation each)."""

from __future__ import annotations

from typing import Any

import numpy as np


def sigmoid(logits: Any) -> np.ndarray:
    """Probabilities from logits, same shape, float64; no overflow warnings for large |logit|."""
    from scipy.special import expit

    return np.asarray(expit(np.asarray(logits, dtype=np.float64)), dtype=np.float64)
