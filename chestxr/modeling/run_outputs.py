"""What training writes into the run folder besides weights and last/: model.json's metadata, metrics.csv, skipped.csv.

Used by the epoch loop (chestxr/modeling/fitting.py); CSVs are written atomically with every cell escaped against
spreadsheet formulas (chestxr/core/csvsafe.py).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Optional

from chestxr.core.config import Config, config_to_dict
from chestxr.core.csvsafe import escape_row
from chestxr.core.fileio import write_text_atomic
from chestxr.data.labels import LabeledSet
from chestxr.modeling.run_metadata import RunMetadata


def build_metadata(
    config: Config, findings: list[str], train_set: LabeledSet, run_dir: Optional[Path] = None
) -> RunMetadata:
    """The self-description stored in model.json (everything predict needs).

    Training patients are stored as keyed hashes (HMAC-SHA256 under the run's secret key in
    ``run_dir/patient_hash.key``, see :mod:`chestxr.core.patient_ids`); without ``run_dir`` none are stored.
    """
    from chestxr.core.patient_ids import training_patient_record

    patients: dict[str, Any] = (
        training_patient_record(run_dir, train_set.patient_ids.tolist()) if run_dir is not None else {}
    )
    n = len(findings)
    return RunMetadata(
        findings=list(findings),
        mode=config.model.mode,
        task="binary" if n == 1 and config.model.task != "multiclass" else config.model.task,
        backbone=config.model.backbone,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
        preprocessing=config.preprocessing,
        label_policy=config.labels,
        config=config_to_dict(config),
        training_patients_sha=list(patients.get("training_patients_sha", [])),
        patient_hash=patients.get("patient_hash"),
        training_manifest_hash=train_set.manifest_hash,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(keys))
    for row in history:
        w.writerow(escape_row(row.get(k, "") for k in keys))
    write_text_atomic(path, buf.getvalue())


def write_skipped(
    run_dir: Path, train_set: LabeledSet, val_set: LabeledSet, skipped: dict[tuple[str, int], str]
) -> None:
    if not skipped:
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(["split", "path", "reason"]))
    for (split, i), r in sorted(skipped.items()):
        w.writerow(escape_row([split, (train_set if split == "train" else val_set).paths[i], r]))
    write_text_atomic(run_dir / "skipped.csv", buf.getvalue())
