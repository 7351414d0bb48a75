"""Training runs end to end on tiny synthetic data: run folder contract, resume == uninterrupted,
one-vs-rest, fine-tuning with another finding list, bad images skipped, NaN loss stops cleanly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_args, tiny_config

from chestxr.cli import main
from chestxr.core import TrainingError
from chestxr.runs import train

#: this module's recipe: the shared tiny one (tests/conftest.py), 3 epochs at lr 0.003, 64 px cache.
RECIPE = ("name=t", "train.epochs=3", "train.lr=0.003", "preprocessing.cache_size=64")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from chestxr.data import generate_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(out / "data", n_images=48, seed=1, size=64)


def cfg(manifest, **over):
    """tiny_config with RECIPE and ``section__key=value`` overrides (values given as Python objects)."""
    extra = [f"{dotted.replace('__', '.')}={json.dumps(v)}" for dotted, v in over.items()]
    return tiny_config(manifest, *RECIPE, *extra)


def test_run_folder_contract(synth, tmp_path):
    run = train(cfg(synth), out_dir=tmp_path / "run").run_dir
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "model.safetensors", "model.json", "last", "metrics.csv", "splits.csv"} <= names
    meta = json.loads((run / "model.json").read_text())
    assert meta["findings"] == ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
    assert meta["backbone"] == "tiny" and meta["mode"] == "multilabel"
    assert meta["preprocessing"]["size"] == 32
    assert meta["thresholds"] is None
    splits = pd.read_csv(run / "splits.csv")
    train_patients = set(splits.loc[splits["split"] == "train", "patient_id"].astype(str))
    from chestxr.runs import hash_patients, read_key

    assert meta["training_patients_sha"] == hash_patients(train_patients, read_key(run))
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert np.isfinite(metrics["train_loss"]).all()
    assert "val_auroc_Nodule" in metrics.columns


def test_existing_run_folder_needs_overwrite(synth, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    code = main(
        [
            "train",
            "--manifest",
            str(synth),
            "--out",
            str(out),
            *tiny_args(),
        ]
    )
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_resume_equals_uninterrupted(synth, tmp_path):
    c = cfg(synth, train__epochs=3)
    full = train(c, out_dir=tmp_path / "full").run_dir
    part = train(c, out_dir=tmp_path / "part", stop_after_epochs=1).run_dir
    assert len(pd.read_csv(part / "metrics.csv")) == 1
    train(c, out_dir=part, resume=True)
    a = pd.read_csv(full / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    b = pd.read_csv(part / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    pd.testing.assert_frame_equal(a, b)
    from safetensors.torch import load_file

    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_same_seed_same_metrics(synth, tmp_path):
    c = cfg(synth, train__epochs=2)
    a = pd.read_csv(train(c, out_dir=tmp_path / "a").run_dir / "metrics.csv")
    b = pd.read_csv(train(c, out_dir=tmp_path / "b").run_dir / "metrics.csv")
    cols = ["train_loss", "val_loss", "val_mean_auroc"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_one_vs_rest_run(synth, tmp_path):
    from chestxr.runs import load_model

    run = train(cfg(synth, model__mode="ovr", train__epochs=2), out_dir=tmp_path / "ovr").run_dir
    model, meta = load_model(run)
    assert meta.mode == "ovr" and len(model.members) == 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert len(meta.best_val_auroc_per_finding) == 4


def test_binary_single_finding(synth, tmp_path):
    run = train(cfg(synth, data__findings=["Cardiomegaly"], train__epochs=1), out_dir=tmp_path / "bin").run_dir
    meta = json.loads((run / "model.json").read_text())
    assert meta["findings"] == ["Cardiomegaly"] and meta["task"] == "binary"


def test_finetune_with_other_findings(synth, tmp_path, request):
    from chestxr.runs import load_model

    first = train(cfg(synth, train__epochs=1), out_dir=tmp_path / "first").run_dir
    request.getfixturevalue("frozen_training")  # lr 0 from here on
    second = train(
        cfg(synth, data__findings=["Nodule", "Cardiomegaly"], model__init_from=str(first), train__epochs=1),
        out_dir=tmp_path / "second",
    ).run_dir
    m1, _ = load_model(first)
    m2, meta2 = load_model(second)
    assert meta2.findings == ["Nodule", "Cardiomegaly"]
    # lr 0: weights are exactly the transferred ones; head rows follow the finding names
    assert torch.equal(m2.head.weight[0], m1.head.weight[3])
    assert torch.equal(m2.head.weight[1], m1.head.weight[1])
    assert torch.equal(m2.features[0][0].weight, m1.features[0][0].weight)


def test_bad_image_skip_and_error(synth, tmp_path):
    frame = pd.read_csv(synth)
    bad = synth.parent / "images" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    row = frame.iloc[0].copy()
    row["path"] = "images/broken.png"
    frame = pd.concat([frame, row.to_frame().T], ignore_index=True)
    frame["split"] = ["train"] * 30 + ["val"] * (len(frame) - 30)
    frame.loc[len(frame) - 1, "split"] = "train"
    man = synth.parent / "with_bad.csv"
    frame.to_csv(man, index=False)
    from chestxr.core import ImageReadError

    with pytest.raises(ImageReadError, match="broken.png"):
        train(cfg(man, train__epochs=1), out_dir=tmp_path / "err")
    run = train(cfg(man, train__epochs=1, data__on_bad_image="skip"), out_dir=tmp_path / "skip").run_dir
    skipped = pd.read_csv(run / "skipped.csv")
    assert list(skipped["path"].str.endswith("broken.png")) == [True]


def test_nan_loss_stops_with_clear_message():
    from chestxr.imaging import collate
    from chestxr.modeling import masked_bce_with_logits, train_one_epoch

    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.w * torch.full((x.shape[0], 2), float("inf"))

    batch = [
        {
            "image": torch.zeros(3, 8, 8),
            "target": torch.tensor([1.0, 0.0]),
            "mask": torch.tensor([True, True]),
            "index": i,
            "ok": True,
            "reason": "",
            "path": f"x{i}.png",
        }
        for i in range(2)
    ]
    model = Exploding()
    before = model.w.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match="loss became .* at batch 0"):
        train_one_epoch(
            model,
            [collate(batch)],
            opt,
            loss_fn=masked_bce_with_logits,
            device=torch.device("cpu"),
            channels_last=False,
        )
    assert torch.equal(model.w.detach(), before)  # no step taken with a non-finite loss
