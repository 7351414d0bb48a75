"""Planning (chestxr/evaluation/_planning.py): every number against a direct computation from the binomial,
and the powers against simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from chestxr.core import CalibrationError
from chestxr.evaluation._planning import cases_needed, plan, power_to_reach


def _brute_needed(target: float, level: float, misses: int) -> int:
    """Smallest n with P(Binomial(n, 1 - target) <= misses) <= 1 - level (the exact rule's requirement)."""
    n = misses + 1
    while binom.cdf(misses, n, 1 - target) > 1 - level:
        n += 1
    return n


@pytest.mark.parametrize("rule, findings", [("sensitivity:0.9", 1), ("sensitivity:0.9", 14), ("specificity:0.8", 4)])
def test_cases_needed_match_the_binomial(rule, findings):
    p = plan(rule, findings=findings)
    target = float(rule.split(":")[1])
    level = 1 - 0.05 / findings
    assert p.per_finding_level == pytest.approx(level)
    for row in p.rows:
        assert row.single == _brute_needed(target, level, row.failures)
        assert row.clustered >= row.single  # the patient-level bound needs at least as many
    if rule == "sensitivity:0.9" and findings == 1:
        assert [r.single for r in p.rows] == [29, 46, 61, 103]
    if findings == 14:
        assert p.rows[0].single == math.ceil(math.log(0.05 / 14) / math.log(0.9))
    text = "\n".join(p.describe())
    assert "Bonferroni" in text if findings > 1 else "jointly" not in text


def test_expected_positives_for_80_percent_power_by_simulation():
    p = plan("sensitivity:0.9", expected=0.95)
    n = p.expected_needed
    assert n is not None and n > 29
    assert power_to_reach(n, 0.9, 0.95, 0.95) >= 0.8
    # simulation with analytic truth: n positives, true sensitivity 0.95, the exact rule reaches 0.9
    rng = np.random.default_rng(0)
    misses = rng.binomial(n, 0.05, size=20000)
    crit = max(c for c in range(n) if binom.cdf(c, n, 0.1) <= 0.05)
    assert np.mean(misses <= crit) >= 0.8 - 0.01
    assert plan("sensitivity:0.9", expected=0.9).expected_needed == -1  # the truth must exceed the bound


def test_promise_check_positives_for_80_percent_power():
    p = plan("sensitivity:0.9")
    n = p.check_needed
    crit = max(c for c in range(n + 1) if binom.cdf(c, n, 0.9) <= 0.05)
    assert binom.cdf(crit, n, 0.8) >= 0.8
    p14 = plan("sensitivity:0.9", findings=14)
    assert p14.check_needed > n  # Holm's strictest step is alpha / 14
    assert "alpha 0.05/14" in "\n".join(p14.describe())


def test_ppv_plan_needs_a_range_and_gives_the_other_class_minimum():
    with pytest.raises(CalibrationError, match="--prevalence"):
        plan("ppv:0.8")
    p = plan("ppv:0.8", prevalence=(0.05, 0.2))
    assert p.other_minimum is not None and p.other_minimum > 76  # the FP rate must be shown below 1/76
    needs = [n for _, n in p.predictive]
    assert needs == sorted(needs, reverse=True) and needs[-1] >= 1
    assert "negative patients" in "\n".join(p.describe())


@pytest.mark.parametrize("bad", ["youden", "sensitivity:0.9@point", "sensitivity:x", "sensitivity:1.5"])
def test_plan_refuses_what_is_not_a_guaranteed_rule(bad):
    with pytest.raises(CalibrationError):
        plan(bad)
    assert cases_needed(0.9, 0.95, 0) == 29


def test_zero_misses_analytic_and_the_public_paths():
    """0 misses, sensitivity 0.9 at 95 %: n = 29 because 0.9^29 < 0.05 <= 0.9^28; with 14 findings (Bonferroni,
    0.05 / 14 each) n = 54 because 0.9^54 < 0.05 / 14 <= 0.9^53. The same Plan from chestxr.calibration.plan."""
    from chestxr.calibration import Plan, plan_command
    from chestxr.calibration import plan as public_plan

    assert 0.9**29 < 0.05 <= 0.9**28 and 0.9**54 < 0.05 / 14 <= 0.9**53
    p = public_plan("sensitivity:0.9", confidence=0.95, findings=14)
    assert isinstance(p, Plan) and p.rows[0].single == 54 and plan("sensitivity:0.9").rows[0].single == 29
    spec = public_plan("specificity:0.95", findings=3)
    n0 = next(n for n in range(1, 1000) if 0.95**n <= 0.05 / 3)
    assert spec.rows[0].single == n0 and "negatives" in "\n".join(spec.describe())
    assert (
        plan_command("sensitivity:0.9", 0.95, 14)
        == "chestxr plan --rule sensitivity:0.9 --confidence 0.95 --findings 14"
    )
    assert plan_command("specificity:0.8", 0.9, 1) == "chestxr plan --rule specificity:0.8 --confidence 0.9"
    assert plan_command("ppv:0.9", 0.95, 2).endswith("--findings 2 --prevalence LO:HI")


def test_a_refusal_names_the_plan_command_that_sizes_the_collection(capsys):
    """An insufficient_data refusal says how to plan: the exact `chestxr plan` line (family size included),
    and that line runs and agrees with the refusal's patients needed."""
    import warnings

    from chestxr.cli import main as cli_main
    from chestxr.evaluation import fit_thresholds

    rng = np.random.default_rng(0)
    y = np.zeros((40, 2))
    y[:5, 0] = 1
    y[:30, 1] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refused, _ = fit_thresholds(y, rng.random((40, 2)), method="sensitivity:0.9", findings=["A", "B"])
    assert refused.status == "insufficient_data"
    cmd = "chestxr plan --rule sensitivity:0.9 --confidence 0.95 --findings 2"
    assert f"`{cmd}`" in refused.note
    assert cli_main(cmd.split()[1:] + ["--json"]) == 0
    assert '"rule"' in capsys.readouterr().out
