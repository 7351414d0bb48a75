"""What a test split can say about the operating points stored at calibration (``evaluate``'s checks, issue 22).

Two kinds of stored operating point, two questions, two families:

* A GUARANTEED promise (thresholds.json ``status: guaranteed``: "sensitivity >= X", "specificity >= X",
  "ppv >= X", "npv >= X") is tested one-sided, H0: metric >= X, with the patient as the unit: the exact
  binomial tail P(Binomial(k, X) <= successes) when every patient has one image of the class (or no patient
  ids were given: images are then the unit, treated as independent), the patient-level Bentkus bound on the
  per-patient success fractions otherwise (:func:`chestxr.evaluation._patient_bounds.promise_p_value`; valid
  however many images each patient has and however correlated). Across the guaranteed promises checked,
  rejections use Holm's step-down at ``alpha``, so the chance that any promise which is in fact met is
  reported "contradicted" is <= alpha. A promise not rejected reads "not contradicted", never "holds", with the
  test's power to detect a drop of 0.1 on the patients it had (at Holm's strictest level alpha / m):
  ``not contradicted (p = 0.41; this test had 23% power to detect a drop of 0.1 with 12 positives)``.
* A POINT rule (youden, f1, cost, fixed, ``@point``) promised nothing: its sensitivity and specificity are
  point estimates chosen on the calibration data (optimistic). The check shows the calibration estimate beside
  the test value and says the operating point MOVED only when a two-sided exact two-sample test of calibration
  vs test rejects after Holm over every point test made (two per finding). A moved point is information, shown
  in a neutral colour, not a failure. The patient is the unit: when either split has several images per patient
  of the class (the calibration record's ``patient_tally``, the test split's patient ids), a permutation test of
  the patients' mean success fractions (:func:`two_sample_test`, seeded, deterministic; exact in level when the
  two splits' patients are exchangeable under "not moved", however many images each has and however
  correlated); with one image per patient on both, the exact Boschloo test (Fisher for large tables). A record
  without a tally (written before it was stored) keeps the image-level exact test, said so with its caveat.

Findings whose calibration refused a threshold (insufficient data, unreachable) or that have none are counted
and listed (:func:`promise_summary`), never dropped.

Records: :func:`check_promise` (one finding, a family of one) and :func:`check_promises` (every finding, the
two Holm families); :func:`finding_counts` gives the per-patient counts a check needs.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from chestxr.evaluation._methods import TARGETED
from chestxr.evaluation._operating_point import OperatingPoint
from chestxr.evaluation._patient_bounds import (
    PatientCounts,
    binary_fractions,
    patient_counts,
    promise_p_value,
    tally_fractions,
)
from chestxr.evaluation._promise_checks import DEFAULT_DROP, holm, promise_power, two_sample_test

DEFAULT_ALPHA = 0.05

#: ``state`` of a check record
STATES = ("not_contradicted", "contradicted", "moved", "not_moved", "not_tested", "not_checked", "refused")
#: the metric, its successes / denominator in words
_CLASS = {"sensitivity": "positives", "specificity": "negatives", "ppv": "positive calls", "npv": "negative calls"}
#: the unit counted when patients are the unit
_PATIENTS = {
    "sensitivity": "positive patients",
    "specificity": "negative patients",
    "ppv": "patients with positive calls",
    "npv": "patients with negative calls",
}


def binomial_tail_below(x: float, n: float, p: float) -> float:
    """P(Binomial(n, p) <= x), extended to real x, n by the regularised incomplete beta function.

    = I_{1-p}(n - x, x + 1); 1 when x >= n; NaN when n = 0."""
    from scipy.special import betainc

    if n <= 0:
        return math.nan
    if x >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(betainc(n - x, x + 1.0, 1.0 - p))


def finding_counts(y_true: Any, called: Any, groups: Any = None) -> dict[str, PatientCounts]:
    """Per-patient counts of one finding at its threshold: {"sensitivity": positives (success = called
    positive), "specificity": negatives (success = called negative), "ppv": positive calls (success = truly
    positive), "npv": negative calls}. y_true, called: (n,) bool; groups (n,) patient ids or None (every image
    its own patient)."""
    y = np.asarray(y_true, dtype=bool).reshape(-1)
    c = np.asarray(called, dtype=bool).reshape(-1)
    g = None if groups is None else np.asarray(groups).reshape(-1)

    def part(rows: np.ndarray, success: np.ndarray) -> PatientCounts:
        return patient_counts(success[rows], None if g is None else g[rows])

    return {
        "sensitivity": part(y, c),
        "specificity": part(~y, ~c),
        "ppv": part(c, y),
        "npv": part(~c, ~y),
    }


def _image_counts(achieved: Mapping[str, Any], key: str) -> Optional[PatientCounts]:
    """Counts from an evaluation record's confusion counts, every image its own patient (no ids known)."""
    tp, fp, tn, fn = (_float(achieved.get(k)) for k in ("tp", "fp", "tn", "fn"))
    x, n = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }[key]
    if not (math.isfinite(x) and math.isfinite(n)):
        value, n = _float(achieved.get(key)), _float(achieved.get(f"{key}_n"))
        if not (math.isfinite(value) and math.isfinite(n)):
            return None
        x = round(value * n)
    return PatientCounts(int(n), int(n), float(x), int(x), True)


