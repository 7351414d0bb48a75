"""The monitor's statistics: every window of a log tested against the reference, Holm within a window.

Per window (one image per patient on both sides, a seeded choice):

- inputs: each categorical acquisition field, chi-squared test of homogeneity (exact by Monte Carlo
  when expected counts are small); each numeric field, two-sample KS; the embedding sketch, MMD with a
  permutation p-value;
- outputs: each finding's score distribution, two-sample KS; each calibrated finding's positive-call
  rate, Fisher's exact test against the reference's;
- prevalence: each finding's label-shift estimate with its exact-box interval (reported), and for each
  PPV / NPV promise the one-sided test of "PPV (NPV) >= X" at the prevalence the window implies;
- labels (when the log has confirmed labels): each promise's anytime-valid test, cumulative from the
  start of the log to the end of the window.

Holm's step-down adjustment across the window's defined tests (undefined ones counted, not tested)
keeps the probability that a window where nothing changed raises any alarm at or below ``alpha``. The
label tests are anytime-valid, so looking at them after every window costs nothing extra; their
evidence accumulates, so a promise once contradicted stays contradicted until the run is
re-calibrated. Each test's Monte Carlo resolution reaches below alpha / (2 m) (m tests), so the first
Holm step is reachable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from chestxr.monitoring._confseq import anytime_pvalues, upper_bound
from chestxr.monitoring._holm import holm_adjust
from chestxr.monitoring._labelshift import bbse_intervals, em_prevalence, predictive_value_pvalue
from chestxr.monitoring._mmd import (
    DEFAULT_FEATURES,
    DEFAULT_MAX_REFERENCE,
    EmbeddingReference,
    mmd_test,
    prepare_embedding_reference,
)
from chestxr.monitoring._results import (
    LabelBound,
    MonitorResult,
    PrevalenceEstimate,
    TestResult,
    WindowResult,
    iso_time,
)
from chestxr.monitoring._sample import (
    MISSING,
    NOT_CALLED,
    MonitorError,
    Promise,
    Sample,
    check_level,
    one_per_group_index,
)
from chestxr.monitoring._twosample import chi2_homogeneity, fisher_exact_two_sided, ks_test
from chestxr.monitoring._windows import Window, WindowSpec, split_windows

#: categorical fields compared among known values only (see MonitorSettings)
KNOWN_ONLY = ("AgeBand", "Sex", "PatientSex")
#: Monte Carlo draws at least this many, whatever the number of tests
MIN_DRAWS = 999


@dataclass(frozen=True)
class MonitorSettings:
    """``alpha``: false-alarm rate per window (Holm across its tests); ``window``: images or time per
    window; ``seed``: every random choice (one image per patient, permutations, random features);
    ``confidence``: level of the prevalence / PPV / NPV intervals shown; ``mmd_features`` and
    ``max_reference``: the embedding test's random features and reference cap; ``one_per_patient``
    False tests every image as if independent (for comparisons only: images of one patient are
    correlated, so that alarms more often than ``alpha``); ``known_only``: categorical fields compared among
    known values only (their missing share is in the summary, not tested): the demographic fields, whose
    availability depends on the route (a manifest at calibrate, a PNG export's missing header at predict),
    not on the patients."""

    alpha: float = 0.01
    window: WindowSpec = field(default_factory=lambda: WindowSpec(count=500))
    seed: int = 0
    confidence: float = 0.95
    mmd_features: int = DEFAULT_FEATURES
    max_reference: int = DEFAULT_MAX_REFERENCE
    one_per_patient: bool = True
    known_only: tuple[str, ...] = KNOWN_ONLY

    def __post_init__(self) -> None:
        check_level("--alarm-rate (alpha)", self.alpha)
        check_level("confidence", self.confidence)
        if self.mmd_features < 1 or self.max_reference < 2:
            raise MonitorError("mmd_features must be >= 1 and max_reference >= 2")

    def to_dict(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "window": self.window.describe(),
            "seed": self.seed,
            "confidence": self.confidence,
            "mmd_features": self.mmd_features,
            "max_reference": self.max_reference,
            "one_per_patient": self.one_per_patient,
            "known_only": list(self.known_only),
        }


def _category_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes (n,) int64, names): each value's category, None / NaN / "" counted as :data:`MISSING` and
    anything else by its str, in order of first appearance. Factorized over the distinct values first, so no
    str (or fixed-width unicode array) is made per row: a 1M-entry log's field costs its int64 codes."""
    out = np.asarray(values, dtype=object)
    missing = pd.isna(out)
    if missing.any():
        out = out.copy()
        out[missing] = ""
    codes, uniques = pd.factorize(out, use_na_sentinel=False)
    index: dict[str, int] = {}
    remap = np.array([index.setdefault(MISSING if u == "" else str(u), len(index)) for u in uniques], dtype=np.int64)
    return (remap[codes] if remap.size else np.zeros(out.size, np.int64)), list(index)


def _remap(names: list[str], index: dict[str, int], drop: str | None) -> np.ndarray:
    """(len(names),) int64: each name's code in ``index`` (added when new), -1 for ``drop``."""
    return np.array([-1 if n == drop else index.setdefault(n, len(index)) for n in names], dtype=np.int64)


@dataclass
class _Field:
    name: str
    categories: np.ndarray  # (K,)
    ref_counts: np.ndarray  # (K,)
    stream_codes: np.ndarray  # (n_stream,)


@dataclass
class _Track:
    promise: Promise
    rows: np.ndarray  # stream rows that are observations, in order (one per patient)
    pvalues: np.ndarray  # anytime p-value after each observation
    successes: np.ndarray  # cumulative successes


class _Reference:
    """The reference reduced once: one image per patient, sorted columns, counts, the MMD kernel."""

    def __init__(self, reference: Sample, settings: MonitorSettings) -> None:
        self.n_images = len(reference)
        thin = (
            reference.one_per_patient(np.random.SeedSequence([settings.seed, 0]))
            if settings.one_per_patient
            else reference
        )
        self.sample = thin
        self.n_patients = len(thin)
        self.scores_sorted = [np.sort(c[~np.isnan(c)]) for c in thin.scores.T]
        calls = thin.calls
        self.k_calls = (calls == 1).sum(axis=0)
        self.n_calls = (calls != NOT_CALLED).sum(axis=0)
        self.numeric_sorted = {k: np.sort(v[~np.isnan(v)]) for k, v in thin.numeric.items()}
        self.embedding: EmbeddingReference | None = None
        if thin.embedding is not None:
            self.embedding = prepare_embedding_reference(
                thin.embedding,
                np.random.default_rng(np.random.SeedSequence([settings.seed, 1])),
                n_features=settings.mmd_features,
                max_reference=settings.max_reference,
            )
        n_f = len(thin.findings)
        zeros = np.zeros(n_f, dtype=np.int64)
        self.t_k, self.t_n, self.f_k, self.f_n = zeros, zeros, zeros, zeros
        self.prevalence = np.full(n_f, np.nan)
        if thin.labels is not None:
            lab, called = thin.labels, calls != NOT_CALLED
            pos, neg = (lab == 1) & called, (lab == 0) & called
            self.t_k, self.t_n = (pos & (calls == 1)).sum(axis=0), pos.sum(axis=0)
            self.f_k, self.f_n = (neg & (calls == 1)).sum(axis=0), neg.sum(axis=0)
            known = (~np.isnan(lab)).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.prevalence = np.where(known > 0, (lab == 1).sum(axis=0) / known, np.nan)


def _threats(promises: Sequence[Promise], finding: str | None) -> tuple[str, ...]:
    if finding is None:
        out = tuple(p.describe() for p in promises)
        return out or ("every finding's operating point (no guarantee recorded)",)
    out = tuple(p.describe() for p in promises if p.finding == finding)
    return out or (f"{finding} operating point (no guarantee recorded)",)


def _pct(k: float, n: float) -> str:
    return f"{100.0 * k / n:.1f}% ({int(k)}/{int(n)})" if n else "n/a (0)"


def _label_tracks(stream: Sample, codes: np.ndarray, promises: Sequence[Promise]) -> list[_Track]:
    if stream.labels is None:
        return []
    tracks = []
    index = {f: j for j, f in enumerate(stream.findings)}
    for pr in promises:
        j = index[pr.finding]
        lab, c = stream.labels[:, j], stream.calls[:, j]
        if pr.metric == "sensitivity":
            obs, success = (lab == 1) & (c != NOT_CALLED), c == 1
        elif pr.metric == "specificity":
            obs, success = (lab == 0) & (c != NOT_CALLED), c == 0
        elif pr.metric == "ppv":
            obs, success = (c == 1) & ~np.isnan(lab), lab == 1
        else:
            obs, success = (c == 0) & ~np.isnan(lab), lab == 0
        rows = np.flatnonzero(obs)
        _, first = np.unique(codes[rows], return_index=True)  # each patient's first labelled image
        rows = rows[np.sort(first)]
        outcome = success[rows].astype(np.float64)
        tracks.append(_Track(pr, rows, anytime_pvalues(outcome, pr.level), np.cumsum(outcome)))
    return tracks


def monitor_samples(
    reference: Sample,
    stream: Sample,
    promises: Sequence[Promise] = (),
    settings: MonitorSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> MonitorResult:
    """Test every window of ``stream`` against ``reference`` (see the module docstring).

    ``reference``: the calibration images (scores, calls, labels for the prevalence and PPV / NPV
    estimates); ``stream``: the logged predictions (sorted by time here when it has times);
    ``promises``: the run's guarantees (their findings must be among the stream's). ``progress(done,
    total)`` is called after each window. Returns a :class:`MonitorResult`."""
    settings = settings or MonitorSettings()
    if tuple(reference.findings) != tuple(stream.findings):
        raise MonitorError(
            f"the log's findings {list(stream.findings)} differ from the reference's {list(reference.findings)}: "
            "was it written by another run?"
        )
    known = set(stream.findings)
    for pr in promises:
        if pr.finding not in known:
            raise MonitorError(f"promise on {pr.finding!r}: not one of the run's findings {sorted(known)}")
    if len(reference) == 0:
        raise MonitorError("the reference profile holds no images: calibrate the run again")
    if stream.time is not None and len(stream) > 1:
        order = np.argsort(stream.time, kind="stable")
        if (np.diff(order) < 0).any():
            stream = stream.take(order)
    ref = _Reference(reference, settings)
    codes = stream.patient_codes() if len(stream) else np.zeros(0, np.int64)
    fields = _categorical_fields(ref.sample, stream, settings.known_only)
    tracks = _label_tracks(stream, codes, promises)
    windows = split_windows(stream.time, len(stream), settings.window)
    bounds = _label_upper_bounds(tracks, windows, settings.alpha)
    results = []
    for k, w in enumerate(windows):
        results.append(_test_window(ref, stream, codes, fields, promises, tracks, bounds, w, settings))
        if progress is not None:
            progress(k + 1, len(windows))
    return MonitorResult(
        alpha=settings.alpha,
        window=settings.window.describe(),
        windows=tuple(results),
        findings=tuple(stream.findings),
        promises=tuple(p.describe() for p in promises),
        n_reference_images=ref.n_images,
        n_reference_patients=ref.n_patients,
        n_images=len(stream),
        settings=settings.to_dict(),
    )


def _categorical_fields(ref: Sample, stream: Sample, known_only: Sequence[str]) -> dict[str, _Field | None]:
    """Each categorical field coded over reference and stream together; a field in ``known_only`` counts
    its known values only (code -1 for missing: left out of the test)."""
    out: dict[str, _Field | None] = {}
    for name in sorted(set(ref.categorical) | set(stream.categorical)):
        if name not in ref.categorical or name not in stream.categorical:
            out[name] = None
            continue
        r_codes, r_names = _category_codes(ref.categorical[name])
        s_codes, s_names = _category_codes(stream.categorical[name])
        drop = MISSING if name in known_only else None
        index: dict[str, int] = {}  # the categories in order of first appearance, reference first
        rc = _remap(r_names, index, drop)[r_codes]
        sc = _remap(s_names, index, drop)[s_codes]
        cats = np.empty(len(index), dtype=object)
        cats[:] = list(index)
        ref_counts = np.bincount(rc[rc >= 0], minlength=len(cats))
        out[name] = _Field(name, cats, ref_counts, sc)
    return out


def _label_upper_bounds(tracks: list[_Track], windows: list[Window], alpha: float) -> list[np.ndarray]:
    """Per track, (n_windows,) running minimum of the anytime upper bound at each window's end."""
    if not tracks or not windows:
        return [np.zeros(len(windows)) for _ in tracks]
    ends = np.array([w.stop for w in windows], dtype=np.int64)
    n = np.stack([np.searchsorted(tr.rows, ends, side="left") for tr in tracks])  # (tracks, windows)
    s = np.stack(
        [tr.successes[np.maximum(k - 1, 0)] if tr.successes.size else np.zeros(k.size) for tr, k in zip(tracks, n)]
    )
    u = upper_bound(np.where(n > 0, s, 0.0), n, alpha)
    return list(np.minimum.accumulate(u, axis=1))


def _test_window(
    ref: _Reference,
    stream: Sample,
    codes: np.ndarray,
    fields: dict[str, _Field | None],
    promises: Sequence[Promise],
    tracks: list[_Track],
    bounds: list[np.ndarray],
    w: Window,
    settings: MonitorSettings,
) -> WindowResult:
    k = w.index
    if settings.one_per_patient:
        rows = w.start + one_per_group_index(codes[w.start : w.stop], np.random.SeedSequence([settings.seed, 2, k]))
    else:
        rows = np.arange(w.start, w.stop)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3, k]))
    findings = stream.findings
    pv_promises = [p for p in promises if p.metric in ("ppv", "npv")]
    n_called = int((ref.n_calls > 0).sum())
    m_planned = (
        len(fields)
        + len(stream.numeric)
        + (stream.embedding is not None)
        + len(findings)
        + n_called
        + len(pv_promises)
        + len(tracks)
    )
    b_max = max(MIN_DRAWS, math.ceil(2 * max(1, m_planned) / settings.alpha))
    n_win = rows.size
    raw: list[dict] = []
    everyone = _threats(promises, None)

    def add(
        name: str,
        kind: str,
        finding: str | None,
        method: str,
        stat: float,
        p: float,
        n_ref: int,
        n_w: int,
        summary: str,
        threatens: tuple[str, ...],
        undefined: str = "",
    ) -> None:
        if math.isnan(p) and not undefined:
            undefined = "too few patients on one side"
        raw.append(
            dict(
                window=k,
                name=name,
                kind=kind,
                finding=finding,
                method=method,
                statistic=stat,
                p_value=p,
                n_reference=n_ref,
                n_window=n_w,
                summary=summary,
                threatens=threatens,
                undefined=undefined,
            )
        )

    # inputs: categorical fields
    for name, fld in fields.items():
        if fld is None:
            side = "reference profile" if name not in ref.sample.categorical else "log"
            add(
                f"input.{name}",
                "input",
                None,
                "chi-squared",
                math.nan,
                math.nan,
                ref.n_patients,
                n_win,
                f"{name} is not in the {side}",
                everyone,
                f"field not in the {side}",
            )
            continue
        win_codes = fld.stream_codes[rows]
        win_counts = np.bincount(win_codes[win_codes >= 0], minlength=fld.categories.size)
        x2, p, method = chi2_homogeneity(fld.ref_counts, win_counts, rng, b_max=b_max)
        add(
            f"input.{name}",
            "input",
            None,
            method,
            x2,
            p,
            int(fld.ref_counts.sum()),
            int(win_counts.sum()),
            _category_summary(name, fld.categories, fld.ref_counts, win_counts)
            + (
                f" (missing left out: {int((fld.stream_codes[rows] < 0).sum())} of {rows.size} in the window)"
                if name in settings.known_only
                else ""
            ),
            everyone,
        )
    # inputs: numeric fields
    for name in sorted(stream.numeric):
        values = stream.numeric[name][rows]
        present = values[~np.isnan(values)]
        if name not in ref.numeric_sorted:
            add(
                f"input.{name}",
                "input",
                None,
                "Kolmogorov-Smirnov",
                math.nan,
                math.nan,
                0,
                present.size,
                f"{name} is not in the reference profile",
                everyone,
                "field not in the reference profile",
            )
            continue
        r = ref.numeric_sorted[name]
        d, p = ks_test(r, present)
        add(
            f"input.{name}",
            "input",
            None,
            "Kolmogorov-Smirnov",
            d,
            p,
            r.size,
            present.size,
            f"median {_median(r)} -> {_median(present)} (missing {n_win - present.size} of {n_win})",
            everyone,
        )
    # inputs: embedding sketch
    if stream.embedding is not None:
        if ref.embedding is None:
            add(
                "input.embedding",
                "input",
                None,
                "MMD",
                math.nan,
                math.nan,
                0,
                n_win,
                "no embedding sketch in the reference profile",
                everyone,
                "no reference sketch",
            )
        elif stream.embedding.shape[1] != ref.embedding.mean.size:
            raise MonitorError(
                f"the log's embedding sketch has {stream.embedding.shape[1]} dimensions, the reference's "
                f"{ref.embedding.mean.size}: was it written by another run?"
            )
        else:
            stat, p, n_used, draws = mmd_test(ref.embedding, stream.embedding[rows], rng, b_max=b_max)
            add(
                "input.embedding",
                "input",
                None,
                f"MMD (Gaussian kernel, {ref.embedding.offsets.size} random features), permutation p ({draws} draws)",
                stat,
                p,
                ref.embedding.phi.shape[0],
                n_used,
                f"MMD^2 = {stat:.3g}",
                everyone,
            )
    # outputs: score distributions
    scores = stream.scores[rows]
    for j, f in enumerate(findings):
        col = scores[:, j]
        col = col[~np.isnan(col)]
        d, p = ks_test(ref.scores_sorted[j], col)
        add(
            f"output.score.{f}",
            "output",
            f,
            "Kolmogorov-Smirnov",
            d,
            p,
            ref.scores_sorted[j].size,
            col.size,
            f"median score {_median(ref.scores_sorted[j])} -> {_median(col)}",
            _threats(promises, f),
        )
    # outputs: positive-call rates
    calls = stream.calls[rows]
    k_w = (calls == 1).sum(axis=0)
    n_w = (calls != NOT_CALLED).sum(axis=0)
    p_rate = fisher_exact_two_sided(ref.k_calls, ref.n_calls, k_w, n_w)
    for j, f in enumerate(findings):
        if ref.n_calls[j] == 0:
            continue  # not calibrated: calls nothing, so there is no rate to watch
        add(
            f"output.calls.{f}",
            "output",
            f,
            "Fisher exact (two-sided)",
            float(k_w[j] / n_w[j]) if n_w[j] else math.nan,
            float(p_rate[j]),
            int(ref.n_calls[j]),
            int(n_w[j]),
            f"positive-call rate {_pct(ref.k_calls[j], ref.n_calls[j])} -> {_pct(k_w[j], n_w[j])}",
            _threats(promises, f),
        )
    # prevalence under label shift
    q = (k_w, n_w)
    box = bbse_intervals(q, (ref.t_k, ref.t_n), (ref.f_k, ref.f_n), settings.confidence)
    em = em_prevalence(scores, ref.prevalence) if n_win else np.full(len(findings), np.nan)
    prevalence = []
    for j, f in enumerate(findings):
        if ref.n_calls[j] == 0 or ref.t_n[j] == 0 or ref.f_n[j] == 0:
            continue
        prevalence.append(
            PrevalenceEstimate(
                window=k,
                finding=f,
                reference=float(ref.prevalence[j]),
                estimate=float(box["prevalence"][j]),
                low=float(box["prevalence_lo"][j]),
                high=float(box["prevalence_hi"][j]),
                em=float(em[j]),
                ppv=float(box["ppv"][j]),
                ppv_low=float(box["ppv_lo"][j]),
                ppv_high=float(box["ppv_hi"][j]),
                npv=float(box["npv"][j]),
                npv_low=float(box["npv_lo"][j]),
                npv_high=float(box["npv_hi"][j]),
                confidence=settings.confidence,
                n_window=int(n_w[j]),
                identified=bool(box["identified"][j]),
            )
        )
    index = {f: j for j, f in enumerate(findings)}
    for pr in pv_promises:
        j = index[pr.finding]
        p = float(
            predictive_value_pvalue(
                pr.metric, pr.level, (k_w[j], n_w[j]), (ref.t_k[j], ref.t_n[j]), (ref.f_k[j], ref.f_n[j])
            )
        )
        point = float(box[pr.metric][j])
        add(
            f"prevalence.{pr.finding}.{pr.metric}",
            "prevalence",
            pr.finding,
            "one-sided exact box (Clopper-Pearson q, TPR, FPR; Bonferroni over 3)",
            point,
            p,
            int(ref.t_n[j] + ref.f_n[j]),
            int(n_w[j]),
            f"implied {pr.metric.upper()} {point:.3f} at estimated prevalence "
            f"{float(box['prevalence'][j]):.3f} (reference {float(ref.prevalence[j]):.3f}); promised >= {pr.level:.2f}",
            (pr.describe(),),
            "" if not math.isnan(p) else "no reference labels for this finding",
        )
    # labels: anytime-valid tests, cumulative to the window's end
    label_bounds = []
    for tr, ub in zip(tracks, bounds):
        n = int(np.searchsorted(tr.rows, w.stop, side="left"))
        pr = tr.promise
        s = int(tr.successes[n - 1]) if n else 0
        p = float(tr.pvalues[n - 1]) if n else math.nan
        est = s / n if n else math.nan
        label_bounds.append(
            LabelBound(k, pr.describe(), pr.finding, pr.metric, pr.level, n, s, est, float(ub[k]), settings.alpha, p)
        )
        add(
            f"labels.{pr.finding}.{pr.metric}",
            "labels",
            pr.finding,
            "anytime-valid beta-binomial mixture (one-sided)",
            est,
            p,
            0,
            n,
            f"{pr.metric} {est:.3f} ({s}/{n} patients so far); anytime {100 * (1 - settings.alpha):g}% "
            f"upper bound {float(ub[k]):.3f} vs promised {pr.level:.2f}",
            (pr.describe(),),
            "" if n else "no labelled patients yet",
        )
    adjusted = holm_adjust(np.array([r["p_value"] for r in raw], dtype=np.float64))
    tests = tuple(TestResult(p_holm=float(a), alarm=bool(a <= settings.alpha), **r) for r, a in zip(raw, adjusted))
    return WindowResult(
        index=k,
        begins=iso_time(w.begins),
        ends=iso_time(w.ends),
        n_images=w.size,
        n_patients=n_win,
        partial=w.partial,
        tests=tests,
        prevalence=tuple(prevalence),
        labels=tuple(label_bounds),
    )


def _median(values: np.ndarray) -> str:
    return f"{float(np.median(values)):.3g}" if values.size else "n/a"


def _category_summary(name: str, categories: np.ndarray, ref: np.ndarray, win: np.ndarray) -> str:
    n_r, n_w = ref.sum(), win.sum()
    if not n_r or not n_w:
        return f"{name}: no values on one side"
    diff = win / n_w - ref / n_r
    j = int(np.argmax(np.abs(diff)))
    return f"{name} = {categories[j]}: {100 * ref[j] / n_r:.1f}% -> {100 * win[j] / n_w:.1f}%"
