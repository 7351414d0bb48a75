"""Figures and HTML helpers for the reports: small matplotlib panels (Agg canvas, no pyplot) and PNG data URIs.

Everything here returns strings ready to embed in a self-contained HTML page
(``data:image/png;base64,...``) so reports need no network, no JavaScript and no side files.
Plots are kept small (about 80 dpi, a few inches) so a 14-finding report stays a few MB.
User text (finding names, legends) is drawn as plain text: matplotlib's mathtext is off
(``text.parse_math: False``), so a name such as ``$x^$`` shows literally instead of crashing the report.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from chestxr.evaluation import MIN_BIN_COUNT, NOT_CALIBRATED, ReliabilityBins

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DPI = 80


def render_template(name: str, **context: Any) -> str:
    """Render ``chestxr/templates/<name>`` with jinja2, autoescape on for every template.

    Every string from the caller (finding names, IDs, titles) is HTML-escaped; only the
    base64 data URIs made here go into ``src`` attributes, and they contain no markup.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = format_number
    env.filters["thr"] = format_threshold
    env.filters["pct"] = format_percent
    return env.get_template(name).render(**context)


def format_threshold(value: Any) -> str:
    """A threshold to 4 digits; None/NaN -> NOT_CALIBRATED (such a finding calls nothing)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return NOT_CALIBRATED
    return NOT_CALIBRATED if v != v else format_number(v, 4)


def format_number(value: Any, digits: int = 3) -> str:
    """``0.81234 -> '0.812'``; None/NaN -> '–' (undefined metric); ints stay ints."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}f}"


def format_percent(value: Any, digits: int = 1) -> str:
    """``0.1234 -> '12.3%'``; None/NaN -> '–'."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    return f"{100 * v:.{digits}f}%"


def png_data_uri(png: bytes) -> str:
    """PNG bytes -> ``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_data_uri(fig: Any) -> str:
    """Save a matplotlib figure as PNG (at :data:`DPI`) and return its data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return png_data_uri(buf.getvalue())


_F = TypeVar("_F", bound=Callable[..., Any])


def plain_text(fn: _F) -> _F:
    """Run a plotting function with mathtext off, so every text it draws (finding names) is literal."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _new_figure(size: tuple[float, float]) -> Any:
    """A figure on the Agg canvas, without pyplot (no global state, no GUI backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def array_to_png(image: np.ndarray, *, max_side: int | None = None) -> bytes:
    """An image as PNG bytes.

    image: (h, w) float in [0, 1] (grayscale) or (h, w, 3) float in [0, 1] (RGB); values outside
    [0, 1] are clipped, NaN becomes 0. ``max_side``: downscale (aspect kept) so neither side exceeds it.
    """
    from PIL import Image

    arr = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an (h, w) or (h, w, 3) image, got shape {arr.shape}")
    img = Image.fromarray(np.round(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8))
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (jet colormap) over a grayscale image.

    image: (h, w) float [0, 1]; heatmap: (h2, w2) float [0, 1], resized (bilinear) to (h, w).
    Returns (h, w, 3) float RGB in [0, 1]; the overlay is weighted by the heatmap so cold
    regions keep the radiograph visible.
    """
    from matplotlib import colormaps
    from PIL import Image

    img = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0, 1)
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, 1)
    if img.ndim != 2 or hm.ndim != 2:
        raise ValueError(f"expected 2-D image and heatmap, got {img.shape} and {hm.shape}")
    if hm.shape != img.shape:
        pil = Image.fromarray(hm, mode="F").resize((img.shape[1], img.shape[0]), Image.Resampling.BILINEAR)
        hm = np.clip(np.asarray(pil, dtype=np.float32), 0, 1)
    color = colormaps["jet"](hm)[..., :3].astype(np.float32)
    weight = (alpha * hm)[..., None]
    return (1 - weight) * img[..., None] + weight * color


