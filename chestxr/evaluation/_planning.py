"""Plan before collecting: how many calibration and test cases a guaranteed rule needs.

For ``sensitivity:X`` (positives) or ``specificity:X`` (negatives) at joint ``confidence`` over ``findings``
guaranteed findings (Bonferroni: each finding at 1 - (1 - confidence) / findings):

* cases needed with 0, 1, 2, 5 failures (misses for sensitivity): the smallest n whose bound reaches X,
  with one image per patient (exact binomial) and with several images per patient (patients, the
  patient-level Bentkus bound, failures then counted as whole patients);
* with ``expected`` (the true value you expect, > X): the smallest n from which the calibration reaches
  the bound with probability >= ``power`` (80 %) -- the exact rule's chance saw-tooths with n, so n is
  the start of a run that stays above;
* the test cases the promise check needs to detect a drop of ``drop`` (0.1) with ``power`` at its
  strictest Holm step (alpha / findings).

``ppv:X`` / ``npv:X`` need the deployment prevalence range; the plan gives the other class's minimum
(to bound its error rate below what the range allows at all) and the limiting class's cases needed with
no failure for several sizes of the other class. Everything is computed, nothing is tabulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import binom

from chestxr.core import CalibrationError
from chestxr.evaluation._guarantee_rules import check_prevalence, limiting_class_needed, other_class_minimum
from chestxr.evaluation._patient_bounds import critical_failures, patients_needed
from chestxr.evaluation._promise_checks import patients_for_power

MISSES = (0, 1, 2, 5)


@dataclass(frozen=True)
class PlanRow:
    """Cases needed with ``failures`` failures: one image per patient (``single``), several (``clustered``)."""

    failures: int
    single: int
    clustered: int


@dataclass(frozen=True)
class Plan:
    """What a guaranteed rule needs; :meth:`describe` gives the lines ``chestxr plan`` prints."""

    rule: str
    kind: str
    target: float
    confidence: float
    findings: int
    per_finding_level: float
    rows: tuple[PlanRow, ...] = ()
    expected: float | None = None
    power: float = 0.8
    expected_needed: int | None = None
    check_drop: float = 0.1
    check_alpha: float = 0.05
    check_needed: int | None = None
    prevalence: tuple[float, float] | None = None
    predictive: tuple[tuple[int, int], ...] = ()
    other_minimum: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> list[str]:
        cls = "positives" if self.kind in ("sensitivity", "ppv") else "negatives"
        joint = (
            f"{_pct(self.confidence)} jointly over {self.findings} findings (Bonferroni: {_pct(self.per_finding_level)} each)"
            if self.findings > 1
            else f"{_pct(self.confidence)} confidence"
        )
        out = [f"rule {self.rule} at {joint}"]
        if self.kind in ("sensitivity", "specificity"):
            out.append(f"calibration {cls} needed (patients when they have several images):")
            out.append(
                f"  {'misses' if cls == 'positives' else 'false calls':>12}  one image each  several images per patient"
            )
            for r in self.rows:
                out.append(f"  {r.failures:>12}  {r.single:>14}  {r.clustered:>26}")
            if self.expected is not None:
                if self.expected_needed is None or self.expected_needed < 0:
                    out.append(
                        f"with a true {self.kind} of {self.expected:g}: the bound cannot be reached (it must be above {self.target:g})"
                    )
                else:
                    out.append(
                        f"with a true {self.kind} of {self.expected:g}: {self.expected_needed} {cls} give "
                        f"{_article(_pct(self.power))} chance to reach the bound (one image per patient)"
                    )
        else:
            lo, hi = self.prevalence or (math.nan, math.nan)
            other = "negative" if self.kind == "ppv" else "positive"
            out.append(
                f"over prevalence {lo:g}-{hi:g}: at least {self.other_minimum} {other} patients are needed at all;"
            )
            out.append(f"  {other + ' patients':>18}  {cls} needed with no misses (perfectly separated scores)")
            for n_other, need in self.predictive:
                out.append(f"  {n_other:>18}  {need if need >= 0 else 'impossible'}")
        if self.check_needed is not None and self.kind in ("sensitivity", "specificity"):
            out.append(
                f"test {cls} for the promise check to see a drop of {self.check_drop:g} (to "
                f"{self.target - self.check_drop:g}) with {_pct(self.power)} power at alpha "
                f"{self.check_alpha:g}/{self.findings} (Holm's strictest step): {self.check_needed}"
            )
        out += list(self.notes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "confidence": self.confidence,
            "findings": self.findings,
            "per_finding_level": self.per_finding_level,
            "needed": [
                {"failures": r.failures, "one_image_each": r.single, "several_images": r.clustered} for r in self.rows
            ],
            "expected": self.expected,
            "expected_needed": self.expected_needed,
            "power": self.power,
            "check_needed": self.check_needed,
            "check_drop": self.check_drop,
            "check_alpha": self.check_alpha,
            "prevalence": list(self.prevalence) if self.prevalence else None,
            "other_minimum": self.other_minimum,
            "predictive": [{"other": o, "needed": n} for o, n in self.predictive],
        }


def _article(word: str) -> str:
    """ "an 80%" / "a 90%" (the number as spoken)."""
    return ("an " if word.startswith(("8", "11", "18")) else "a ") + word


def plan_command(rule: str, confidence: float = 0.95, findings: int = 1) -> str:
    """The ``chestxr plan`` command line for a guaranteed rule, for refusal messages to name:
    ``plan_command("sensitivity:0.9", 0.95, 14)`` -> ``"chestxr plan --rule sensitivity:0.9 --confidence 0.95
    --findings 14"`` (ppv / npv get ``--prevalence LO:HI`` to fill in)."""
    text = str(rule).strip()
    cmd = f"chestxr plan --rule {text} --confidence {confidence:g}"
    if int(findings) > 1:
        cmd += f" --findings {int(findings)}"
    if text.split(":", 1)[0].strip().lower() in ("ppv", "npv"):
        cmd += " --prevalence LO:HI"
    return cmd


