"""The clinical-review workflows on a run folder: calibrate thresholds, evaluate on a split,
predict new studies into a review worklist. Each returns what it wrote; the CLI only parses.

A facade: the workflows live one per module, :func:`calibrate_run` in chestxr/runs/calibrating.py,
:func:`evaluate_run` in chestxr/runs/evaluating.py, :func:`predict_run` in chestxr/runs/predicting.py, and
what they share (RunLike, BadImagePolicy, loading a labelled split, the training-patient overlap check, the
prediction table) in chestxr/runs/workflow_common.py. Import from here or from those modules.
"""

from __future__ import annotations

from chestxr.runs.calibrating import calibrate_run
from chestxr.runs.evaluating import evaluate_run
from chestxr.runs.predicting import predict_run
from chestxr.runs.workflow_common import BadImagePolicy, RunLike

__all__ = ["calibrate_run", "evaluate_run", "predict_run", "RunLike", "BadImagePolicy"]