@plain_text
def plot_finding_panels(
    *,
    finding: str,
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float,
    reliability: ReliabilityBins | None,
) -> str | None:
    """ROC, precision-recall and reliability panels for one finding, as a PNG data URI.

    y_true, y_score: (n,) over the unmasked rows only (labels 0/1). The operating point at
    ``threshold`` (score >= threshold is positive) is marked on ROC and PR. ``reliability``: the
    bins from :func:`chestxr.evaluation.reliability_bins` or None.
    Returns None when the finding has no rows at all.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    if y_true.size == 0:
        return None
    n_pos = int(y_true.sum())
    n_neg = int(y_true.size - n_pos)
    pred = y_score >= threshold
    sens = float((pred & (y_true == 1)).sum() / n_pos) if n_pos else math.nan
    spec = float((~pred & (y_true == 0)).sum() / n_neg) if n_neg else math.nan
    ppv = float((pred & (y_true == 1)).sum() / pred.sum()) if pred.sum() else math.nan

    fig = _new_figure((7.2, 2.4))
    axes = fig.subplots(1, 3)
    ax_roc, ax_pr, ax_rel = axes
    if n_pos and n_neg:
        fpr, tpr, _ = roc_curve(y_true, y_score)
        ax_roc.plot(fpr, tpr, lw=1.4, color="#1f5fa8")
        prec, rec, _ = precision_recall_curve(y_true, y_score)
        ax_pr.plot(rec, prec, lw=1.4, color="#1f5fa8", drawstyle="steps-post")
        ax_pr.axhline(n_pos / y_true.size, ls=":", lw=0.8, color="grey")
        ax_roc.plot([1 - spec], [sens], "o", ms=6, color="#d62728", label=f"t={threshold:.3g}")
        if math.isfinite(ppv):
            ax_pr.plot([sens], [ppv], "o", ms=6, color="#d62728")
        ax_roc.legend(loc="lower right", fontsize=7, frameon=False)
    else:
        for ax in (ax_roc, ax_pr):
            ax.text(0.5, 0.5, "one class only:\nundefined", ha="center", va="center", fontsize=8)
    ax_roc.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    _plot_reliability(ax_rel, reliability)
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
        ax.tick_params(labelsize=7)
    ax_roc.set_title(f"ROC: {finding}"[:40], fontsize=9)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _plot_reliability(ax: Any, reliability: ReliabilityBins | None, *, min_count: int = MIN_BIN_COUNT) -> None:
    """Observed fraction of positives (y) against the mean predicted probability in each bin (x, as
    sklearn's calibration_curve); marker area ~ bin count; bins with fewer than ``min_count`` samples
    are drawn as light hollow markers (their fraction is noisy), empty bins are left out."""
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    if reliability is not None and reliability.nonempty.any():
        x, y, count = reliability.points()
        size = 8 + 40 * count / count.max()
        ax.plot(x, y, "-", lw=1.0, color="#2a8a4a", alpha=0.6, zorder=2)
        solid = count >= min_count
        ax.scatter(x[solid], y[solid], s=size[solid], color="#2a8a4a", zorder=3, label=f"bins with >= {min_count}")
        if (~solid).any():
            ax.scatter(
                x[~solid], y[~solid], s=size[~solid], facecolors="none", edgecolors="#2a8a4a", alpha=0.35,
                zorder=3, label=f"< {min_count} images",
            )  # fmt: skip
            ax.legend(loc="upper left", fontsize=6, frameon=False)
    title = "Calibration" + (
        " (quantile bins)" if reliability is not None and reliability.strategy == "quantile" else ""
    )
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction", title=title, xlim=(0, 1), ylim=(0, 1.02))


@plain_text
def plot_reliability_overview(curves: dict[str, ReliabilityBins], *, min_count: int = MIN_BIN_COUNT) -> str | None:
    """One reliability plot with a line per finding (legend) - the report's calibration overview.

    curves: finding -> its bins; each line joins (mean predicted probability, observed fraction) of
    the bins holding >= ``min_count`` samples (sparser bins are omitted here; the per-finding panels
    show them lighter). Returns a PNG data URI, or None if empty.
    """
    from matplotlib import colormaps

    if not curves:
        return None
    fig = _new_figure((4.6, 3.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey", label="perfect")
    cmap = colormaps["tab20"]
    for i, (name, bins) in enumerate(curves.items()):
        x, y, _ = bins.points(min_count)
        if x.size:
            ax.plot(x, y, "-o", ms=2.5, lw=1.0, color=cmap(i % 20), label=name)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed fraction of positives",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Calibration per finding (bins with >= {min_count} images)",
    )
    ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return figure_to_data_uri(fig)
