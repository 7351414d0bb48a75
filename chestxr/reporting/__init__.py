"""Floor 5, what people read (imports core, data, evaluation): the evaluation report (report.html,
metrics.csv/json, predictions.csv) and its tables, the per-study review worklist (predictions.csv,
study_predictions.csv, review.html, sorted for review), the model card (HTML + Markdown), plots and
Grad-CAM maps, rendered from self-contained, escaped HTML templates. Reads no run folder itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chestxr.core import lazy_face

if TYPE_CHECKING:
    from chestxr.reporting._card import build_card, load_intended_use, render_markdown, write_model_card
    from chestxr.reporting._gradcam import find_last_conv, grad_cam
    from chestxr.reporting._plots import (
        array_to_png,
        overlay_heatmap,
        plot_finding_panels,
        plot_reliability_overview,
        render_template,
    )
    from chestxr.reporting._report import write_evaluation_report
    from chestxr.reporting._review import build_study_table, classify_calls, logit_margin, write_review_report
    from chestxr.reporting._tables import (
        AGE_BANDS,
        DEFAULT_SUBGROUPS,
        ID_COLUMNS,
        age_band,
        build_metrics_table,
        build_predictions_table,
        compute_subgroup_metrics,
        image_table,
    )

__all__ = [
    "AGE_BANDS",
    "DEFAULT_SUBGROUPS",
    "ID_COLUMNS",
    "age_band",
    "array_to_png",
    "build_card",
    "build_metrics_table",
    "build_predictions_table",
    "build_study_table",
    "classify_calls",
    "compute_subgroup_metrics",
    "find_last_conv",
    "grad_cam",
    "image_table",
    "load_intended_use",
    "logit_margin",
    "overlay_heatmap",
    "plot_finding_panels",
    "plot_reliability_overview",
    "render_markdown",
    "render_template",
    "write_evaluation_report",
    "write_model_card",
    "write_review_report",
]

__getattr__, __dir__ = lazy_face(__name__, __file__, __all__)
