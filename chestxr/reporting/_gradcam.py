"""Grad-CAM heat maps (Selvaraju et al., ICCV 2017) for one finding's logit.

``grad_cam(model, image, finding_index)`` weights the feature maps of a convolution layer by the
spatially averaged gradient of that finding's logit, keeps the positive part, upsamples it to the
input size and scales it to [0, 1]. It shows where the model looked, not where a finding is.

Works with any ``nn.Module`` returning logits (B, n_findings). For a one-vs-rest wrapper (an
attribute ``members``: ``nn.ModuleList`` with one single-logit model per finding) the default
layer is the last ``Conv2d`` of the member for that finding, so the map explains that member.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def find_last_conv(module: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in ``module.modules()`` order (registration order = forward order
    for Sequential-style backbones). Raises ValueError when there is none."""
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m
    if last is None:
        raise ValueError(f"{type(module).__name__} has no Conv2d layer; pass target_layer explicitly")
    return last


def _default_layer(model: nn.Module, finding_index: int) -> nn.Module:
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList):
        if not 0 <= finding_index < len(members):
            raise IndexError(f"finding_index {finding_index} out of range for {len(members)} one-vs-rest members")
        return find_last_conv(members[finding_index])
    return find_last_conv(model)


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    finding_index: int,
    *,
    target_layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM map of logit ``finding_index`` for one image.

    model: returns logits (1, n_findings); image: (1, C, H, W) float tensor, already normalized,
    on the model's device; target_layer: the layer whose output (1, K, h, w) is explained
    (default: the last Conv2d, of the finding's member for one-vs-rest models).
    Returns (H, W) float32 in [0, 1] (all zeros when no location raises the logit).
    The model is run in eval mode (restored afterwards); its weights are not changed.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be a (1, C, H, W) tensor, got shape {tuple(image.shape)}")
    layer = target_layer if target_layer is not None else _default_layer(model, finding_index)
    store: dict[str, Any] = {}

    def forward_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError(
                f"target layer {type(_module).__name__} must output (B, K, h, w); got "
                f"{getattr(out, 'shape', type(out))}"
            )
        # clone: a following in-place op (ReLU(inplace=True)) must not change what we explain
        store["activation"] = out.detach().clone()
        store["output"] = out

    was_training = model.training
    handle = layer.register_forward_hook(forward_hook)
    try:
        model.eval()
        x = image.detach().clone().requires_grad_(True)  # a graph even when every weight is frozen
        with torch.enable_grad():
            logits = model(x)
            if logits.ndim != 2 or not 0 <= finding_index < logits.shape[1]:
                raise IndexError(f"finding_index {finding_index} out of range for logits {tuple(logits.shape)}")
            if "output" not in store:
                raise ValueError("target layer was not used in the forward pass; pass a layer the model runs")
            # autograd.grad, not backward(): parameters' .grad stay untouched
            (grad,) = torch.autograd.grad(logits[0, finding_index], store["output"], allow_unused=True)
    finally:
        handle.remove()
        model.train(was_training)
    if grad is None:
        raise ValueError("no gradient reached the target layer; is it part of the path to the logits?")
    act, grad = store["activation"][0].float(), grad[0].detach().float()  # (K, h, w)
    weights = grad.mean(dim=(1, 2))  # (K,)
    cam = torch.relu((weights[:, None, None] * act).sum(dim=0))[None, None]  # (1, 1, h, w)
    cam = torch.nn.functional.interpolate(cam, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam[0, 0].clamp_min(0)
    top = float(cam.max())
    cam = cam / top if top > 0 else torch.zeros_like(cam)
    return cam.cpu().numpy().astype(np.float32)
