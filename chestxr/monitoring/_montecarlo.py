"""Monte Carlo p-values that stop early when the answer is clear (Besag & Clifford 1991).

A permutation or conditional test draws statistics under the null and counts how many reach the
observed one. Besag & Clifford's sequential rule draws until ``h`` of them have (p = h / b, after b
draws) or until ``b_max`` draws (p = (g + 1) / (b_max + 1), g the count reached). Both are valid
p-values: P(p <= u) <= u under the null for every u. A window where nothing changed stops after
about h / p draws (tens), while a window that might alarm gets the full ``b_max`` resolution, which
must reach below the first Holm step alpha / m (the callers pass ``b_max >= 2 m / alpha``).

Draws are made in growing batches (vectorised), and the stopping index inside a batch is found
exactly, so the p-value is the sequential one, not a batched approximation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: draws that reach the observed statistic within this relative tolerance count as reaching it (a tie
#: in exact arithmetic must not become a miss through rounding: that would make the p-value too small).
TIE_TOLERANCE = 1e-9


def sequential_mc_pvalue(
    observed: float,
    draw: Callable[[int, np.random.Generator], np.ndarray],
    rng: np.random.Generator,
    *,
    b_max: int,
    h: int = 10,
    first_batch: int = 32,
) -> tuple[float, int]:
    """(p-value, draws made) of a one-sided Monte Carlo test that rejects for large statistics.

    ``draw(b, rng)`` returns b statistics drawn under the null, shape (b,). Stops at the draw where
    the ``h``-th statistic >= ``observed`` appears (p = h / draws) or after ``b_max`` draws."""
    if b_max < 1 or h < 1:
        raise ValueError(f"b_max and h must be >= 1, got {b_max}, {h}")
    cut = observed - TIE_TOLERANCE * max(1.0, abs(observed))
    done = 0
    reached = 0
    batch = max(1, first_batch)
    while done < b_max:
        k = min(batch, b_max - done)
        stats = np.asarray(draw(k, rng), dtype=np.float64)
        hits = np.cumsum(stats >= cut) + reached
        stop = np.flatnonzero(hits >= h)
        if stop.size:
            b = done + int(stop[0]) + 1
            return h / b, b
        reached = int(hits[-1])
        done += k
        batch *= 2
    return (reached + 1) / (b_max + 1), b_max
