"""The monitor's outputs: monitor.html (first screen: "no alarm" or the alarms; then per statistic a time
series with its alarm line), monitor.json (every window's every test) and alarms.csv (one row per alarm).

Everything written here comes from a :class:`MonitorResult`: keyed hashes never appear (the result holds
none), acquisition field values are the non-identifying technical ones, HTML is escaped (jinja2
autoescape) and CSV cells cannot become spreadsheet formulas (chestxr.core csvsafe).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

import numpy as np

from chestxr.core import escape_row, write_text_atomic
from chestxr.monitoring._results import MonitorResult
from chestxr.reporting import render_template

DPI = 80
#: -log10(p) is drawn up to this (smaller p-values sit on the top edge)
MAX_LOG10 = 12.0
ALARM_COLUMNS = ("window", "begins", "ends", "test", "kind", "finding", "p_holm", "summary", "threatens", "action")
KIND_TITLES = OrderedDict(
    [
        ("input", "Inputs: acquisition fields, image statistics, embedding sketch"),
        ("output", "Outputs: score distributions and positive-call rates"),
        ("prevalence", "Prevalence in use: PPV / NPV promises"),
        ("labels", "Confirmed labels: promises checked as labels arrive"),
    ]
)


def _figure(size: tuple[float, float]) -> Any:
    """A figure on the Agg canvas, without pyplot (no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _data_uri(fig: Any) -> str:
    """The figure as a PNG data URI at :data:`DPI`."""
    import base64

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


F = TypeVar("F", bound=Callable[..., str])


def _literal_text(fn: F) -> F:
    """Draw every text literally (mathtext off), so a finding named ``$x^$`` shows as written."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_literal_text
def _pvalue_series(x: np.ndarray, p_holm: np.ndarray, alarm: np.ndarray, alpha: float, title: str) -> str:
    """-log10 of the Holm-adjusted p-value per window, the alarm line at -log10(alpha), alarms in red."""
    fig = _figure((6.0, 1.7))
    ax = fig.add_axes((0.08, 0.22, 0.9, 0.62))
    with np.errstate(divide="ignore"):
        y = np.minimum(-np.log10(np.clip(p_holm, 1e-300, 1.0)), MAX_LOG10)
    ax.plot(x, y, color="#3465a4", lw=1.0, marker="o" if x.size <= 60 else None, ms=2.5)
    if alarm.any():
        ax.plot(x[alarm], y[alarm], "o", color="#b3261e", ms=4)
    ax.axhline(-math.log10(alpha), color="#b3261e", ls="--", lw=1.0)
    ax.set_ylim(0, max(-math.log10(alpha) * 1.6, float(np.nanmax(y, initial=0.0)) * 1.1, 1.0))
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_ylabel("-log10 p (Holm)", fontsize=7)
    ax.tick_params(labelsize=7)
    return _data_uri(fig)


@_literal_text
def _band_series(
    x: np.ndarray,
    est: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    line: float,
    title: str,
    ylabel: str,
    below_is_alarm: bool,
) -> str:
    """An estimate with its interval per window and a reference / promised level line."""
    fig = _figure((6.0, 1.7))
    ax = fig.add_axes((0.08, 0.22, 0.9, 0.62))
    ax.fill_between(x, lo, hi, color="#c6d5ea", step="mid" if x.size > 1 else None)
    ax.plot(x, est, color="#3465a4", lw=1.0, marker="o" if x.size <= 60 else None, ms=2.5)
    if math.isfinite(line):
        ax.axhline(line, color="#b3261e" if below_is_alarm else "#555", ls="--", lw=1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)
    return _data_uri(fig)


def _series(result: MonitorResult) -> dict[str, list[dict[str, Any]]]:
    """Per kind, one panel per statistic: {name, plot, alarms, method, last summary}."""
    x = np.array([w.index for w in result.windows], dtype=float)
    names: "OrderedDict[str, Any]" = OrderedDict()
    for w in result.windows:
        for t in w.tests:
            names.setdefault(t.name, t)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KIND_TITLES}
    for name, first in names.items():
        p = np.full(x.size, np.nan)
        alarm = np.zeros(x.size, dtype=bool)
        last = first
        for i, w in enumerate(result.windows):
            for t in w.tests:
                if t.name == name:
                    p[i] = t.p_holm
                    alarm[i] = t.alarm
                    last = t
        out[first.kind].append(
            {
                "name": name,
                "plot": _pvalue_series(x, p, alarm, result.alpha, name),
                "n_alarms": int(alarm.sum()),
                "method": last.method,
                "summary": last.summary,
                "threatens": last.threatens,
            }
        )
    prevalence = []
    for finding in result.findings:
        rows = [(i, p) for i, w in enumerate(result.windows) for p in w.prevalence if p.finding == finding]
        if not rows:
            continue
        idx = np.array([i for i, _ in rows], dtype=float)
        est = np.array([p.estimate for _, p in rows])
        lo = np.array([p.low for _, p in rows])
        hi = np.array([p.high for _, p in rows])
        last = rows[-1][1]
        prevalence.append(
            {
                "name": finding,
                "plot": _band_series(
                    idx, est, lo, hi, last.reference, f"{finding}: prevalence (BBSE, exact box)", "prevalence", False
                ),
                "last": last,
            }
        )
    labels = []
    promises: "OrderedDict[str, list[Any]]" = OrderedDict()
    for i, w in enumerate(result.windows):
        for b in w.labels:
            promises.setdefault(b.promise, []).append((i, b))
    for promise, rows_b in promises.items():
        idx = np.array([i for i, _ in rows_b], dtype=float)
        est = np.array([b.estimate for _, b in rows_b])
        up = np.array([b.upper for _, b in rows_b])
        level = rows_b[-1][1].level
        labels.append(
            {
                "name": promise,
                "plot": _band_series(idx, est, np.minimum(est, up), up, level, promise, "estimate, upper bound", True),
                "last": rows_b[-1][1],
            }
        )
    out["prevalence_estimates"] = prevalence
    out["label_bounds"] = labels
    return out


def alarms_csv(result: MonitorResult) -> str:
    """alarms.csv text: one row per alarm (:data:`ALARM_COLUMNS`), cells escaped against formulas."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(escape_row(ALARM_COLUMNS))
    for a in result.alarms:
        w.writerow(
            escape_row(
                [
                    a.window,
                    a.begins or "",
                    a.ends or "",
                    a.test,
                    a.kind,
                    a.finding or "",
                    f"{a.p_holm:.3g}",
                    a.summary,
                    "; ".join(a.threatens),
                    a.action,
                ]
            )
        )
    return buf.getvalue()


def write_monitor_outputs(
    result: MonitorResult, out_dir: str | Path, *, title: str, context: Optional[Mapping[str, Any]] = None
) -> dict[str, Path]:
    """Write monitor.html, monitor.json and alarms.csv into ``out_dir`` (made by the caller; each file
    atomically). ``context``: extra key/value lines for the report header (run, logs read)."""
    from chestxr import __version__

    out = Path(out_dir)
    data = result.to_dict()
    if context:
        data["context"] = dict(context)
    paths = {"json": out / "monitor.json", "alarms": out / "alarms.csv", "html": out / "monitor.html"}
    write_text_atomic(paths["json"], json.dumps(data, indent=1, allow_nan=False) + "\n")
    write_text_atomic(paths["alarms"], alarms_csv(result))
    alarms = result.alarms
    windows_alarmed = sorted({a.window for a in alarms})
    html = render_template(
        "monitor.html",
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        result=result,
        alarms=alarms,
        windows_alarmed=windows_alarmed,
        kinds=KIND_TITLES,
        series=_series(result),
        context=list((context or {}).items()),
        last=result.windows[-1] if result.windows else None,
        log10_alpha=-math.log10(result.alpha),
    )
    write_text_atomic(paths["html"], html)
    return paths
