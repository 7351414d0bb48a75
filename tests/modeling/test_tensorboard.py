"""``train.tensorboard: true`` writes loss, lr, images/s and per-finding val AUROC per epoch to RUN/tb/;
read back with TensorBoard's own event reader, the values equal metrics.csv. Off by default."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from chestxr.core import config_from_dict
from chestxr.runs import train

pytest.importorskip("tensorboard")

BASE = {
    "name": "tb",
    "data": {"num_workers": 0, "val_fraction": 0.4, "test_fraction": 0.0},
    "preprocessing": {"size": 32, "cache_size": 48},
    "model": {"backbone": "tiny"},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.003},
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from chestxr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_images=32, seed=5, size=48)


def _cfg(manifest, **train_over):
    d = copy.deepcopy(BASE)
    d["data"]["manifest"] = str(manifest)
    d["train"].update(train_over)
    return config_from_dict(d)


def test_event_file_has_every_epoch_scalar(synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(_cfg(synth, tensorboard=True), out_dir=tmp_path / "run").run_dir
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    findings = ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
    metrics = pd.read_csv(run / "metrics.csv")
    columns = {
        "loss/train": "train_loss",
        "loss/val": "val_loss",
        "lr": "lr",
        "throughput/train_images_per_s": "train_images_per_s",
        "val_auroc/mean": "val_mean_auroc",
        **{f"val_auroc/{f}": f"val_auroc_{f}" for f in findings},
    }
    tags = set(acc.Tags()["scalars"])
    defined = {tag for tag, column in columns.items() if metrics[column].notna().any()}
    assert len(defined) >= 7 and defined <= tags  # a finding with one class in val has no AUROC to log
    for tag in defined:
        column = columns[tag]
        expected = metrics[column].dropna()
        got = acc.Scalars(tag)
        assert [e.step for e in got] == metrics.loc[expected.index, "epoch"].tolist(), tag
        assert [e.value for e in got] == pytest.approx(expected.tolist(), rel=1e-5), tag
    assert acc.Scalars("lr")[0].value != acc.Scalars("lr")[1].value or metrics["lr"].nunique() == 1


def test_off_by_default(synth, tmp_path):
    run = train(_cfg(synth), out_dir=tmp_path / "run").run_dir
    assert not (run / "tb").exists()
