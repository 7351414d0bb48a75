"""The proof of the pipeline: the full demo - 400 synthetic images, patient-level split, the demo recipe
trained on the CPU - clears its bar on the held-out test patients with a margin, for seeds 0, 1 and 2 at
one torch thread (what CI runs: pytest -n 2, one thread per worker; see conftest.py). The bar: macro
AUROC >= 0.93 and every finding >= 0.85 (chestxr/cli/_demo.py (DEMO_BAR)). Measured with 1 and 2 threads:
macro 0.990-0.999, worst finding 0.98-0.995."""

from __future__ import annotations

import json

import pytest
import torch

from chestxr.cli import main
from chestxr.cli._demo import DEMO_BAR

pytestmark = pytest.mark.slow


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_demo_clears_its_bar(tmp_path, capsys, one_thread, seed):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--bootstrap", "100", "--seed", str(seed)]) == 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    per = {f: v["auroc"] for f, v in metrics["findings"].items()}
    assert set(per) == {"Opacity", "Cardiomegaly", "Effusion", "Nodule"}
    assert metrics["macro"]["auroc"] >= DEMO_BAR["macro"], per
    assert min(per.values()) >= DEMO_BAR["finding"], per
    assert metrics["n_patients"] >= 30
    printed = capsys.readouterr().out
    assert "is not met" not in printed  # no warning that the bar was missed
    assert "chestxr approve " in printed
    thresholds = json.loads((out / "run" / "thresholds.json").read_text())
    assert thresholds["split"] == "val" and len(thresholds["thresholds"]) == 4
    # issue 22.6: the flagship promise, jointly for the 4 findings, refused for none; card and approve command
    assert all(r["status"] == "guaranteed" for r in thresholds["thresholds"]), thresholds["thresholds"]
    assert thresholds["guarantee_family"]["size"] == 4 and thresholds["guarantee_family"]["simultaneous"]
    assert all(r["method"].startswith("sensitivity:") for r in thresholds["thresholds"])
    assert (out / "card" / "model_card.html").exists()
    assert "jointly with 95% confidence" in (out / "card" / "model_card.md").read_text()
