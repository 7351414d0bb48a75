"""chestxr: train, calibrate and audit multi-label chest X-ray classifiers.

Data flow (one direction)::

    manifest CSV -> manifest.read_manifest -> images.read_image -> transforms -> dataset
      -> models (logits, (B, n_findings)) -> calibration.fit_thresholds -> checkpoint -> report

The public API below is imported lazily, so ``import chestxr`` stays cheap (no torch import)::

    from chestxr import load_config, train, calibrate_run, evaluate_run, predict_run
    run = train(load_config("demo", ["data.manifest=m.csv"]), out_dir="runs/x")
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_config": "chestxr.config",
    "Config": "chestxr.config",
    "read_image": "chestxr.images",
    "read_image_with_meta": "chestxr.images",
    "ReadOptions": "chestxr.images",
    "build_transform": "chestxr.transforms",
    "ImageCache": "chestxr.cache",
    "read_manifest": "chestxr.manifest",
    "validate_manifest": "chestxr.manifest",
    "write_manifest": "chestxr.manifest",
    "split_manifest": "chestxr.splits",
    "describe_manifest": "chestxr.splits",
    "apply_label_policy": "chestxr.findings",
    "convert_table": "chestxr.converters",
    "build_model": "chestxr.models",
    "masked_bce_with_logits": "chestxr.losses",
    "load_model": "chestxr.checkpoint",
    "train": "chestxr.train",
    "fit_thresholds": "chestxr.calibration",
    "evaluate_predictions": "chestxr.metrics",
    "bootstrap_metrics": "chestxr.metrics",
    "fit_probability_calibrator": "chestxr.probability",
    "load_run": "chestxr.inference",
    "calibrate_run": "chestxr.audit",
    "evaluate_run": "chestxr.audit",
    "predict_run": "chestxr.audit",
    "generate_synthetic_dataset": "chestxr.synthetic",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'chestxr' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
