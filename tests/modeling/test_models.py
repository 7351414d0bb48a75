"""Backbones, heads, OvR, weight loading (never downloading) and head transfer for fine-tuning."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from chestxr.core import CheckpointError
from chestxr.modeling import (
    BACKBONES,
    HeadLinear,
    OneVsRest,
    WeightsError,
    build_model,
    describe_model,
    get_head,
    head_rows_for,
    hub_cache_file,
    reset_head,
    transfer_findings,
)

X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_gives_logits(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, 3).eval()
    with torch.no_grad():
        out = model(X64)
    assert out.shape == (2, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    head = get_head(model)
    assert isinstance(head, HeadLinear) and head.out_features == 3
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())  # dropout=0 means none
    assert describe_model(model)["n_findings"] == 3


def test_logits_are_raw_not_probabilities():
    model = build_model("tiny", 1).eval()
    with torch.no_grad():
        get_head(model).bias.fill_(5.0)
        get_head(model).weight.zero_()
        assert model(X64).flatten().tolist() == [5.0, 5.0]


def test_describe_tiny_parameter_count_by_hand():
    # convs 3*16*9 + 16*32*9 + 32*64*9 + 64*128*9, BN 2*(16+32+64+128), head 128*3 + 3
    expected = 432 + 4608 + 18432 + 73728 + 480 + 387
    d = describe_model(build_model("tiny", 3))
    assert d["n_parameters"] == d["n_trainable"] == expected == 98067
    assert d["backbone"] == "tiny" and d["mode"] == "multilabel"


def test_input_errors():
    with pytest.raises(WeightsError, match="unknown backbone"):
        build_model("vgg99", 3)
    with pytest.raises(ValueError, match="mode"):
        build_model("tiny", 3, mode="multiclass")
    with pytest.raises(ValueError, match="n_findings"):
        build_model("tiny", 0)


def test_dropout_before_head_only_in_training():
    model = build_model("efficientnet_b0", 2, dropout=0.5)
    head = get_head(model)
    assert head.dropout == 0.5
    assert not any(isinstance(m, nn.Dropout) for m in model.classifier)  # torchvision's 0.2 replaced
    feats = torch.ones(4, head.in_features)
    head.train()
    assert not torch.equal(head(feats), head(feats))  # dropout active
    head.eval()
    assert torch.equal(head(feats), head(feats))


@pytest.mark.parametrize("in_channels", [1, 2])
def test_in_channels(in_channels):
    model = build_model("resnet18", 2, in_channels=in_channels).eval()
    assert model.conv1.in_channels == in_channels
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 64, 64)).shape == (2, 2)


def test_ovr_shape_members_and_independence():
    torch.manual_seed(0)
    model = build_model("tiny", 3, mode="ovr")
    assert isinstance(model, OneVsRest) and len(model.members) == 3
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 3)
    for i in range(3):
        assert torch.allclose(model.member(i)(x)[:, 0], out[:, i])
        assert get_head(model.member(i)).out_features == 1
    ids = [{id(p) for p in m.parameters()} for m in model.members]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    # the loss of finding 1 only reaches member 1
    model.train()
    model(x)[:, 1].sum().backward()
    for i, member in enumerate(model.members):
        touched = any(p.grad is not None and p.grad.abs().sum() > 0 for p in member.parameters())
        assert touched == (i == 1)
    assert describe_model(model)["n_parameters"] == 3 * describe_model(model.member(0))["n_parameters"]


def test_binary_is_one_finding():
    assert build_model("tiny", 1).eval()(X64).shape == (2, 1)


def test_reset_head():
    model = build_model("tiny", 3, dropout=0.1)
    conv = model.features[0][0].weight.detach().clone()
    reset_head(model, 5)
    assert get_head(model).out_features == 5 and get_head(model).dropout == 0.1
    assert torch.equal(model.features[0][0].weight, conv)
    assert model.eval()(X64).shape == (2, 5)
    ovr = reset_head(build_model("tiny", 2, mode="ovr"), 3)
    assert ovr.eval()(X64).shape == (2, 3)


# ----------------------------------------------------------------------------- weights


def _reference_resnet18() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return torchvision.models.resnet18(weights=None).state_dict()


def _assert_backbone_equal(model: nn.Module, ref: dict[str, torch.Tensor], head: str) -> None:
    own = model.state_dict()
    checked = 0
    for k, v in ref.items():
        if k.startswith(head) or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[k], v), k
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "wrapped-pth"])
def test_weights_by_path(tmp_path, fmt):
    ref = _reference_resnet18()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file(ref, str(path))
    elif fmt == "pth":
        torch.save(ref, path)
    else:  # a training checkpoint of a DataParallel model
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.items()}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete backbone loads without any warning
        model = build_model("resnet18", 3, weights=str(path))
    _assert_backbone_equal(model, ref, "fc.")
    report = model.chestxr_weights_report
    assert sorted(report.skipped_head) == ["fc.bias", "fc.weight"] and not report.missing
    assert model.fc.weight.shape == (3, 512)


def test_weights_into_one_channel_model_sum_rgb(tmp_path):
    ref = _reference_resnet18()
    save_file(ref, str(tmp_path / "w.safetensors"))
    model = build_model("resnet18", 2, weights=str(tmp_path / "w.safetensors"), in_channels=1)
    assert torch.allclose(model.conv1.weight, ref["conv1.weight"].sum(1, keepdim=True))
    assert model.chestxr_weights_report.adapted == ["conv1.weight"]
    # and a 1-channel file (as torchxrayvision's) into a 3-channel model: repeated / 3
    one = dict(ref, **{"conv1.weight": ref["conv1.weight"][:, :1].clone()})
    save_file(one, str(tmp_path / "gray.safetensors"))
    model3 = build_model("resnet18", 2, weights=str(tmp_path / "gray.safetensors"))
    assert torch.allclose(model3.conv1.weight, one["conv1.weight"].repeat(1, 3, 1, 1) / 3)


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_file({"foo.weight": torch.zeros(3, 3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="no tensor of the weights file fits"):
        build_model("resnet18", 2, weights=str(tmp_path / "w.safetensors"))


def test_partial_match_warns(tmp_path):
    save_file(_reference_resnet18(), str(tmp_path / "r18.safetensors"))
    with pytest.warns(UserWarning, match="missing from the file"):
        build_model("resnet34", 2, weights=str(tmp_path / "r18.safetensors"))


def test_pickled_model_file_is_refused_clearly(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "whole_model.pt")
    with pytest.raises(WeightsError, match="weights_only"):
        build_model("tiny", 2, weights=str(tmp_path / "whole_model.pt"))
    with pytest.raises(WeightsError, match="not found"):
        build_model("tiny", 2, weights=str(tmp_path / "absent.pt"))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty torch hub cache under tmp_path; any download or connection attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def boom(*a, **k):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_enum_weights_not_in_cache_error(no_network):
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", 2, weights="DEFAULT")
    msg = str(err.value)
    assert str(no_network / "resnet18-f37072fd.pth") in msg and "never downloads" in msg
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        build_model("resnet18", 2, weights="IMAGENET9K")
    with pytest.raises(WeightsError, match="no torchvision pretrained weights"):
        build_model("tiny", 2, weights="DEFAULT")


def test_enum_weights_loaded_from_cache_with_old_densenet_names(no_network):
    torch.manual_seed(7)
    ref = torchvision.models.densenet121(weights=None).state_dict()
    # the published file uses the pre-2018 names "denselayer1.norm.1.weight" (as CheXNet code does)
    old = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.") if "denselayer" in k else k: v
        for k, v in ref.items()
        if not k.endswith("num_batches_tracked")
    }
    assert any(".norm.1." in k for k in old)
    target = hub_cache_file("densenet121", "IMAGENET1K_V1")
    assert target == no_network / "densenet121-a639ec97.pth"
    target.parent.mkdir(parents=True)
    torch.save(old, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model("densenet121", 4, weights="DEFAULT")
    _assert_backbone_equal(model, ref, "classifier.")


# ----------------------------------------------------------------------------- fine-tuning transfer


def test_head_rows_case_separators_and_aliases():
    old = ["Atelectasis", "Pleural_Effusion", "Pneumonia"]
    assert head_rows_for(old, ["pneumonia", "Cardiomegaly", "pleural effusion"]) == [2, None, 1]
    # the aliases the manifest reader knows hold here too: "Pleural Effusion" is NIH's "Effusion"
    assert head_rows_for(["Atelectasis", "Pleural Effusion"], ["Effusion", "Atelectasis"]) == [1, 0]
    assert head_rows_for(["Effusion"], ["Pleural Effusion"]) == [0]
    with pytest.raises(CheckpointError, match="same finding"):
        head_rows_for(["Effusion", "Pleural Effusion"], ["Effusion"])


def test_head_rows_agree_with_the_manifest_reader():
    from chestxr.data import match_findings

    old = ["Atelectasis", "Pleural Effusion", "Lung Opacity", "Enlarged Cardiomediastinum", "Pneumothorax"]
    new = ["Effusion", "Atelectasis", "Pneumothorax", "Mass", "lung-opacity"]
    by_reader = match_findings(old, new)
    assert [None if c is None else old.index(c) for c in (by_reader[n] for n in new)] == head_rows_for(old, new)


def test_transfer_findings_multilabel():
    torch.manual_seed(0)
    old_model = build_model("tiny", 3)
    old_findings = ["Atelectasis", "Effusion", "Pneumonia"]
    new_findings = ["pneumonia", "Cardiomegaly", "EFFUSION"]
    new_model = build_model("tiny", 3 + 1)
    fresh_row = new_model.head.weight[1].detach().clone()
    new_findings.append("Mass")
    state = transfer_findings(old_model.state_dict(), old_findings, new_findings, model=new_model)
    w_old, b_old = old_model.head.weight.detach(), old_model.head.bias.detach()
    assert torch.equal(new_model.head.weight[0], w_old[2]) and torch.equal(new_model.head.bias[0], b_old[2])
    assert torch.equal(new_model.head.weight[2], w_old[1]) and torch.equal(new_model.head.bias[2], b_old[1])
    assert torch.equal(new_model.head.weight[1], fresh_row)  # re-initialised row kept from the new model
    assert torch.equal(new_model.features[0][0].weight, old_model.features[0][0].weight)
    assert state["head.weight"].shape == (4, 128)
    # without a model: a state dict that a freshly built model accepts strictly
    alone = transfer_findings(old_model, old_findings, new_findings)
    build_model("tiny", 4).load_state_dict(alone, strict=True)
    assert torch.equal(alone["head.weight"][0], w_old[2])


def test_transfer_findings_ovr():
    torch.manual_seed(0)
    old = build_model("tiny", 2, mode="ovr")
    new = build_model("tiny", 3, mode="ovr")
    transfer_findings(old.state_dict(), ["A", "B"], ["b", "C", "a"], model=new)
    x = torch.randn(2, 3, 32, 32)
    old.eval(), new.eval()
    with torch.no_grad():
        o, n = old(x), new(x)
    assert torch.allclose(n[:, 0], o[:, 1]) and torch.allclose(n[:, 2], o[:, 0])
    # the new finding's member starts from member 0's backbone
    assert torch.equal(new.member(1).features[0][0].weight, old.member(0).features[0][0].weight)


def test_transfer_findings_model_positional_then_lenient_load():
    old = build_model("tiny", 2)
    new = build_model("tiny", 3)
    state = transfer_findings(old.state_dict(), ["A", "B"], ["B", "C", "A"], new)
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    assert torch.equal(new.head.weight[0], old.head.weight[1])
