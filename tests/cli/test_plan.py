"""``chestxr plan`` end to end: the printed numbers against the binomial computed here, JSON, refusals."""

from __future__ import annotations

import contextlib
import json

import pytest
from scipy.stats import binom

from chestxr.cli import main


def _brute(target: float, level: float, misses: int) -> int:
    n = misses + 1
    while binom.cdf(misses, n, 1 - target) > 1 - level:
        n += 1
    return n


def test_plan_prints_cases_needed_with_the_family_correction(capsys):
    assert main(["plan", "--rule", "sensitivity:0.9", "--findings", "14", "--expected", "0.95"]) == 0
    out = capsys.readouterr().out
    assert "rule sensitivity:0.9 at 95% jointly over 14 findings (Bonferroni: 99.64% each)" in out
    level = 1 - 0.05 / 14
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 5]
    assert [int(r[1]) for r in rows] == [_brute(0.9, level, m) for m in (0, 1, 2, 5)] == [54, 75, 93, 142]
    assert "with a true sensitivity of 0.95:" in out and "an 80% chance to reach the bound" in out
    assert "test positives for the promise check to see a drop of 0.1" in out and "alpha 0.05/14" in out


def test_plan_json_and_specificity(capsys):
    assert main(["plan", "--rule", "specificity:0.9", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rule"] == "specificity:0.9" and doc["findings"] == 1
    assert [r["one_image_each"] for r in doc["needed"]] == [_brute(0.9, 0.95, m) for m in (0, 1, 2, 5)]
    assert doc["needed"][0]["one_image_each"] == 29  # 0.9^29 < 0.05 <= 0.9^28
    n = doc["check_needed"]  # the evaluate check's 80 % power to see 0.9 -> 0.8, alpha 0.05
    crit = max(c for c in range(n + 1) if binom.cdf(c, n, 0.9) <= 0.05)
    assert binom.cdf(crit, n, 0.8) >= 0.8


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--rule", "ppv:0.9"], "--prevalence LO:HI"),
        (["--rule", "youden"], "guaranteed rule"),
        (["--rule", "npv:0.9", "--prevalence", "0.3"], "LO:HI"),
    ],
)
def test_plan_refuses_in_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) if "--prevalence" in argv else contextlib.nullcontext():  # argparse: exit 2
        assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("chestxr plan: error: ")  # one line naming what to give


def test_ppv_plan_with_a_range(capsys):
    assert main(["plan", "--rule", "ppv:0.8", "--prevalence", "0.05:0.2"]) == 0
    assert "over prevalence 0.05-0.2: at least" in capsys.readouterr().out