def _unit(counts: PatientCounts, with_ids: bool, key: str) -> str:
    cls = _CLASS[key]
    if not with_ids:
        return f"{counts.k} {cls} (images; no patient ids, treated as independent)"
    if counts.single:
        return f"{counts.k} {cls} (patients, one image each)"
    return f"{counts.k} patients with {cls} ({counts.images} images; per-patient fractions)"


def check_bound(
    achieved: Mapping[str, Any],
    key: str,
    bound: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    counts: Optional[PatientCounts] = None,
    with_ids: bool = False,
    family_size: int = 1,
    drop: float = DEFAULT_DROP,
) -> dict[str, Any]:
    """One guaranteed bound "``key`` >= ``bound``" on a test split, before any family adjustment.

    Returns {metric, promised, achieved, k, successes, images, unit, test, p_value, power, power_alpha,
    drop, alpha}; p_value NaN (and unit "not measurable") when the split has no case of the class."""
    c = counts if counts is not None else _image_counts(achieved, key)
    a = _float(achieved.get(key))
    out: dict[str, Any] = {"metric": key, "promised": bound, "achieved": a, "alpha": alpha, "drop": drop}
    if c is None or c.k == 0:
        out.update(k=0, successes=None, images=0, unit=f"no {_CLASS[key]} in this split", test=None, single=True)
        out["noun"] = _CLASS[key]
        out.update(p_value=math.nan, power=math.nan, power_alpha=alpha / max(1, family_size))
        return out
    power_alpha = alpha / max(1, family_size)
    out.update(
        k=c.k,
        successes=c.successes,
        images=c.images,
        single=c.single,
        patient_rate=c.patient_rate,
        unit=_unit(c, with_ids, key),
        noun=_PATIENTS[key] if with_ids else _CLASS[key],
        test="one-sided exact binomial" if c.single else "one-sided Bentkus bound on per-patient fractions",
        p_value=promise_p_value(c, bound),
        power=promise_power(c.k, bound, drop=drop, alpha=power_alpha, single=c.single),
        power_alpha=power_alpha,
    )
    return out


def check_promise(
    achieved: Mapping[str, Any],
    promised: OperatingPoint,
    *,
    alpha: float = DEFAULT_ALPHA,
    counts: Optional[Mapping[str, PatientCounts]] = None,
    with_ids: Optional[bool] = None,
) -> dict[str, Any] | None:
    """Check one finding's stored operating point (``promised``) against its evaluation record (``achieved``,
    from :func:`chestxr.evaluation.evaluate_predictions`), as a family of one (:func:`check_promises` adjusts
    across findings). ``counts``: :func:`finding_counts` of the test split (else image counts from
    ``achieved``).

    Returns None when nothing was stored, else a record with kind ("guarantee" | "point" | "refused" |
    "not_calibrated"), state (:data:`STATES`), flagged (contradicted / moved after Holm; None when nothing was
    tested), verdict (short words), detail (one line), tests, alpha, and for a guarantee metric, promised,
    p_value, p_holm, power, unit."""
    rec = _raw_check(achieved, promised, alpha=alpha, counts=counts, with_ids=counts is not None and bool(with_ids))
    if rec is None:
        return None
    _finalize(rec, family=_FAMILY_SIZES_ONE)
    return rec