def _pct(x: float) -> str:
    s = f"{100 * x:.2f}".rstrip("0").rstrip(".")
    return f"{s}%"


def cases_needed(target: float, level: float, failures: int, single: bool = True, limit: int = 10_000_000) -> int:
    """Smallest n whose bound at ``level`` reaches ``target`` with ``failures`` failures (whole patients)."""
    if failures == 0:
        return patients_needed(target, level)
    gamma, alpha = 1.0 - target, 1.0 - level

    def ok(n: int) -> bool:
        return critical_failures(n, gamma, alpha, single) >= failures - 1e-9

    lo = patients_needed(target, level)
    hi = max(lo, 1)
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return -1
    # critical values grow with n (not strictly for the exact test): search down from hi
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    while lo > 1 and ok(lo - 1):  # guard against a non-monotone step
        lo -= 1
    return lo


def power_to_reach(n: int, target: float, expected: float, level: float) -> float:
    """P(the exact rule reaches the bound) with n cases, one image per patient, when the truth is ``expected``."""
    crit = critical_failures(n, 1.0 - target, 1.0 - level, True)
    if not math.isfinite(crit):
        return 0.0
    return float(binom.cdf(math.floor(crit + 1e-9), n, 1.0 - expected))


def expected_needed(target: float, expected: float, level: float, power: float = 0.8, limit: int = 1_000_000) -> int:
    """Smallest n from which :func:`power_to_reach` stays >= power (over the next n values); -1 if never."""
    if expected <= target:
        return -1
    n = patients_needed(target, level)
    while n <= limit:
        if power_to_reach(n, target, expected, level) >= power:
            window = range(n + 1, min(limit, n + max(20, n // 2)) + 1)
            if all(power_to_reach(j, target, expected, level) >= power for j in window):
                return n
        n = n + 1 if n < 500 else int(n * 1.005) + 1
    return -1


def plan(
    rule: str,
    *,
    confidence: float = 0.95,
    findings: int = 1,
    expected: float | None = None,
    power: float = 0.8,
    drop: float = 0.1,
    check_alpha: float = 0.05,
    prevalence: Any = None,
) -> Plan:
    """The :class:`Plan` for a guaranteed ``rule`` such as "sensitivity:0.9" (see the module docstring)."""
    text = str(rule).strip()
    kind, _, value = text.partition(":")
    kind = kind.strip().lower()
    if kind not in ("sensitivity", "specificity", "ppv", "npv") or "@" in value:
        raise CalibrationError(
            f"plan needs a guaranteed rule (sensitivity:X, specificity:X, ppv:X, npv:X), got {rule!r}"
        )
    try:
        target = float(value)
    except ValueError:
        raise CalibrationError(f"rule {rule!r}: {value!r} is not a number") from None
    if not 0.0 < target < 1.0:
        raise CalibrationError(f"rule {rule!r}: the target must be in (0, 1)")
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(findings) < 1:
        raise CalibrationError(f"findings must be >= 1, got {findings!r}")
    if expected is not None and not 0.0 < expected <= 1.0:
        raise CalibrationError(f"expected must be in (0, 1], got {expected!r}")
    findings = int(findings)
    level = 1.0 - (1.0 - confidence) / findings
    common = dict(
        rule=f"{kind}:{target:g}", kind=kind, target=target, confidence=confidence, findings=findings,
        per_finding_level=level, power=power, check_drop=drop, check_alpha=check_alpha,
    )  # fmt: skip
    if kind in ("sensitivity", "specificity"):
        rows = tuple(
            PlanRow(f, cases_needed(target, level, f, True), cases_needed(target, level, f, False)) for f in MISSES
        )
        exp_n = expected_needed(target, expected, level, power) if expected is not None else None
        check = patients_for_power(target, drop=drop, alpha=check_alpha / findings, power=power)
        return Plan(rows=rows, expected=expected, expected_needed=exp_n, check_needed=check, **common)  # type: ignore[arg-type]
    if prevalence is None:
        raise CalibrationError(f"{kind}:{target:g} needs the deployment prevalence range (--prevalence LO:HI)")
    prev = check_prevalence(prevalence)
    minimum = other_class_minimum(kind, target, prev, level)
    table = tuple(
        (minimum * m, limiting_class_needed(kind, target, prev, level, minimum * m)) for m in (1, 2, 5, 10, 20)
    )
    return Plan(prevalence=prev, predictive=table, other_minimum=minimum, **common)  # type: ignore[arg-type]
