"""The key cells of experiments/guarantee_simulation.py (binormal scores, analytic truth), 1,000 seeded
replications each: every guarantee keeps its coverage (>= nominal - 2 Monte-Carlo s.e.) without being
vacuous (refusals and excess over X bounded), including several images per patient with correlation 0.7,
14 findings jointly and PPV/NPV over a prevalence range. The README table is the same code at 10,000."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPS = 1000


def _simulation():
    name = "guarantee_simulation"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "guarantee_simulation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


GOAL = 0.95 - 2 * math.sqrt(0.95 * 0.05 / REPS)  # 0.936


@pytest.mark.parametrize(
    "cell, max_refused, max_excess",
    [
        ("independent-100", 0.01, 0.07),
        ("clustered-120-r0.7", 0.05, 0.08),
        ("joint-14", 0.15, 0.08),
        ("ppv-0.8", 0.10, 0.20),
        ("npv-0.95", 0.05, 0.05),
    ],
)
def test_key_cells_keep_their_coverage(cell, max_refused, max_excess):
    res = _simulation().run_cell(cell, REPS, seed=20240, previous=False)
    assert res.reps == REPS
    assert res.coverage >= GOAL, (cell, res.coverage)
    assert res.refused <= max_refused, (cell, res.refused)
    assert 0.0 < res.excess <= max_excess, (cell, res.excess)
    assert res.meets_goal
    if cell == "joint-14":
        assert res.extra["family_size"] == pytest.approx(14.0)
    if cell in ("ppv-0.8", "npv-0.95"):  # the promise holds at both prevalences of use, not only on average
        assert res.extra["holds_at_lo"] >= GOAL and res.extra["holds_at_hi"] >= GOAL


def test_the_previous_clustered_rule_fails_the_same_cell():
    """The contrast column is real: the design-effect rule the package used before covers < 0.9 at
    correlation 0.7 (the audit measured 0.853), on the same draws as the new rule (400 replications)."""
    res = _simulation().run_cell("clustered-120-r0.7", 400, seed=20240, previous=True)
    assert res.previous < 0.9 and res.coverage >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / 400)
