"""Determinism on CPU: the same config and seed give the same metrics and identical weights; the demo
run twice gives the same numbers; a different seed gives different weights (the check has teeth)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_args
from safetensors.torch import load_file

from chestxr.cli import main

ARGS = tiny_args("train.epochs=2")
TIMING = ["seconds", "train_images_per_s"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("det") / "data", n_images=40, seed=5, size=48)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_same_seed_same_metrics_and_weights(synth, tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "seed1"]
    for run, seed in zip(runs, (0, 0, 1)):
        assert main(["train", "--manifest", str(synth), "--out", str(run), *ARGS, "--set", f"seed={seed}"]) == 0
    a = pd.read_csv(runs[0] / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(runs[1] / "metrics.csv").drop(columns=TIMING)
    assert len(a) == 2 and "val_mean_auroc" in a.columns
    pd.testing.assert_frame_equal(a, b)
    wa, wb, wc = weights(runs[0]), weights(runs[1]), weights(runs[2])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (runs[0] / "splits.csv").read_bytes() == (runs[1] / "splits.csv").read_bytes()
    meta_a = json.loads((runs[0] / "model.json").read_text())
    meta_b = json.loads((runs[1] / "model.json").read_text())
    assert meta_a["weights_sha256"] == meta_b["weights_sha256"]


def test_same_seed_same_predictions(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(synth), "--out", str(run), *ARGS, "--set", "train.epochs=1"]) == 0
    for name in ("p1", "p2"):
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    str(run),
                    "--manifest",
                    str(synth),
                    "--out",
                    str(tmp_path / name),
                    "--workers",
                    "0",
                ]
            )
            == 0
        )
    for table in ("predictions.csv", "study_predictions.csv"):
        assert (tmp_path / "p1" / table).read_bytes() == (tmp_path / "p2" / table).read_bytes()


def _numbers(obj):
    """Every number in a JSON document, with its key path (strings such as times and paths left out)."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if not isinstance(v, str)}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj if not isinstance(v, str)]
    return obj


@pytest.mark.slow
def test_demo_twice_same_metrics(tmp_path, capsys):
    docs = []
    for name in ("d1", "d2"):
        out = tmp_path / name
        assert main(["demo", "--out", str(out), "--images", "60", "--epochs", "2", "--bootstrap", "50"]) == 0
        docs.append(json.loads((out / "report" / "metrics.json").read_text()))
    assert docs[0]["findings"].keys() == {"Opacity", "Cardiomegaly", "Effusion", "Nodule"}
    assert _numbers(docs[0]) == _numbers(docs[1])
    t1 = json.loads((tmp_path / "d1" / "run" / "thresholds.json").read_text())["thresholds"]
    t2 = json.loads((tmp_path / "d2" / "run" / "thresholds.json").read_text())["thresholds"]
    assert [r["threshold"] for r in t1] == [r["threshold"] for r in t2]
