"""The networks chestxr builds: backbone registry (torchvision and small CPU CNNs), where each one's head and stem
are, the head layer, the one-vs-rest wrapper, and the module surgery build_model does (replace a submodule, adapt
the stem's input channels, tag a module with its ModelSpec).

Images (B, C, H, W) -> logits (B, n) for every network here; weights and heads are handled in
chestxr/modeling/_weights.py and chestxr/modeling/_heads.py, assembly in chestxr/modeling/_models.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn


class HeadLinear(nn.Linear):
    """The final layer: ``Linear(features, n_findings)`` with optional dropout on its input.

    A subclass of ``nn.Linear``, so state-dict keys stay those of torchvision (``fc.weight``...).
    """

    def __init__(self, in_features: int, out_features: int, *, dropout: float = 0.0) -> None:
        super().__init__(in_features, out_features)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.dropout}"


class TinyCNN(nn.Module):
    """A small fast CNN for tests and the CPU demo: 4 conv-norm-relu blocks (stride 2), global pool.

    norm: "batch" (BatchNorm) or "group" (GroupNorm, 8 groups: independent of the batch, so N DDP
    processes compute exactly what one process computes on the same global batch).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            layer = nn.BatchNorm2d(w) if norm == "batch" else nn.GroupNorm(8, w)
            blocks.append(
                nn.Sequential(nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), layer, nn.ReLU(inplace=True))
            )
            c = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class SmallCNN(nn.Module):
    """A VGG-style small CNN for low-resolution CPU training (the demo): per stage two 3x3
    conv-bn-relu and a 2x2 max-pool (max-pooling keeps small bright findings such as nodules that
    strided convolutions and average pooling wash out), widths 32-64-128-256, global average pool.
    """

    def __init__(
        self, *, num_classes: int = 1000, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _tiny_gn() -> nn.Module:
    return TinyCNN(norm="group")


def _tv(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None)

    build.__name__ = f"build_{name}"
    return build


def _resnet10() -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1])


#: plain name -> builder of the randomly initialised network (ImageNet-sized head, replaced later).
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "densenet121": _tv("densenet121"),
    "resnet18": _tv("resnet18"),
    "resnet34": _tv("resnet34"),
    "resnet50": _tv("resnet50"),
    "efficientnet_b0": _tv("efficientnet_b0"),
    "convnext_tiny": _tv("convnext_tiny"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "mobilenet_v3_large": _tv("mobilenet_v3_large"),
    "resnet10": _resnet10,
    "tiny": TinyCNN,
    "tiny_gn": _tiny_gn,
    "smallcnn": SmallCNN,
}

#: name -> dotted path of the final Linear layer.
HEAD_PATHS: dict[str, str] = {
    "densenet121": "classifier",
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "resnet10": "fc",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
    "mobilenet_v3_small": "classifier.3",
    "mobilenet_v3_large": "classifier.3",
    "tiny": "head",
    "tiny_gn": "head",
    "smallcnn": "head",
}

#: name -> dotted path of the first convolution (adapted when in_channels != 3).
STEM_PATHS: dict[str, str] = {
    "densenet121": "features.conv0",
    "resnet18": "conv1",
    "resnet34": "conv1",
    "resnet50": "conv1",
    "resnet10": "conv1",
    "efficientnet_b0": "features.0.0",
    "convnext_tiny": "features.0.0",
    "mobilenet_v3_small": "features.0.0",
    "mobilenet_v3_large": "features.0.0",
    "tiny": "features.0.0",
    "tiny_gn": "features.0.0",
    "smallcnn": "features.0",
}

#: names without a torchvision weights enum.
NO_ENUM = {"tiny", "tiny_gn", "smallcnn", "resnet10"}


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`build_model` was asked for; stored on the module as ``model.chestxr_spec``."""

    backbone: str
    n_findings: int
    mode: str = "multilabel"
    in_channels: int = 3
    dropout: float = 0.0


class OneVsRest(nn.Module):
    """One independent single-logit model per finding; ``forward`` -> logits (B, n_findings)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("OneVsRest needs at least one member")
        self.members = nn.ModuleList(members)

    def member(self, i: int) -> nn.Module:
        """The single-logit model of finding ``i``: (B, C, H, W) -> (B, 1)."""
        return self.members[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.members], dim=1)


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def spec_of(model: nn.Module) -> ModelSpec:
    spec = getattr(model, "chestxr_spec", None)
    if spec is None:
        raise ValueError("this model was not built by chestxr.modeling.build_model")
    return spec


def attach_attr(model: nn.Module, name: str, value: Any) -> None:
    """Store a plain (non-tensor, non-module) attribute on a module, as ``model.name = value`` does."""
    model.__dict__[name] = value


def set_in_channels(model: nn.Module, backbone: str, in_channels: int) -> None:
    stem: nn.Conv2d = model.get_submodule(STEM_PATHS[backbone])  # type: ignore[assignment]
    if stem.in_channels == in_channels:
        return
    pair = tuple[int, int]
    new = nn.Conv2d(
        in_channels,
        stem.out_channels,
        cast(pair, stem.kernel_size),
        stride=cast(pair, stem.stride),
        padding=cast("str | pair", stem.padding),
        dilation=cast(pair, stem.dilation),
        groups=stem.groups,
        bias=stem.bias is not None,
    )
    replace_module(model, STEM_PATHS[backbone], new)
