"""Classifier networks: a torchvision backbone whose last layer gives raw logits, one per finding.

``build_model("densenet121", 14)`` -> module mapping images (B, C, H, W) to logits (B, 14) (no
sigmoid). ``mode="ovr"`` gives :class:`OneVsRest`: one single-logit model per finding, concatenated
into the same (B, n_findings) output, so downstream code needs no special case.

Pretrained weights are never downloaded: a torchvision enum name ("DEFAULT", "IMAGENET1K_V1") is used
only when its file is already in the torch hub cache, and a path loads a local state dict
(.safetensors, or .pt/.pth through ``torch.load(weights_only=True)``). Only backbone tensors are taken
from such files; the head (one row per finding) is always freshly initialised here. Fine-tuning from a
chestxr checkpoint with another finding list goes through :func:`transfer_findings`.

The parts: chestxr/modeling/_architectures.py (backbones, HeadLinear, OneVsRest, ModelSpec),
chestxr/modeling/_weights.py (pretrained weights: files, hub cache, backbone loading, WeightsError) and
chestxr/modeling/_heads.py (get/set/reset_head, head_rows_for, transfer_findings); their public names are
re-exported here.
"""

from __future__ import annotations

from typing import Mapping, cast

import torch
from torch import nn

from chestxr.modeling._architectures import (
    BACKBONES,
    HEAD_PATHS,
    HeadLinear,
    ModelSpec,
    OneVsRest,
    attach_attr,
    replace_module,
    set_in_channels,
)
from chestxr.modeling._weights import (
    check_backbone,
    load_backbone_weights,
    resolve_weights,
)


def _build_single(
    backbone: str, n_findings: int, *, state: Mapping[str, torch.Tensor] | None, in_channels: int, dropout: float
) -> nn.Module:
    model = BACKBONES[backbone]()
    old = cast(nn.Linear, model.get_submodule(HEAD_PATHS[backbone]))
    replace_module(model, HEAD_PATHS[backbone], HeadLinear(old.in_features, n_findings, dropout=dropout))
    parent_path = HEAD_PATHS[backbone].rpartition(".")[0]
    if parent_path:  # the architecture's own head dropout is replaced by ``dropout``
        parent = model.get_submodule(parent_path)
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())
    set_in_channels(model, backbone, in_channels)
    attach_attr(model, "chestxr_spec", ModelSpec(backbone, n_findings, "multilabel", in_channels, dropout))
    if state is not None:
        attach_attr(model, "chestxr_weights_report", load_backbone_weights(model, state))
    return model


def build_model(
    backbone: str,
    n_findings: int,
    *,
    mode: str = "multilabel",
    weights: str | None = None,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """A classifier: images (B, in_channels, H, W) -> raw logits (B, n_findings).

    backbone: a key of BACKBONES. mode: "multilabel" (one network, n_findings outputs) | "ovr"
    (:class:`OneVsRest`, n_findings single-logit networks). weights: None (random init) | a torchvision
    enum name found in the local hub cache | a state-dict file path (backbone tensors only).
    in_channels: input channels (the stem conv is adapted). dropout: before the final Linear.
    """
    check_backbone(backbone)
    if isinstance(n_findings, bool) or not isinstance(n_findings, int) or n_findings < 1:
        raise ValueError(f"n_findings must be a positive integer, got {n_findings!r}")
    if mode not in ("multilabel", "ovr"):
        raise ValueError(f"mode must be 'multilabel' or 'ovr', got {mode!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    state = resolve_weights(backbone, weights) if weights is not None else None
    if mode == "multilabel":
        return _build_single(backbone, n_findings, state=state, in_channels=in_channels, dropout=dropout)
    members = [
        _build_single(backbone, 1, state=state, in_channels=in_channels, dropout=dropout) for _ in range(n_findings)
    ]
    model = OneVsRest(members)
    attach_attr(model, "chestxr_spec", ModelSpec(backbone, n_findings, "ovr", in_channels, dropout))
    return model


def describe_model(model: nn.Module) -> dict[str, object]:
    """Backbone, mode, n_findings, in_channels and parameter counts/size of ``model``."""
    spec = getattr(model, "chestxr_spec", None)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    return {
        "backbone": spec.backbone if spec else type(model).__name__,
        "mode": spec.mode if spec else None,
        "n_findings": spec.n_findings if spec else None,
        "in_channels": spec.in_channels if spec else None,
        "n_parameters": n,
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
        "size_mb": round(sum(p.numel() * p.element_size() for p in params) / 2**20, 3),
    }