_FAMILY_SIZES_ONE: dict[str, int] = {}


def check_promises(records: Mapping[str, Optional[dict[str, Any]]], *, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Apply the two Holm families across findings, in place, to records from :func:`check_promise`
    ({finding: record or None}); returns :func:`promise_summary` of the result."""
    guarantee = [(name, t) for name, r in records.items() if r and r["kind"] == "guarantee" for t in r["tests"]]
    point = [(name, t) for name, r in records.items() if r and r["kind"] == "point" for t in r["tests"]]
    sizes = {}
    for family, items in (("guarantee", guarantee), ("point", point)):
        result = holm([t["p_value"] for _, t in items], alpha)
        sizes[family] = result.m
        for (_, t), adj, rej in zip(items, result.adjusted.tolist(), result.rejected.tolist()):
            t["p_holm"], t["rejected"] = adj, bool(rej)
    for r in records.values():
        if r:
            _finalize(r, family=sizes, adjusted=True)
    return promise_summary(records, alpha=alpha)


def promise_summary(records: Mapping[str, Optional[dict[str, Any]]], *, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """{alpha, guarantees_checked, contradicted, not_contradicted, point_checked, moved, not_tested, refused,
    not_calibrated, not_checked (each a list of findings), no_record, text (one paragraph)}."""
    out: dict[str, Any] = {"alpha": alpha}
    by_state: dict[str, list[str]] = {s: [] for s in STATES}
    kinds: dict[str, list[str]] = {"guarantee": [], "point": [], "refused": [], "not_calibrated": []}
    none = []
    for name, r in records.items():
        if not r:
            none.append(name)
            continue
        by_state[r["state"]].append(name)
        kinds.setdefault(r["kind"], []).append(name)
    out.update(
        guarantees=kinds["guarantee"],
        contradicted=by_state["contradicted"],
        not_contradicted=by_state["not_contradicted"],
        not_checked=by_state["not_checked"],
        point_rules=kinds["point"],
        moved=by_state["moved"],
        not_moved=by_state["not_moved"],
        not_tested=by_state["not_tested"],
        refused=kinds["refused"],
        not_calibrated=kinds["not_calibrated"],
        no_record=none,
    )
    parts = []
    g = kinds["guarantee"]
    if g:
        parts.append(
            f"{len(g)} guaranteed promise{'s' if len(g) != 1 else ''}: {len(by_state['contradicted'])} contradicted, "
            f"{len(by_state['not_contradicted'])} not contradicted"
            + (f", {len(by_state['not_checked'])} not checked" if by_state["not_checked"] else "")
            + f" (one-sided tests, patients as the unit, Holm across the {len(g)} at alpha {alpha:g})"
        )
    pr = kinds["point"]
    if pr:
        parts.append(
            f"{len(pr)} point rule{'s' if len(pr) != 1 else ''} (not promises): {len(by_state['moved'])} operating "
            f"point{'s' if len(by_state['moved']) != 1 else ''} moved"
            + (f", {len(by_state['not_tested'])} without calibration counts" if by_state["not_tested"] else "")
            + f" (two-sided two-sample tests, {_point_units(records, pr)}, Holm at alpha {alpha:g})"
        )
    if kinds["refused"]:
        parts.append(f"refused at calibration (no threshold): {', '.join(kinds['refused'])}")
    if kinds["not_calibrated"]:
        parts.append(f"not calibrated: {', '.join(kinds['not_calibrated'])}")
    if none:
        parts.append(f"no stored operating point: {', '.join(none)}")
    out["text"] = "; ".join(parts) + "." if parts else "no operating points stored."
    return out


# ----------------------------------------------------------------------------- one finding


def _raw_check(
    achieved: Mapping[str, Any],
    promised: OperatingPoint,
    *,
    alpha: float,
    counts: Optional[Mapping[str, PatientCounts]],
    with_ids: bool,
) -> dict[str, Any] | None:
    status = promised.status
    method = promised.method or ""
    kind = method.split(":", 1)[0].strip().lower() if method else ""
    base: dict[str, Any] = {"method": method or None, "status": status, "alpha": alpha}
    base.update(sensitivity=None, specificity=None, false_alarm_rate=_FALSE_ALARM.format(alpha=alpha))
    if status in ("insufficient_data", "unreachable"):
        base.update(kind="refused", guarantee=False, tests=[], state="refused", flagged=None)
        base["verdict"] = f"refused at calibration ({status}): no threshold"
        base["detail"] = (
            f"no threshold ({status}): {promised.note or ''} (n_pos {promised.n_pos}, n_needed {promised.n_needed})"
        ).strip()
        return base
    used = achieved.get("threshold")  # the threshold this split was called at (the run's current one)
    if used is not None and not math.isfinite(_float(used)):
        base.update(kind="not_calibrated", guarantee=False, tests=[], state="not_checked", flagged=None)
        base["verdict"] = "not calibrated: no threshold"
        base["detail"] = f"not calibrated ({status}): {promised.note or 'no threshold stored'}"
        return base
    if status == "guaranteed" and kind in TARGETED:
        bound = _float(promised.target)
        c = counts.get(kind) if counts is not None else None
        test = check_bound(achieved, kind, bound, alpha=alpha, counts=c, with_ids=with_ids)
        conf = promised.confidence if math.isfinite(promised.confidence) else 0.95
        base.update(kind="guarantee", guarantee=True, metric=kind, promised=bound, confidence=conf, tests=[test])
        base["promised_" + kind] = bound
        if kind in ("sensitivity", "specificity"):
            base[kind] = bound
        prev = _prevalence_range(promised)
        if kind in ("ppv", "npv"):
            p = _float(achieved.get("prevalence"))
            base["prevalence_range"] = list(prev) if prev else None
            if math.isfinite(p):  # a predictive value depends on the prevalence: name this split's
                test["unit"] += f", at this split's prevalence {p:.3f}"
            if prev and math.isfinite(p) and not prev[0] - 1e-12 <= p <= prev[1] + 1e-12:
                test["p_value"] = math.nan
                test["unit"] = f"this split's prevalence {p:.3f} is outside the promised range {prev[0]:g}-{prev[1]:g}"
        return base
    tests = []
    for key in ("sensitivity", "specificity"):
        value = _float(getattr(promised, key))
        if math.isfinite(value):
            base[key] = value
            tests.append(_point_test(achieved, promised, key, value, counts.get(key) if counts is not None else None))
    if not tests:
        return None
    base.update(kind="point", guarantee=False, tests=tests)
    return base


_FALSE_ALARM = "<= {alpha:g} family-wise when every promise is exactly met (one-sided tests, Holm)"


def _point_test(
    achieved: Mapping[str, Any], promised: OperatingPoint, key: str, value: float, patients: Optional[PatientCounts]
) -> dict[str, Any]:
    """Calibration vs test for one rate of a point rule (two-sided, before Holm), with the patient as the unit
    whenever the counts allow it:

    * either side has several images per patient of the class (the calibration record's ``patient_tally``, or
      the test split's patient ids) and the record has a tally: a permutation test of the patients' mean
      success fractions (:func:`two_sample_test` with ``fractions_1`` / ``fractions_2``, 9,999 permutations,
      seed 0: deterministic); a side with one image per patient contributes its 0/1 outcomes;
    * every patient has one image of the class on both sides: the exact Boschloo / Fisher test of the counts;
    * the record has no tally (written before it was stored, or calibrated without patient ids) but test
      patients have several images: the image-level exact test, with the caveat that it flags a move more
      often than alpha when a patient's images agree."""
    tp, fp, tn, fn = (_float(getattr(promised, k)) for k in ("tp", "fp", "tn", "fn"))
    cx, cn = (tp, tp + fn) if key == "sensitivity" else (tn, tn + fp)
    t = _image_counts(achieved, key)
    out: dict[str, Any] = {"metric": key, "calibration": value, "achieved": _float(achieved.get(key))}
    out.update(calibration_x=None, calibration_n=None, x=None, n=0, p_value=math.nan, test=None, unit_kind=None)
    if t is not None:
        out.update(x=int(round(t.successes)), n=t.k)
    if not (math.isfinite(cx) and math.isfinite(cn) and cn > 0):
        out["unit"] = "calibration counts not stored"
        return out
    out.update(calibration_x=int(round(cx)), calibration_n=int(round(cn)))
    if t is None or t.k == 0:
        out["unit"] = f"no {_CLASS[key]} in this split"
        return out
    cls = _CLASS[key]
    record = promised.patient_tally
    cal_tally = None if record is None else (record.positives if key == "sensitivity" else record.negatives)
    test_clustered = patients is not None and not patients.single and patients.tally is not None
    if record is not None and (cal_tally is not None or test_clustered):
        f1 = tally_fractions(cal_tally) if cal_tally is not None else binary_fractions(int(round(cx)), int(round(cn)))
        f2 = (
            tally_fractions(patients.tally)
            if test_clustered and patients is not None and patients.tally is not None
            else binary_fractions(int(round(t.successes)), t.k)
        )
        r = two_sample_test(0, 0, 0, 0, fractions_1=f1, fractions_2=f2, seed=0)
        test_images = patients.images if patients is not None else t.k
        unit = (
            f"{cls}, patients as the unit: {f1.size} vs {f2.size} patients ({int(round(cn))} vs {test_images} "
            f"images), mean per-patient fraction {_num(r.rate_1)} vs {_num(r.rate_2)}"
        )
        if patients is None:
            unit += " (no test patient ids: test images treated as independent)"
        out.update(p_value=r.p_value, test="two-sided permutation test of per-patient fractions (9,999, seeded)")
        out.update(unit=unit, unit_kind="patients", calibration_patients=int(f1.size), patients=int(f2.size))
        out["counts_text"] = unit
        return out
    r = two_sample_test(int(round(cx)), int(round(cn)), int(round(t.successes)), t.k)
    unit, kind = f"{cls} (images)", "images"
    if patients is not None and patients.single:
        unit, kind = f"{cls} (patients, one image each on both splits)", "patients"
    if patients is not None and not patients.single:
        unit = (
            f"{cls} (images from {patients.k} patients, some with several; the calibration record has no "
            "per-patient tally (written before chestxr stored one, or calibrated without patient ids): an "
            "image-level test flags a move more often than alpha when a patient's images agree)"
        )
    if record is None and kind == "patients":  # one image per test patient; calibration units unknown
        unit, kind = f"{cls} (images)", "images"
    out.update(p_value=r.p_value, test=f"two-sided {r.method} exact test", unit=unit, unit_kind=kind)
    out["counts_text"] = f"{out['calibration_x']}/{out['calibration_n']} vs {out['x']}/{out['n']} {unit}"
    return out


def _finalize(rec: dict[str, Any], *, family: Mapping[str, int], adjusted: bool = False) -> None:
    """State, flagged, verdict and detail from the (Holm-adjusted when ``adjusted``) tests."""
    alpha = rec["alpha"]
    if rec["kind"] == "guarantee":
        m = max(1, family.get("guarantee", 1))
        t = rec["tests"][0]
        if not adjusted:
            t["p_holm"] = t["p_value"]
            t["rejected"] = bool(math.isfinite(t["p_value"]) and t["p_value"] <= alpha)
        t["power_alpha"] = alpha / m  # the power at Holm's strictest level alpha / m
        if t["k"]:
            t["power"] = promise_power(int(t["k"]), t["promised"], drop=t["drop"], alpha=alpha / m, single=t["single"])
        rec.update(p_value=t["p_value"], p_holm=t["p_holm"], power=t["power"], unit=t["unit"], family_size=m)
        rec["achieved"] = t["achieved"]
        said = f"{t['metric']} >= {t['promised']:.3f} promised at {rec['confidence']:.0%} confidence"
        holm_text = f"Holm over {m} guaranteed promise{'s' if m != 1 else ''} at alpha {alpha:g}"
        if not math.isfinite(t["p_value"]):
            rec.update(state="not_checked", flagged=None, verdict=f"not checked: {t['unit']}")
            rec["detail"] = f"{said}; not checked: {t['unit']}"
            return
        cls = t["noun"]
        power = (
            f"this test had {_pct(t['power'])} power to detect a drop of {t['drop']:g} with {t['k']} {cls}"
            if math.isfinite(t["power"])
            else f"power not computable with {t['k']} {cls}"
        )
        measured = f"test {t['achieved']:.3f} on {t['unit']}"
        if t["rejected"]:
            short = max(0.0, t["promised"] - t["achieved"]) if math.isfinite(t["achieved"]) else math.nan
            rec.update(state="contradicted", flagged=True, shortfall=short)
            rec["verdict"] = f"contradicted (p = {_p(t['p_value'])}, Holm-adjusted {_p(t['p_holm'])})"
            rec["detail"] = (
                f"{said}; {measured}: CONTRADICTED, {short:.3f} below the promise ({t['test']} p = "
                f"{_p(t['p_value'])}; Holm-adjusted p = {_p(t['p_holm'])} <= {alpha:g}; {holm_text})"
            )
        else:
            rec.update(state="not_contradicted", flagged=False, shortfall=None)
            rec["verdict"] = f"not contradicted (p = {_p(t['p_value'])}; {power})"
            rec["detail"] = (
                f"{said}; {measured}: not contradicted ({t['test']} p = {_p(t['p_value'])}, Holm-adjusted "
                f"{_p(t['p_holm'])}; {holm_text}; {power} at alpha {t['power_alpha']:.3g}). Not rejected is not "
                "proof the promise is met"
            )
        return
    if rec["kind"] != "point":
        return
    m = max(1, family.get("point", 1))
    tested = [t for t in rec["tests"] if math.isfinite(t["p_value"])]
    for t in rec["tests"]:
        if not adjusted:
            t["p_holm"] = t["p_value"]
            t["rejected"] = bool(math.isfinite(t["p_value"]) and t["p_value"] <= alpha)
    parts = []
    for t in rec["tests"]:
        side = f"{t['metric']} calibration {_num(t['calibration'])} vs test {_num(t['achieved'])}"
        if math.isfinite(t["p_value"]):
            side += f" ({t['counts_text']}; {t['test']} p = {_p(t['p_value'])}, Holm-adjusted {_p(t['p_holm'])})"
        else:
            side += f" (not tested: {t['unit']})"
        parts.append(side)
    label = "point estimate on the calibration split, not a promise"
    holm_text = f"Holm over {m} point test{'s' if m != 1 else ''} at alpha {alpha:g}"
    moved = [t["metric"] for t in rec["tests"] if t.get("rejected")]
    if not tested:
        rec.update(state="not_tested", flagged=None, verdict="point rule: calibration counts not stored, not tested")
    elif moved:
        rec.update(state="moved", flagged=True, verdict=f"operating point moved ({', '.join(moved)})")
    else:
        rec.update(state="not_moved", flagged=False, verdict="no evidence the operating point moved")
    rec["detail"] = f"{label}; " + "; ".join(parts) + (f"; {holm_text}" if tested else "")


def _point_units(records: Mapping[str, Optional[dict[str, Any]]], names: list[str]) -> str:
    """The unit the point tests counted, in words: "patients as the unit", "images as the unit" or both."""
    kinds = {t.get("unit_kind") for n in names for t in (records[n] or {}).get("tests", []) if t.get("unit_kind")}
    if kinds == {"patients"}:
        return "patients as the unit (permutation test of per-patient fractions with several images per patient)"
    if kinds == {"images"}:
        return "images as the unit (exact Boschloo / Fisher)"
    if kinds:
        return "patients as the unit where the calibration record has a per-patient tally, images otherwise"
    return "none tested"


def _prevalence_range(promised: OperatingPoint) -> Optional[tuple[float, float]]:
    """The deployment prevalence range of a ppv/npv guarantee when the record carries one (issue 22 point 3)."""
    for owner in (promised.guarantee, promised):
        value = getattr(owner, "prevalence_range", None) or getattr(owner, "prevalence", None)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            lo, hi = _float(value[0]), _float(value[1])
            if math.isfinite(lo) and math.isfinite(hi):
                return lo, hi
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _p(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2g}"


def _num(v: Any, digits: int = 3) -> str:
    f = _float(v)
    return "-" if not math.isfinite(f) else f"{f:.{digits}f}"


def _float(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan
