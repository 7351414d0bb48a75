"""chestxr: train, calibrate and audit multi-label chest X-ray classifiers.

Data flow (one direction)::

    manifest CSV -> manifest.read_manifest -> images.read_image -> transforms -> dataset
      -> models (logits, (B, n_findings)) -> evaluation.thresholds.fit_thresholds -> checkpoint -> report

The public API below is imported lazily, so ``import chestxr`` stays cheap (no torch import)::

    from chestxr import load_config, train, calibrate_run, evaluate_run, predict_run
    run = train(load_config("demo", ["data.manifest=m.csv"]), out_dir="runs/x")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_config": "chestxr.core.config",
    "Config": "chestxr.core.config",
    "read_image": "chestxr.imaging.readers",
    "read_image_with_meta": "chestxr.imaging.readers",
    "ReadOptions": "chestxr.imaging.readers",
    "build_transform": "chestxr.imaging.transforms",
    "ImageCache": "chestxr.imaging.cache",
    "read_manifest": "chestxr.data.manifest",
    "validate_manifest": "chestxr.data.manifest",
    "write_manifest": "chestxr.data.manifest",
    "split_manifest": "chestxr.data.splits",
    "describe_manifest": "chestxr.data.splits",
    "apply_label_policy": "chestxr.data.findings",
    "convert_table": "chestxr.data.converters",
    "build_model": "chestxr.modeling.models",
    "masked_bce_with_logits": "chestxr.modeling.losses",
    "load_model": "chestxr.modeling.checkpoint",
    "train": "chestxr.modeling.training",
    "fit_thresholds": "chestxr.evaluation.thresholds",
    "parse_method": "chestxr.evaluation.methods",
    "clopper_pearson": "chestxr.evaluation.intervals",
    "wilson": "chestxr.evaluation.intervals",
    "check_promise": "chestxr.evaluation.promise",
    "evaluate_predictions": "chestxr.evaluation.evaluate",
    "bootstrap_metrics": "chestxr.evaluation.bootstrap",
    "fit_probability_calibrator": "chestxr.evaluation.probability",
    "Run": "chestxr.runs.run",
    "load_run": "chestxr.runs.run",
    "RunMetadata": "chestxr.modeling.run_metadata",
    "calibrate_run": "chestxr.runs.workflows",
    "evaluate_run": "chestxr.runs.workflows",
    "predict_run": "chestxr.runs.workflows",
    "generate_synthetic_dataset": "chestxr.data.synthetic",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'chestxr' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
