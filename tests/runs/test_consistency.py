"""One implementation per concept: the paths that used to disagree now agree.

- fine-tuning (model.init_from) matches finding names with the manifest reader's aliases;
- ``cache build`` reads the manifest with the training reader (backslash paths -> same cache keys);
- training's pos_weight is losses.resolve_pos_weight (same values, same refusals);
- one sigmoid (core.numeric) behind engine, inference and calibration.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_args, tiny_config

from chestxr.cli import main
from chestxr.core import ConfigError, sigmoid
from chestxr.modeling import build_model
from chestxr.runs import load_model, save_model, train


def test_init_from_a_run_saying_pleural_effusion_keeps_the_effusion_row(synth_manifest, tmp_path, frozen_training):
    """A run trained on CheXpert-style names ("Pleural Effusion") fine-tuned on NIH-style ones ("Effusion")."""
    torch.manual_seed(3)
    old = build_model("tiny", 3)
    pre = {"size": 32, "cache_size": 48}
    save_model(
        tmp_path / "chexpert", old, {"findings": ["Pleural Effusion", "Nodule", "Lung Lesion"], "preprocessing": pre}
    )
    logs: list[str] = []
    config = tiny_config(synth_manifest, f"model.init_from={tmp_path / 'chexpert'}")
    run = train(config, out_dir=tmp_path / "nih", log=logs.append).run_dir
    new, meta = load_model(run)
    assert meta.findings == ["Opacity", "Cardiomegaly", "Effusion", "Nodule"]
    w_old, b_old = old.head.weight.detach(), old.head.bias.detach()
    # frozen (lr 0): the head rows are exactly the transferred ones; Effusion <- "Pleural Effusion", Nodule <- Nodule
    assert torch.equal(new.head.weight[2], w_old[0]) and torch.equal(new.head.bias[2], b_old[0])
    assert torch.equal(new.head.weight[3], w_old[1]) and torch.equal(new.head.bias[3], b_old[1])
    for j in (0, 1):  # findings the old run did not have get fresh rows
        assert not any(torch.equal(new.head.weight[j], w_old[i]) for i in range(3))
    assert any("3 -> 4 findings (2 head rows kept)" in line for line in logs), logs


def test_cache_build_then_train_hits_the_cache_with_backslash_paths(synth_manifest, tmp_path, monkeypatch, capsys):
    """A manifest exported on Windows (images\\x.png): cache build and training must use the same keys."""
    from chestxr.imaging import ImageCache

    data = tmp_path / "data"
    shutil.copytree(synth_manifest.parent / "images", data / "images")
    frame = pd.read_csv(synth_manifest, dtype=str, keep_default_na=False)
    frame["path"] = frame["path"].str.replace("/", "\\", regex=False)
    assert frame["path"].str.contains("\\\\", regex=True).all()
    manifest = data / "manifest.csv"
    frame.to_csv(manifest, index=False)
    cache_dir = tmp_path / "cache"
    rc = main(["cache", "build", str(manifest), "--cache-dir", str(cache_dir), "--workers", "1", *tiny_args()])
    out = capsys.readouterr().out
    assert rc == 0 and f"{len(frame)} image(s): {len(frame)} built, 0 already cached, 0 failed" in out
    entries = sorted(p.name for p in cache_dir.rglob("*.npy"))
    assert len(entries) == len(frame)

    def no_decoding(self, path, target):
        raise AssertionError(f"training missed the cache for {path}")

    monkeypatch.setattr(ImageCache, "_build", no_decoding)  # every image must come from the cache
    run = train(
        tiny_config(manifest, f"data.cache_dir={cache_dir}"), out_dir=tmp_path / "run", log=lambda s: None
    ).run_dir
    assert (run / "model.safetensors").is_file()
    assert sorted(p.name for p in cache_dir.rglob("*.npy")) == entries


def test_training_pos_weight_is_resolve_pos_weight(synth_manifest, tmp_path, monkeypatch):
    import chestxr.modeling._losses as losses
    import chestxr.modeling._training as fitting  # the epoch loop builds the loss

    seen = []
    real = fitting.make_loss

    def spy(*, pos_weight, info, ovr):
        seen.append(pos_weight)
        return real(pos_weight=pos_weight, info=info, ovr=ovr)

    monkeypatch.setattr(fitting, "make_loss", spy)
    train(tiny_config(synth_manifest, "train.pos_weight=auto"), out_dir=tmp_path / "auto", log=lambda s: None)
    from chestxr.data import load_training_splits

    tr = load_training_splits(tiny_config(synth_manifest))["train"]
    expected = losses.resolve_pos_weight("auto", targets=torch.as_tensor(tr.targets), mask=torch.as_tensor(tr.mask))
    assert torch.equal(seen[0], expected)
    # analytic check of "auto": n_negative / n_positive over the unmasked training labels
    t = np.where(tr.mask, tr.targets, 0.0)
    np.testing.assert_allclose(seen[0].numpy(), ((tr.mask.sum(0) - t.sum(0)) / t.sum(0)).clip(0.01, 100), rtol=1e-6)
    # the refusals are resolve_pos_weight's (training used to accept a negative weight silently)
    with pytest.raises(ConfigError, match="values must be > 0"):
        train(tiny_config(synth_manifest, "train.pos_weight=-1"), out_dir=tmp_path / "neg", log=lambda s: None)
    with pytest.raises(ConfigError, match="3 values for 4 findings"):
        train(tiny_config(synth_manifest, "train.pos_weight=[1,2,3]"), out_dir=tmp_path / "len", log=lambda s: None)


def test_one_sigmoid_is_stable_and_used_by_predictions():
    from chestxr.modeling import Predictions

    z = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    with np.errstate(over="raise"):  # 1 / (1 + exp(800)) would overflow
        p = sigmoid(z)
    np.testing.assert_allclose(p, [[0.0, 9.357622968840175e-14, 0.5, 1 - 9.357622968840175e-14, 1.0]], rtol=1e-12)
    assert p.dtype == np.float64
    preds = Predictions(logits=z.astype(np.float32), indices=np.array([0]), skipped=[], seconds=0.0)
    np.testing.assert_array_equal(preds.scores, sigmoid(z.astype(np.float32)))
