"""chestxr: train, calibrate and audit multi-label chest X-ray classifiers.

The workflows and what they return, as the command line has them (``chestxr train``, ``calibrate``,
``evaluate``, ``predict``, ``approve``, ``card``, ``export``, ``monitor``)::

    from chestxr import load_config, train, calibrate_run, evaluate_run, predict_run
    run = train(load_config("demo", ["data.manifest=m.csv"]), out_dir="runs/x")   # a Run
    calibrate_run(run, "m.csv", split="val")            # a CalibrationResult; `run` now holds the new thresholds
    report = evaluate_run(run, "m.csv", "eval", split="test")   # an EvaluationResult (report.metrics, report.html)
    worklist = predict_run(run, "review", inputs=["dicoms/"])    # a PredictionResult (and review/inference_log.jsonl)
    watch = monitor(run.run_dir, ["review/"], window="500")       # a MonitorResult: .quiet, .alarms, .windows

Everything else is in the floors, each with its public face (bottom to top): :mod:`chestxr.core`,
:mod:`chestxr.data`, :mod:`chestxr.imaging`, :mod:`chestxr.modeling`, :mod:`chestxr.evaluation`,
:mod:`chestxr.reporting`, :mod:`chestxr.runs`, :mod:`chestxr.monitoring`, :mod:`chestxr.pacs`, :mod:`chestxr.cli`; operating points
also at :mod:`chestxr.calibration`. The names below are imported lazily, so ``import chestxr`` stays cheap
(no torch import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from chestxr.core import Config, load_config
    from chestxr.data import read_manifest, split_manifest, validate_manifest, write_manifest
    from chestxr.evaluation import Guarantee, OperatingPoint
    from chestxr.imaging import LoaderOptions
    from chestxr.monitoring import MonitorResult, monitor
    from chestxr.runs import (
        ApprovalStatus,
        CalibrationResult,
        EvaluationResult,
        PredictionResult,
        Run,
        RunMetadata,
        RunPredictions,
        approval_status,
        approve_run,
        calibrate_run,
        card_run,
        evaluate_run,
        export_model,
        export_monai_bundle,
        load_packed,
        load_run,
        pack_run,
        predict_run,
        train,
    )

_API = {
    "load_config": "chestxr.core",
    "Config": "chestxr.core",
    "read_manifest": "chestxr.data",
    "validate_manifest": "chestxr.data",
    "write_manifest": "chestxr.data",
    "split_manifest": "chestxr.data",
    "LoaderOptions": "chestxr.imaging",
    "OperatingPoint": "chestxr.evaluation",
    "Guarantee": "chestxr.evaluation",
    "train": "chestxr.runs",
    "Run": "chestxr.runs",
    "load_run": "chestxr.runs",
    "RunMetadata": "chestxr.runs",
    "RunPredictions": "chestxr.runs",
    "calibrate_run": "chestxr.runs",
    "CalibrationResult": "chestxr.runs",
    "evaluate_run": "chestxr.runs",
    "EvaluationResult": "chestxr.runs",
    "predict_run": "chestxr.runs",
    "PredictionResult": "chestxr.runs",
    "approve_run": "chestxr.runs",
    "approval_status": "chestxr.runs",
    "ApprovalStatus": "chestxr.runs",
    "card_run": "chestxr.runs",
    "export_model": "chestxr.runs",
    "export_monai_bundle": "chestxr.runs",
    "pack_run": "chestxr.runs",
    "load_packed": "chestxr.runs",
    "monitor": "chestxr.monitoring",
    "MonitorResult": "chestxr.monitoring",
}

__all__ = [
    "__version__",
    "load_config",
    "Config",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
    "split_manifest",
    "LoaderOptions",
    "OperatingPoint",
    "Guarantee",
    "train",
    "Run",
    "load_run",
    "RunMetadata",
    "RunPredictions",
    "calibrate_run",
    "CalibrationResult",
    "evaluate_run",
    "EvaluationResult",
    "predict_run",
    "PredictionResult",
    "approve_run",
    "approval_status",
    "ApprovalStatus",
    "card_run",
    "export_model",
    "export_monai_bundle",
    "pack_run",
    "load_packed",
    "monitor",
    "MonitorResult",
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'chestxr' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
