"""Checkpoints: round trips, metadata versions, exact resume, and refusal of pickles (no code runs)."""

from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

import chestxr
import chestxr.runs._resume as training_state
from chestxr.core import CheckpointError
from chestxr.evaluation import OperatingPoint
from chestxr.modeling import build_model
from chestxr.runs import (
    capture_rng_state,
    load_model,
    load_training_state,
    read_metadata,
    save_model,
    save_training_state,
    update_metadata,
)

FINDINGS = ["Atelectasis", "Effusion", "Pneumonia"]
META = {
    "findings": FINDINGS,
    "task": "multilabel",
    "preprocessing": {"size": 32, "channels": 3, "normalization": "imagenet"},
    "label_policy": {"uncertain": "masked", "blank": "masked"},
    "config": {"seed": 0},
    "training_patients_sha": ["ab12", "cd34"],
}


def _trained_like(model):
    """Give BN running stats and weights non-default values so a round trip is a real check."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, model.chestxr_spec.in_channels, 32, 32))
    return model.eval()


@pytest.mark.parametrize("mode, in_channels, dropout", [("multilabel", 3, 0.0), ("ovr", 1, 0.2)])
def test_round_trip_same_outputs(tmp_path, mode, in_channels, dropout):
    model = _trained_like(build_model("tiny", 3, mode=mode, in_channels=in_channels, dropout=dropout))
    meta_in = {**META, "preprocessing": {**META["preprocessing"], "channels": in_channels}}  # as training writes it
    out_dir = save_model(tmp_path / "run", model, meta_in)
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.json", "model.safetensors"]
    x = torch.randn(2, in_channels, 32, 32)
    for where in (out_dir, out_dir / "model.json", out_dir / "model.safetensors"):
        loaded, meta = load_model(where)
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    assert meta.findings == FINDINGS and meta.mode == mode and meta.in_channels == in_channels
    assert meta.dropout == dropout and meta.backbone == "tiny" and meta.version == 1
    assert meta.thresholds is None and meta.calibration is None and meta.approval is None
    assert meta.versions == {"chestxr": chestxr.__version__, "torch": torch.__version__}
    assert meta.preprocessing.size == 32 and meta.label_policy.uncertain == "masked"
    assert meta.training_patients_sha == ["ab12", "cd34"] and len(meta.weights_sha256) == 64
    doc = json.loads((out_dir / "model.json").read_text())
    assert "torch_version" not in doc and "chestxr_version" not in doc  # versions are stored once
    assert doc["format"] == "chestxr-model" and doc["versions"]["torch"] == torch.__version__


def test_save_model_checks_findings_against_outputs(tmp_path):
    with pytest.raises(CheckpointError, match="2 findings but the model has 3"):
        save_model(tmp_path, build_model("tiny", 3), {"findings": ["A", "B"]})
    with pytest.raises(CheckpointError, match="findings"):
        save_model(tmp_path, build_model("tiny", 3), {})
    with pytest.raises(CheckpointError, match="backbone"):
        save_model(tmp_path, build_model("tiny", 3), {"findings": FINDINGS, "backbone": "resnet18"})


def test_update_metadata_keeps_every_version(tmp_path):
    model = build_model("tiny", 3)
    save_model(tmp_path, model, META)
    v1 = (tmp_path / "model.json").read_text()
    records = [OperatingPoint(f, threshold=t, method="youden") for f, t in zip(FINDINGS, [0.1, 0.2, float("nan")])]
    meta2 = update_metadata(tmp_path, {"thresholds": records}, reason="calibrate youden")
    assert meta2.version == 2 and [r.threshold if r.calibrated else None for r in meta2.thresholds] == [0.1, 0.2, None]
    np.testing.assert_array_equal(meta2.decision_thresholds(), [0.1, 0.2, np.nan])  # NaN: not calibrated
    assert (tmp_path / "model.v1.json").read_text() == v1
    v2 = (tmp_path / "model.json").read_text()
    meta3 = update_metadata(
        tmp_path, {"thresholds": [0.3, 0.3, 0.3], "calibration": {"method": "platt"}}, reason="recalibrate on site B"
    )  # a legacy bare list of numbers is read in finding order
    assert meta3.version == 3 and read_metadata(tmp_path) == meta3
    assert (tmp_path / "model.v2.json").read_text() == v2
    assert json.loads((tmp_path / "model.v1.json").read_text())["thresholds"] is None
    assert [h.reason for h in meta3.history] == ["saved", "calibrate youden", "recalibrate on site B"]
    assert meta3.history[-1].changed == ["calibration", "thresholds"]
    loaded, meta = load_model(tmp_path)  # the weights still match the new metadata
    assert [(r.finding, r.threshold) for r in meta.thresholds] == [(f, 0.3) for f in FINDINGS]
    with pytest.raises(CheckpointError, match="findings"):
        update_metadata(tmp_path, {"findings": ["X", "Y", "Z"]}, reason="rename")
    with pytest.raises(CheckpointError, match="reason"):
        update_metadata(tmp_path, {"thresholds": None}, reason=" ")
    assert read_metadata(tmp_path).version == 3


def test_missing_or_corrupt_metadata_names_the_file(tmp_path):
    save_model(tmp_path, build_model("tiny", 3), META)
    meta_path = tmp_path / "model.json"
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json: cannot read JSON"):
        load_model(tmp_path)
    meta_path.unlink()
    with pytest.raises(CheckpointError, match="model.json: file not found"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_weights_from_another_save_are_detected(tmp_path):
    save_model(tmp_path / "a", build_model("tiny", 3), META)
    save_model(tmp_path / "b", build_model("tiny", 3), META)
    os.replace(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(tmp_path / "a")


def test_weights_of_another_shape_are_refused(tmp_path):
    save_model(tmp_path, build_model("tiny", 3), META)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["findings"] = ["A", "B"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        load_model(tmp_path, verify=False)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["torch.save", "pickle-proto4", "pickle-proto0"])
def test_pickles_are_refused_and_never_run(tmp_path, kind):
    run = tmp_path / "run"
    save_model(run, build_model("tiny", 3), META)
    marker = tmp_path / "pwned"
    target = run / "model.safetensors"
    if kind == "torch.save":
        torch.save({"w": _Payload(marker), **build_model("tiny", 3).state_dict()}, target)
    else:
        target.write_bytes(pickle.dumps(_Payload(marker), protocol=4 if kind.endswith("4") else 0))
    with pytest.raises(CheckpointError, match="safetensors") as err:
        load_model(run, verify=False)
    if kind != "pickle-proto0":
        assert "pickle" in str(err.value) and "arbitrary code" in str(err.value)
    # the training state file gets the same treatment
    save_training_state(
        tmp_path / "last", model=build_model("tiny", 3), optimizer=None, scheduler=None, epoch=0, rng={}, extra={}
    )
    os.replace(target, tmp_path / "last" / "state.safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_training_state(tmp_path / "last", model=build_model("tiny", 3), optimizer=None, scheduler=None)
    assert not marker.exists()


# ----------------------------------------------------------------------------- resume


def _setup(seed):
    torch.manual_seed(seed)
    model = build_model("tiny", 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20)
    return model, opt, sched


def _steps(model, opt, sched, n):
    """Training steps whose data comes from the global torch/numpy/python RNGs."""
    model.train()
    for _ in range(n):
        x = torch.randn(4, 3, 32, 32) * (1 + np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_equals_uninterrupted_run(tmp_path):
    model, opt, sched = _setup(0)
    random.seed(5), np.random.seed(5)
    _steps(model, opt, sched, 3)
    extra = {"best_auroc": float("-inf"), "history": [{"epoch": 1, "loss": 0.5}], "ema": torch.arange(3.0)}
    save_training_state(
        tmp_path / "last", model=model, optimizer=opt, scheduler=sched, epoch=3, rng=capture_rng_state(), extra=extra
    )
    saved_betas = opt.param_groups[0]["betas"]
    saved_exp_avg = opt.state_dict()["state"][0]["exp_avg"].clone()
    _steps(model, opt, sched, 3)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    ref_opt = opt.state_dict()
    next_numbers = (torch.rand(3), np.random.rand(3), random.random())

    model2, opt2, sched2 = _setup(99)  # other init, other RNG position
    state = load_training_state(tmp_path / "last", model=model2, optimizer=opt2, scheduler=sched2)
    assert state["epoch"] == 3 and state["extra"]["best_auroc"] == float("-inf")
    assert state["extra"]["history"] == extra["history"] and torch.equal(state["extra"]["ema"], extra["ema"])
    restored = opt2.state_dict()
    first = restored["state"][0]
    assert float(first["step"]) == 3 and torch.equal(first["exp_avg"], saved_exp_avg)
    betas = restored["param_groups"][0]["betas"]
    assert isinstance(betas, tuple) and betas == saved_betas and betas[0] < 0.9  # OneCycle cycles beta1
    assert sched2.last_epoch == 3
    _steps(model2, opt2, sched2, 3)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, reference[k]), k
    for pid, st in opt2.state_dict()["state"].items():
        assert torch.equal(st["exp_avg"], ref_opt["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], ref_opt["state"][pid]["exp_avg_sq"])
        assert float(st["step"]) == 6
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(torch.rand(3), next_numbers[0])
    assert np.array_equal(np.random.rand(3), next_numbers[1]) and random.random() == next_numbers[2]


def test_training_state_replaced_only_when_complete(tmp_path, monkeypatch):
    model, opt, sched = _setup(0)
    dest = tmp_path / "last"
    save_training_state(dest, model=model, optimizer=opt, scheduler=sched, epoch=1, rng={}, extra={})
    save_training_state(dest, model=model, optimizer=opt, scheduler=sched, epoch=2, rng={}, extra={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    with pytest.raises(CheckpointError, match="cannot store .* at .extra/fn. without pickle"):
        save_training_state(dest, model=model, optimizer=opt, scheduler=sched, epoch=3, rng={}, extra={"fn": print})

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(training_state, "save_tensors", crash)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(dest, model=model, optimizer=opt, scheduler=sched, epoch=4, rng={}, extra={})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_training_state(dest, model=model, optimizer=opt, scheduler=sched)["epoch"] == 2


def test_resume_into_another_model_is_refused(tmp_path):
    model, opt, sched = _setup(0)
    save_training_state(tmp_path / "last", model=model, optimizer=opt, scheduler=sched, epoch=1, rng={}, extra={})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_training_state(tmp_path / "last", model=build_model("tiny", 5), optimizer=None, scheduler=None)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_training_state(tmp_path / "absent", model=model, optimizer=None, scheduler=None)


class _Warmup:
    """A callable LR multiplier object: LambdaLR stores its __dict__ (JSON-able) in state_dict()."""

    def __init__(self, warmup):
        self.warmup = warmup

    def __call__(self, step):
        return min(1.0, (step + 1) / self.warmup)


def test_lambda_schedule_param_groups_and_foreign_rng_values(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", 2).to(memory_format=torch.channels_last)
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 0.1},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=_Warmup(10))
    _steps(model, opt, sched, 2)
    rng = {"python": repr(random.getstate())[:40], "note": "epochs reseed"}
    save_training_state(
        tmp_path / "last",
        model=model,
        optimizer=opt,
        scheduler=sched,
        epoch=4,
        rng=rng,
        extra={"best": {"score": -float("inf"), "epoch": -1, "per_member": None}},
    )
    model2 = build_model("tiny", 2)
    opt2 = torch.optim.AdamW(
        [
            {"params": [p for p in model2.parameters() if p.ndim > 1]},
            {"params": [p for p in model2.parameters() if p.ndim <= 1]},
        ],
        lr=1e-3,
    )
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lr_lambda=_Warmup(3))
    state = load_training_state(tmp_path / "last", model=model2, optimizer=opt2, scheduler=sched2)
    assert state["rng"] == rng and state["extra"]["best"]["score"] == -float("inf")
    assert sched2.lr_lambdas[0].warmup == 10 and sched2.last_epoch == 2
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.1, 0.0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(3e-4)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


# ----------------------------------------------------------------------------- hostile JSON (issue 17.8)


@pytest.mark.parametrize("kind", ["brackets", "deep_but_parseable", "oversize"])
def test_hostile_model_json_is_a_checkpoint_error_naming_the_file(kind, tmp_path, capsys):
    from chestxr.cli import main
    from chestxr.core import CheckpointError

    try:
        from chestxr.runs import MAX_JSON_BYTES, MAX_JSON_DEPTH, read_metadata
    except ImportError:  # before the fix: the defaults it documents now
        from chestxr.runs import read_metadata

        MAX_JSON_BYTES, MAX_JSON_DEPTH = 64 * 2**20, 64

    run = tmp_path / "run"
    run.mkdir()
    path = run / "model.json"
    if kind == "brackets":
        path.write_text("[" * 200_000)
        phrase = "nested"
    elif kind == "deep_but_parseable":
        depth = MAX_JSON_DEPTH + 5  # json.loads parses it; walking it later must not recurse blindly
        path.write_text(
            '{"findings": ["A"], "backbone": "tiny", "mode": "multilabel", "x": ' + "[" * depth + "]" * depth + "}"
        )
        phrase = f"nested deeper than {MAX_JSON_DEPTH}"
    else:
        with open(path, "wb") as fh:  # sparse: costs no disk
            fh.truncate(MAX_JSON_BYTES + 1)
        phrase = f"over the {MAX_JSON_BYTES:,}-byte cap"
    with pytest.raises(CheckpointError, match=rf"model\.json: .*{phrase}") as info:
        read_metadata(run)
    assert str(path) in str(info.value)
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    code = main(["predict", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(path) in err


def test_hostile_state_json_is_a_checkpoint_error(tmp_path):
    from chestxr.core import CheckpointError
    from chestxr.runs import load_training_state, save_training_state

    model = torch.nn.Linear(2, 1)
    folder = tmp_path / "last"
    save_training_state(folder, model=model, optimizer=None, scheduler=None, epoch=1, rng={}, extra={})
    state = next(folder.rglob("state.json"))
    state.write_text('{"epoch": 1, "model": ' + "[" * 100_000 + "}")
    with pytest.raises(CheckpointError, match=r"state\.json: .*nested"):
        load_training_state(folder, model=model, optimizer=None, scheduler=None)


def test_resume_with_hostile_state_json_names_the_file(tiny_run_copy, synth_manifest):
    """--resume reads last/state.json through the same caps (it once read it raw: RecursionError)."""
    from conftest import tiny_config

    from chestxr.core import CheckpointError
    from chestxr.runs import train

    state = next((tiny_run_copy / "last").rglob("state.json"))
    state.write_text('{"epoch": 1, "extra": ' + "[" * 100_000 + "}")
    config = tiny_config(synth_manifest, "train.epochs=2", "train.lr=0.003", "name=session")
    with pytest.raises(CheckpointError, match=r"state\.json: .*nested"):
        train(config, out_dir=tiny_run_copy, resume=True, log=lambda s: None)


def test_resume_after_a_kill_between_the_two_renames_of_last(tiny_run_copy, synth_manifest):
    """SIGKILL between save_training_state's two renames leaves no last/, only the previous state aside
    (.last.old-PID): --resume (and a torchrun restart) resumes from it instead of refusing the run."""
    from conftest import tiny_config

    from chestxr.runs import train
    from chestxr.runs._resume import has_training_state

    last = tiny_run_copy / "last"
    last.rename(tiny_run_copy / ".last.old-4242")
    assert has_training_state(last)
    lines: list[str] = []
    config = tiny_config(synth_manifest, "train.epochs=3", "train.lr=0.003", "name=session")
    train(config, out_dir=tiny_run_copy, resume=True, log=lines.append)
    assert f"resuming {tiny_run_copy} at epoch 3/3" in lines
    assert (last / "state.json").is_file() and not list(tiny_run_copy.glob(".last.old-*"))
