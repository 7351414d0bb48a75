"""Per-subgroup metrics with intervals, and each subgroup's difference from the rest with its interval.

For a labelling of the images (``labels`` (n,), e.g. the view: "AP"/"PA") and every finding:

- AUROC in the subgroup with a patient-bootstrap percentile interval;
- sensitivity and specificity at the finding's threshold with exact (Clopper-Pearson) intervals,
  cluster-aware by patient (:func:`chestxr.evaluation.confusion_intervals`);
- the difference subgroup - rest (every other image) of AUROC, sensitivity and specificity, with a
  patient-bootstrap percentile interval: each resample draws patients with replacement from the whole
  set and computes both sides on the same draw, so a patient with images in both groups (a PA and an
  AP film) is handled correctly. "AUROC is lower for AP films" is then a statement with an interval.

Resamples in which a side is undefined (no positive or no negative drawn) are counted in ``n_valid``;
an interval resting on fewer than half of the resamples is not reported (NaN), as in
chestxr/evaluation/_bootstrap.py.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from chestxr.evaluation._bootstrap import MIN_VALID_FRACTION, FindingPlan, draw_resample_counts, group_index
from chestxr.evaluation._intervals import confusion_intervals
from chestxr.evaluation._metrics import MetricInputError, as_matrices

DIFF_KEYS = ("auroc", "sensitivity", "specificity")


def interval_methods(level: float, n_boot: int) -> dict[str, str]:
    """How each subgroup interval is computed (written beside the tables)."""
    pct = f"{100 * level:g}%"
    return {
        "auroc": f"{pct} patient-bootstrap percentile interval ({n_boot} resamples)",
        "sensitivity": f"{pct} exact Clopper-Pearson interval, cluster-aware by patient",
        "specificity": f"{pct} exact Clopper-Pearson interval, cluster-aware by patient",
        "difference": f"subgroup minus rest; {pct} patient-bootstrap percentile interval ({n_boot} resamples, "
        "both sides on the same resample)",
    }


def _percentile(values: np.ndarray, level: float, n_boot: int) -> tuple[list[float], int]:
    ok = values[np.isfinite(values)]
    if n_boot == 0 or ok.size < MIN_VALID_FRACTION * n_boot:
        return [math.nan, math.nan], int(ok.size)
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)], int(ok.size)


def subgroup_metrics(
    labels: Any,
    y_true: Any,
    y_score: Any,
    mask: Any,
    thresholds: Any,
    *,
    groups: Any = None,
    findings: Sequence[str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Metrics per value of ``labels`` (n,) str.

    y_true, y_score, mask: (n, f); thresholds (f,); groups (n,) patient ids (None: images are
    independent). Returns ``{value: {"n_images", "n_patients", "findings": {finding: {n, n_pos,
    n_neg, auroc, auroc_ci, auroc_ci_n_valid, sensitivity(_ci), specificity(_ci), "vs_rest":
    {key: {"difference", "ci", "n_valid"}} for key in auroc/sensitivity/specificity}}}}``.
    """
    y, s, m = as_matrices(y_true, y_score, mask)
    n, f = y.shape
    lab = np.asarray(labels, dtype=object).reshape(-1)
    if lab.shape != (n,):
        raise MetricInputError(f"labels must have one value per image ({n}), got shape {lab.shape}")
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size != f:
        raise MetricInputError(f"thresholds must have one value per finding ({f}), got {thr.size}")
    names = list(findings) if findings is not None else [str(j) for j in range(f)]
    g, n_groups = group_index(groups, n)
    values = sorted({str(v) for v in lab}, key=lambda v: (v == "unknown", v))

    # one plan per (value, finding, side) over the rows of that side; all share the resample counts
    plans: dict[tuple[str, int, bool], FindingPlan] = {}
    for v in values:
        inside = lab.astype(str) == v
        for j in range(f):
            for side in (True, False):
                rows = m[:, j] & (inside if side else ~inside)
                plans[(v, j, side)] = FindingPlan(y[rows, j], s[rows, j], g[rows], float(thr[j]), n_groups)
    reps = {key: np.full((n_boot, len(plans)), np.nan) for key in DIFF_KEYS}
    order = list(plans)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, int(64 * 2**20 // (4 * 5 * max(n, n_groups, 1))))) if n_boot > 0 else 1
    for start in range(0, max(n_boot, 0), chunk):
        size = min(chunk, n_boot - start)
        counts = draw_resample_counts(n_groups, size, rng)
        for c, k in enumerate(order):
            got = plans[k].run(counts)
            for key in DIFF_KEYS:
                reps[key][start : start + size, c] = got[key]
    col = {k: c for c, k in enumerate(order)}

    out: dict[str, dict[str, Any]] = {}
    for v in values:
        inside = lab.astype(str) == v
        per: dict[str, Any] = {}
        for j, name in enumerate(names):
            rows = m[:, j] & inside
            yj, sj = y[rows, j], s[rows, j]
            n_pos, n_neg = int(yj.sum()), int((~yj).sum())
            point_in = plans[(v, j, True)].run(np.ones((n_groups, 1), dtype=np.float32))
            point_out = plans[(v, j, False)].run(np.ones((n_groups, 1), dtype=np.float32))
            exact = confusion_intervals(yj, sj >= thr[j], g[rows] if groups is not None else None, level=level)
            rec: dict[str, Any] = {"n": int(rows.sum()), "n_pos": n_pos, "n_neg": n_neg}
            rec["auroc"] = float(point_in["auroc"][0])
            rec["auroc_ci"], rec["auroc_ci_n_valid"] = _percentile(reps["auroc"][:, col[(v, j, True)]], level, n_boot)
            for key in ("sensitivity", "specificity"):
                rec[key] = float(exact[key])
                rec[f"{key}_ci"] = [float(x) for x in exact[f"{key}_ci"]]
            vs_rest = {}
            for key in DIFF_KEYS:
                diff = float(point_in[key][0] - point_out[key][0])
                d = reps[key][:, col[(v, j, True)]] - reps[key][:, col[(v, j, False)]]
                ci, n_valid = _percentile(d, level, n_boot)
                vs_rest[key] = {"difference": diff, "ci": ci, "n_valid": n_valid}
            rec["vs_rest"] = vs_rest
            per[name] = rec
        n_pat = len(np.unique(g[inside])) if inside.any() else 0
        out[v] = {"n_images": int(inside.sum()), "n_patients": int(n_pat), "findings": per}
    return out
