"""One-sided bounds on a rate with the PATIENT as the independent unit, however many images each has.

The estimand is image-level, as everywhere in chestxr: sensitivity = detected positive images / positive
images (likewise specificity with negatives). What is observed per patient i (of k, of the class counted)
is ``Y_i`` = the FRACTION of that patient's images of the class that fail (a miss for sensitivity, a false
call for specificity), a number in [0, 1] whatever the number of images m_i and however they are
correlated. The test statistic is ``S = sum_i Y_i``.

Two cases, decided by the numbers of images per patient (conditioned on: never estimated, never snooped):

* every patient has one image of the class (``single``): Y_i are 0/1 and S is Binomial(k, gamma) for a
  failure rate gamma. The bound is the exact binomial tail, i.e. Clopper-Pearson: unchanged from before
  (29 patients with no failure for 0.9 at 95 %).
* otherwise: each Y_i in [0, 1] with mean gamma_i is dominated in convex order by Bernoulli(gamma_i) (the
  worst within-patient correlation is "all of a patient's images fail together"), sums of independent
  variables keep that order, and a sum of Bernoulli(gamma_i) is dominated by Binomial(k, mean gamma)
  (Hoeffding 1956). For every h > y, 1{S <= y} <= (h - S)_+ / (h - y), a convex function of S, so

      P(S <= y) <= min_h E[(h - T)_+] / (h - y),   T ~ Binomial(k, gamma)

  (Bentkus 2004, "On Hoeffding's inequalities", Ann. Probab. 32: the optimal bound of its kind for
  an indicator; it equals the binomial tail at y = 0, so zero failures need exactly as many patients as
  the exact case). The minimum is over integers h in (y, k + 1]; the critical value has a closed form,
  ``max_h (h - E(h - T)_+ / alpha)``.

What the bound covers (stated in every record): conditional on the numbers of images per patient, the
mean over patients of each patient's expected failure fraction. When the number of images a patient has
does not change the chance that each of their images fails (non-informative cluster size), that is the
image-level rate. No design effect is estimated and nothing is clamped. Without an assumption of that
kind no bound on the image-level rate can be useful with a few patients holding many images (a patient
with 40 of 500 positive images carries 8 % of the estimand and is one observation).

Arrays: ``fractions`` (k,) float in [0, 1] (failure or success fractions per patient), ``sizes`` (k,) int.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from chestxr.core import ChestXRError

#: method names written into records
EXACT = "clopper-pearson"
CONVEX = "bentkus-patient"
METHOD_TEXT = {
    EXACT: "exact binomial (Clopper-Pearson), one image per patient",
    CONVEX: "Bentkus convex-order bound on per-patient fractions (any number of images and correlation)",
}
_TOL = 1e-9


class BoundError(ChestXRError, ValueError):
    """Inputs to a patient-level bound are not valid (level outside (0, 1), sums outside [0, k])."""


#: a compact, non-identifying per-patient tally: ((successes k, images m, number of patients), ...), sorted
Tally = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class PatientCounts:
    """Per-patient summary of one class at one threshold.

    k: patients with at least one image of the class; images: their images; successes: sum over patients
    of the success fraction (detected share of a patient's positives for sensitivity); image_successes:
    successes counted per image; single: every patient has one image of the class."""

    k: int
    images: int
    successes: float
    image_successes: int
    single: bool
    #: the per-patient tally ((successes, images, patients), ...) when some patient has several images, else
    #: None (:func:`patient_tally`); not compared
    tally: Tally | None = field(default=None, compare=False)

    @property
    def failures(self) -> float:
        return self.k - self.successes

    @property
    def method(self) -> str:
        return EXACT if self.single else CONVEX

    @property
    def patient_rate(self) -> float:
        """Mean over patients of the success fraction (NaN when k = 0)."""
        return self.successes / self.k if self.k else math.nan


def patient_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """(index (n,) int into 0..k-1, k) for patient ids (n,); every row its own patient when None."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups).reshape(-1)
    if g.size != n:
        raise BoundError(f"groups must have one patient id per image ({n}), got {g.size}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    keys = g if g.dtype.kind in "iub" else g.astype(str)  # ids as text unless plain integers
    _, inv = np.unique(keys, return_inverse=True)
    return inv.reshape(-1), int(inv.max()) + 1


def patient_counts(success: Any, groups: Any = None) -> PatientCounts:
    """Summarise 0/1 outcomes (n,) of one class's images, clustered by ``groups`` (n,) patient ids."""
    ok = np.asarray(success, dtype=bool).reshape(-1)
    inv, k = patient_index(groups, ok.size)
    if k == 0:
        return PatientCounts(0, 0, 0.0, 0, True)
    sizes = np.bincount(inv, minlength=k)
    got = np.bincount(inv, weights=ok.astype(np.float64), minlength=k)
    single = bool(sizes.max() == 1)
    tally = None if single else _tally(got.astype(np.int64), sizes)
    return PatientCounts(k, int(ok.size), float(np.sum(got / sizes)), int(ok.sum()), single, tally)


def patient_tally(success: Any, groups: Any = None) -> Tally | None:
    """The per-patient tally of 0/1 outcomes (n,) of one class's images clustered by ``groups``: the multiset
    of (successes k, images m) pairs over patients as ((k, m, number of patients), ...), sorted; counts only, no
    identifier. None when every patient has one image (the image counts then are the patient counts) or
    ``groups`` is None."""
    if groups is None:
        return None
    return patient_counts(success, groups).tally


def _tally(got: np.ndarray, sizes: np.ndarray) -> Tally:
    pairs, n = np.unique(np.stack([got, sizes], axis=1), axis=0, return_counts=True)
    return tuple((int(a), int(b), int(c)) for (a, b), c in zip(pairs.tolist(), n.tolist()))


def tally_fractions(tally: Tally) -> np.ndarray:
    """The per-patient success fractions k / m a tally stands for, (patients,) float, in tally order."""
    if not tally:
        return np.zeros(0, dtype=np.float64)
    return np.repeat([k / m for k, m, _ in tally], [c for _, _, c in tally]).astype(np.float64)


def binary_fractions(successes: int, n: int) -> np.ndarray:
    """0/1 fractions for n one-image patients, ``successes`` of them successes."""
    return np.concatenate([np.ones(int(successes)), np.zeros(int(n) - int(successes))])


def _check_level(a: float, what: str = "alpha") -> None:
    if not 0.0 < a < 1.0:
        raise BoundError(f"{what} must be in (0, 1), got {a!r}")


@lru_cache(maxsize=4096)
def _hinge_means(k: int, gamma: float) -> np.ndarray:
    """E[(h - T)_+] for h = 0..k+1, T ~ Binomial(k, gamma): (k + 2,) float."""
    from scipy.stats import binom

    pmf = binom.pmf(np.arange(k + 1), k, gamma)
    cdf = np.cumsum(pmf)
    first = np.cumsum(np.arange(k + 1) * pmf)
    h = np.arange(k + 2, dtype=np.float64)
    below = np.concatenate([[0.0], cdf])  # P(T <= h - 1)
    mean_below = np.concatenate([[0.0], first])  # E[T; T <= h - 1]
    out = h * below - mean_below
    out.setflags(write=False)
    return out


def failure_tail(y: float, k: int, gamma: float, single: bool) -> float:
    """Upper bound on P(S <= y) when each of k patients' failure fractions has mean gamma (S their sum).

    single: the exact binomial CDF; otherwise the Bentkus bound (module docstring). 1 when k = 0."""
    if k <= 0:
        return 1.0
    if y < -_TOL:
        return 0.0
    gamma = min(max(float(gamma), 0.0), 1.0)
    if single:
        from scipy.special import bdtr

        return float(bdtr(math.floor(y + _TOL), k, gamma))
    e = _hinge_means(k, gamma)
    h = np.arange(math.floor(y + _TOL) + 1, k + 2)
    if h.size == 0:
        return 1.0
    return float(min(1.0, np.min(e[h] / (h - y))))


def critical_failures(k: int, gamma: float, alpha: float, single: bool) -> float:
    """The largest failure sum y with failure_tail(y) <= alpha (reject "rate of failure >= gamma" when
    S <= y); -inf when even y = 0 is not enough (too few patients). Cached: a pure function of its arguments."""
    _check_level(alpha)
    return _critical(int(k), float(gamma), float(alpha), bool(single))


@lru_cache(maxsize=65536)
def _critical(k: int, gamma: float, alpha: float, single: bool) -> float:
    if k <= 0 or gamma <= 0.0:
        return -math.inf
    if single:
        from scipy.stats import binom

        c = int(binom.ppf(alpha, k, gamma))  # smallest c with cdf(c) >= alpha
        while c >= 0 and binom.cdf(c, k, gamma) > alpha:
            c -= 1
        return float(c) if c >= 0 else -math.inf
    e = _hinge_means(k, min(gamma, 1.0))
    h = np.arange(1, k + 2, dtype=np.float64)
    y = float(np.max(h - e[1:] / alpha))
    return y if y >= -_TOL else -math.inf


def success_lower_bound(counts: PatientCounts, confidence: float) -> float:
    """One-sided lower confidence bound at ``confidence`` on the success rate (module docstring);
    NaN when k = 0. Equals the Clopper-Pearson bound when every patient has one image."""
    _check_level(confidence, "confidence")
    k = counts.k
    if k == 0:
        return math.nan
    s = min(max(counts.successes, 0.0), float(k))
    alpha = 1.0 - confidence
    if counts.single:
        if s <= 0:
            return 0.0
        from scipy.special import betaincinv

        return float(betaincinv(s, k - s + 1.0, alpha))
    y = k - s  # failure sum
    # the failure rate's upper bound: the largest gamma whose tail at y is still above alpha
    if failure_tail(y, k, 1.0, False) > alpha:
        return 0.0
    lo = min(1.0, y / k)
    if failure_tail(y, k, lo, False) <= alpha:  # cannot happen for a proper bound; be safe
        return 1.0 - lo
    from scipy.optimize import brentq

    g = brentq(lambda x: failure_tail(y, k, x, False) - alpha, lo, 1.0, xtol=1e-10)
    return float(max(0.0, 1.0 - g))


def failure_rate_upper(k: int, failures: float, confidence: float, single: bool) -> float:
    """Upper confidence bound on the failure rate from a failure sum over k patients (cached)."""
    return 1.0 - _lower_cached(int(k), float(k - failures), float(confidence), bool(single))


@lru_cache(maxsize=65536)
def _lower_cached(k: int, successes: float, confidence: float, single: bool) -> float:
    return success_lower_bound(PatientCounts(k, k, successes, int(round(successes)), single), confidence)


def success_upper_bound(counts: PatientCounts, confidence: float) -> float:
    """One-sided upper bound on the success rate: 1 - the lower bound on the failure rate."""
    flipped = PatientCounts(
        counts.k, counts.images, counts.failures, counts.images - counts.image_successes, counts.single
    )
    lb = success_lower_bound(flipped, confidence)
    return 1.0 - lb if math.isfinite(lb) else math.nan


def two_sided_interval(counts: PatientCounts, level: float) -> tuple[float, float]:
    """(lo, hi) at ``level``: each side one-sided at (1 + level) / 2; (NaN, NaN) when k = 0."""
    _check_level(level, "level")
    c = (1.0 + level) / 2.0
    return success_lower_bound(counts, c), success_upper_bound(counts, c)


def promise_p_value(counts: PatientCounts, target: float) -> float:
    """p-value of "success rate >= target" (small: contradicted). Exact binomial with one image per
    patient; the Bentkus bound otherwise. NaN when k = 0; 1 when target <= 0."""
    if counts.k == 0:
        return math.nan
    if target <= 0.0:
        return 1.0
    return failure_tail(counts.successes, counts.k, target, counts.single)


def patients_needed(target: float, confidence: float) -> int:
    """Patients of the class needed, all without failure, for a lower bound >= target at ``confidence``
    (the same with one or several images per patient): ceil(log(1 - c) / log(target)); 0 for target 0."""
    _check_level(confidence, "confidence")
    if target <= 0.0:
        return 0
    if target >= 1.0:
        return 2**31 - 1
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(target) - 1e-12))
    while target**n > 1.0 - confidence:  # rounding at the boundary
        n += 1
    while n > 1 and target ** (n - 1) <= 1.0 - confidence:
        n -= 1
    return int(n)
