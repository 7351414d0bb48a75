"""The proof of the pipeline (issue: foundation): the full demo - 400 synthetic images, patient-level
split, the demo recipe trained on the CPU - reaches mean AUROC > 0.9 on the held-out test patients."""

from __future__ import annotations

import json

import pytest

from chestxr.cli.main import main

pytestmark = pytest.mark.slow


def test_full_demo_reaches_auroc_above_0_9(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--bootstrap", "200"]) == 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    per = {f: v["auroc"] for f, v in metrics["findings"].items()}
    assert set(per) == {"Opacity", "Cardiomegaly", "Effusion", "Nodule"}
    assert metrics["macro"]["auroc"] > 0.9, per
    assert metrics["n_patients"] >= 30
    thresholds = json.loads((out / "run" / "thresholds.json").read_text())
    assert thresholds["split"] == "val" and len(thresholds["thresholds"]) == 4
