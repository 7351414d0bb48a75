"""Does an operating point promised at calibration hold on new data? A one-sided exact binomial test.

For a guaranteed rule (``sensitivity:X`` ...; thresholds.json ``status: guaranteed``) the promise is
"metric >= X". On the new split with x successes out of n (e.g. true positives out of positives)
the test of H0: metric >= X against H1: metric < X has p-value P(Binomial(n, X) <= x); the
promise is FLAGGED when p < alpha (default 0.05). If the true value is X exactly, a promise is
flagged with probability <= alpha (the false-alarm rate, stated in every result); if it is above
X, less often. With several images per patient the counts are the effective counts
(:func:`chestxr.evaluation.effective_counts`) and the p-value uses the regularised
incomplete beta function, which extends the binomial tail to real-valued counts.

Records of other rules (youden, f1, cost, ``@point``, and records written before guarantees
existed) promised only point estimates; those are checked the same way against the stated point
values of sensitivity and specificity and labelled "not a guarantee": they are flagged more often
than alpha even when nothing changed, because the point was chosen on the calibration data.

This replaces the earlier check by overlap of two intervals, which had no stated error rate.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from chestxr.evaluation._methods import TARGETED
from chestxr.evaluation._operating_point import OperatingPoint

DEFAULT_ALPHA = 0.05


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


def _counts(achieved: Mapping[str, Any], key: str) -> tuple[float, float, float]:
    """(x_eff, n_eff, n) for ``key`` from an evaluation record (value, key_n, key_n_eff or tp/fp/tn/fn)."""
    value = _float(achieved.get(key))
    n = _float(achieved.get(f"{key}_n"))
    if not math.isfinite(n):  # older records: derive the denominator from the confusion counts
        tp, fp, tn, fn = (_float(achieved.get(k)) for k in ("tp", "fp", "tn", "fn"))
        n = {"sensitivity": tp + fn, "specificity": tn + fp, "ppv": tp + fp, "npv": tn + fn}.get(key, math.nan)
    n_eff = _float(achieved.get(f"{key}_n_eff"))
    n_eff = n if not math.isfinite(n_eff) else n_eff
    if not (math.isfinite(value) and math.isfinite(n_eff)):
        return math.nan, 0.0 if not math.isfinite(n) else n_eff, n
    return value * n_eff, n_eff, n


def check_bound(achieved: Mapping[str, Any], key: str, bound: float, *, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """One metric: {metric, promised, achieved, x, n, n_eff, p_value, alpha, holds, shortfall, detail}."""
    x, n_eff, n = _counts(achieved, key)
    a = _float(achieved.get(key))
    out: dict[str, Any] = {"metric": key, "promised": bound, "achieved": a, "n": n, "n_eff": n_eff, "alpha": alpha}
    if not (math.isfinite(x) and n_eff > 0):
        out.update(x=None, p_value=None, holds=False, shortfall=None)
        out["detail"] = f"{key}: promised >= {bound:.3f}; not measurable on this split (n = {_int(n)})"
        return out
    p = binomial_tail_below(x, n_eff, bound)
    holds = not p < alpha
    short = max(0.0, bound - a)
    out.update(x=x, p_value=p, holds=holds, shortfall=short)
    said = f"{key}: promised >= {bound:.3f}, achieved {a:.3f} on {_int(n)} ({_denominator(key)})"
    if holds:
        out["detail"] = f"{said}: holds (one-sided exact binomial p = {p:.3g} >= {alpha:g})"
    else:
        out["detail"] = (
            f"{said}: FLAGGED, {short:.3f} below the promise (one-sided exact binomial p = {p:.3g} < {alpha:g})"
        )
    return out


def check_promise(
    achieved: Mapping[str, Any], promised: OperatingPoint, *, alpha: float = DEFAULT_ALPHA
) -> dict[str, Any] | None:
    """Check one finding's operating point (``promised``, as calibrate stored it) against its evaluation
    record (``achieved``, from :func:`chestxr.evaluation.evaluate_predictions`).

    Returns None when nothing was promised, else {guarantee, holds (True / False, None when the
    calibration refused a threshold), tests (one per metric, see :func:`check_bound`),
    sensitivity / specificity (the promised values, None when not promised), alpha,
    false_alarm_rate (text), detail (one line)}."""
    status = promised.status
    method = promised.method or ""
    kind = method.split(":", 1)[0] if method else ""
    base: dict[str, Any] = {"method": method or None, "status": status, "alpha": alpha, "sensitivity": None}
    base.update(
        specificity=None, false_alarm_rate=f"<= {alpha:g} when the promise is exactly met (one-sided exact binomial)"
    )
    if status in ("insufficient_data", "unreachable"):
        base.update(guarantee=False, holds=None, tests=[])
        base["detail"] = (
            f"no threshold ({status}): {promised.note or ''} (n_pos {promised.n_pos}, n_needed {promised.n_needed})"
        ).strip()
        return base
    if status == "guaranteed" and kind in TARGETED:
        bound = _float(promised.target)
        tests = [check_bound(achieved, kind, bound, alpha=alpha)]
        base.update(guarantee=True, **({kind: bound} if kind in ("sensitivity", "specificity") else {}))
        base["promised_" + kind] = bound
        conf = promised.confidence if math.isfinite(promised.confidence) else 0.95
        label = f"guarantee {kind} >= {bound:.3f} at {conf:.0%} confidence"
    else:
        tests = []
        for key in ("sensitivity", "specificity"):
            p = _float(getattr(promised, key))
            if math.isfinite(p):
                base[key] = p
                tests.append(check_bound(achieved, key, p, alpha=alpha))
        if not tests:
            return None
        base["guarantee"] = False
        label = "not a guarantee (point estimates of the calibration split)"
    holds = all(t["holds"] for t in tests)
    base.update(tests=tests, holds=bool(holds))
    base["detail"] = f"{label}; " + "; ".join(t["detail"] for t in tests)
    return base


def _denominator(key: str) -> str:
    return {"sensitivity": "positives", "specificity": "negatives", "ppv": "called positive"}.get(
        key, "called negative"
    )


def _int(v: float) -> str:
    return str(int(v)) if math.isfinite(v) else "0"


def _float(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan
