"""Embedding drift: a kernel two-sample test (maximum mean discrepancy) with a permutation p-value.

The statistic is the squared MMD (Gretton et al. 2012) between the reference's and the window's
embedding sketches under a Gaussian kernel, computed through ``n_features`` random Fourier features
(Rahimi & Recht 2007; seeded): phi(x) = sqrt(2 / D) cos(W x + b), W ~ N(0, I / sigma^2), b ~
U(0, 2 pi), MMD^2 = || mean phi(reference) - mean phi(window) ||^2. Sketch dimensions are standardised
by the reference's mean and standard deviation and sigma is the median pairwise distance of the
(standardised) reference (the median heuristic), so the kernel is fixed before any window is seen.

The p-value is a permutation p-value (the rows of reference and window pooled and re-split at random,
sizes kept) with Besag-Clifford sequential stopping (:mod:`._montecarlo`). A permutation test is
exact whatever the features are: the random features change the power, never the false-alarm
rate. The reference is capped at ``max_reference`` patients (a seeded subsample) to bound the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chestxr.monitoring._montecarlo import sequential_mc_pvalue

DEFAULT_FEATURES = 64
DEFAULT_MAX_REFERENCE = 1000
#: pairs used for the median heuristic
_MEDIAN_PAIRS = 20_000


@dataclass(frozen=True, eq=False)
class EmbeddingReference:
    """The fixed parts of the test, from the reference sketch: standardisation ``mean``/``scale`` (d,),
    kernel width ``sigma``, random features ``weights`` (d, D) and ``offsets`` (D,), and the
    reference's features ``phi`` (n_ref, D)."""

    mean: np.ndarray
    scale: np.ndarray
    sigma: float
    weights: np.ndarray
    offsets: np.ndarray
    phi: np.ndarray

    def features(self, x: np.ndarray) -> np.ndarray:
        """(n, D) random Fourier features of sketches ``x`` (n, d); rows with NaN are the caller's to drop."""
        return _fourier((np.asarray(x, dtype=np.float64) - self.mean) / self.scale, self.weights, self.offsets)


def _fourier(z: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.sqrt(2.0 / offsets.size) * np.cos(z @ weights + offsets)


def prepare_embedding_reference(
    reference: np.ndarray,
    rng: np.random.Generator,
    *,
    n_features: int = DEFAULT_FEATURES,
    max_reference: int = DEFAULT_MAX_REFERENCE,
) -> EmbeddingReference | None:
    """The kernel and features from reference sketches (n, d) (one per patient, NaN rows dropped).
    None when fewer than 2 usable rows (the test is then undefined)."""
    x = np.asarray(reference, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if x.shape[0] < 2:
        return None
    if x.shape[0] > max_reference:
        x = x[np.sort(rng.choice(x.shape[0], max_reference, replace=False))]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    n = z.shape[0]
    i = rng.integers(0, n, _MEDIAN_PAIRS)
    j = rng.integers(0, n, _MEDIAN_PAIRS)
    keep = i != j
    dist = np.sqrt(((z[i[keep]] - z[j[keep]]) ** 2).sum(axis=1))
    sigma = float(np.median(dist)) if dist.size else 1.0
    if not math.isfinite(sigma) or sigma <= 0:
        sigma = 1.0
    weights = rng.normal(0.0, 1.0 / sigma, size=(z.shape[1], n_features))
    offsets = rng.uniform(0.0, 2.0 * np.pi, size=n_features)
    phi = _fourier(z, weights, offsets)
    return EmbeddingReference(mean=mean, scale=scale, sigma=sigma, weights=weights, offsets=offsets, phi=phi)


def mmd_test(
    reference: EmbeddingReference, window: np.ndarray, rng: np.random.Generator, *, b_max: int
) -> tuple[float, float, int, int]:
    """(MMD^2, p, n_window used, permutations drawn) for window sketches (m, d), one per patient.
    Rows with NaN are left out; NaN statistic and p when fewer than 2 rows remain."""
    w = np.asarray(window, dtype=np.float64)
    w = w[np.isfinite(w).all(axis=1)] if w.size else w.reshape(0, reference.mean.size)
    m = w.shape[0]
    if m < 2:
        return math.nan, math.nan, m, 0
    pooled = np.vstack([reference.phi, reference.features(w)])
    n_all = pooled.shape[0]
    n_ref = n_all - m
    total = pooled.sum(axis=0)

    def stat_from_window_sums(sums: np.ndarray) -> np.ndarray:
        diff = sums / m - (total - sums) / n_ref
        return (diff**2).sum(axis=-1)

    observed = float(stat_from_window_sums(pooled[n_ref:].sum(axis=0)))

    def draw(b: int, g: np.random.Generator) -> np.ndarray:
        # b random subsets of size m: the m smallest of n_all uniforms per row
        pick = np.argpartition(g.random((b, n_all)), m - 1, axis=1)[:, :m]
        indicator = np.zeros((b, n_all))
        np.put_along_axis(indicator, pick, 1.0, axis=1)
        return stat_from_window_sums(indicator @ pooled)

    p, used = sequential_mc_pvalue(observed, draw, rng, b_max=b_max)
    return observed, p, m, used
