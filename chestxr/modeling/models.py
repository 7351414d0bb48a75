"""Classifier networks: a torchvision backbone whose last layer gives raw logits, one per finding.

``build_model("densenet121", 14)`` -> module mapping images (B, C, H, W) to logits (B, 14) (no
sigmoid). ``mode="ovr"`` gives :class:`OneVsRest`: one single-logit model per finding, concatenated
into the same (B, n_findings) output, so downstream code needs no special case.

Pretrained weights are never downloaded: a torchvision enum name ("DEFAULT", "IMAGENET1K_V1") is used
only when its file is already in the torch hub cache, and a path loads a local state dict
(.safetensors, or .pt/.pth through ``torch.load(weights_only=True)``). Only backbone tensors are taken
from such files; the head (one row per finding) is always freshly initialised here. Fine-tuning from a
chestxr checkpoint with another finding list goes through :func:`transfer_findings`.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from chestxr.core.errors import CheckpointError


class WeightsError(CheckpointError):
    """Pretrained weights cannot be found or do not fit the chosen backbone."""


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
_NO_ENUM = {"tiny", "tiny_gn", "smallcnn", "resnet10"}


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`build_model` was asked for; stored on the module as ``model.chestxr_spec``."""

    backbone: str
    n_findings: int
    mode: str = "multilabel"
    in_channels: int = 3
    dropout: float = 0.0


@dataclass
class LoadReport:
    """Outcome of loading a backbone state dict: key lists for a clear message."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"loaded {len(self.loaded)} tensors"]
        for label, keys in (
            ("adapted to the input channels", self.adapted),
            ("missing from the file (left random)", self.missing),
            ("in the file but not in the model", self.unexpected),
            ("with a different shape (left random)", self.mismatched),
            ("head tensors skipped", self.skipped_head),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {few(keys)}")
        return "; ".join(parts)


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


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise WeightsError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _spec_of(model: nn.Module) -> ModelSpec:
    spec = getattr(model, "chestxr_spec", None)
    if spec is None:
        raise ValueError("this model was not built by chestxr.models.build_model")
    return spec


def get_head(model: nn.Module) -> nn.Linear:
    """The final Linear layer of a single (non-OvR) model built by :func:`build_model`."""
    if isinstance(model, OneVsRest):
        raise ValueError("a OneVsRest model has one head per member: use get_head(model.member(i))")
    return model.get_submodule(HEAD_PATHS[_spec_of(model).backbone])  # type: ignore[return-value]


def _attach(model: nn.Module, name: str, value: Any) -> None:
    """Store a plain (non-tensor, non-module) attribute on a module, as ``model.name = value`` does."""
    model.__dict__[name] = value


def set_head(model: nn.Module, head: nn.Linear) -> None:
    """Replace the final Linear layer of a single model (keeps ``chestxr_spec`` in step)."""
    spec = _spec_of(model)
    _replace(model, HEAD_PATHS[spec.backbone], head)
    _attach(
        model,
        "chestxr_spec",
        ModelSpec(
            spec.backbone, head.out_features, spec.mode, spec.in_channels, getattr(head, "dropout", spec.dropout)
        ),
    )


def reset_head(model: nn.Module, n_findings: int) -> nn.Module:
    """Give ``model`` a freshly initialised head with ``n_findings`` outputs (in place, returned).

    OneVsRest: members 0..n-1 keep their backbones (extra members copy member 0's), all heads fresh.
    """
    if isinstance(model, OneVsRest):
        import copy

        old = list(model.members)
        members = [old[i] if i < len(old) else copy.deepcopy(old[0]) for i in range(n_findings)]
        for m in members:
            reset_head(m, 1)
        model.members = nn.ModuleList(members)
        spec = _spec_of(model)
        _attach(model, "chestxr_spec", ModelSpec(spec.backbone, n_findings, "ovr", spec.in_channels, spec.dropout))
        return model
    head = get_head(model)
    set_head(model, HeadLinear(head.in_features, n_findings, dropout=getattr(head, "dropout", 0.0)))
    return model


def _adapt_conv_weight(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, c, k, k) -> (out, in_channels, k, k) keeping the response to a grey image."""
    c = w.shape[1]
    if c == in_channels:
        return w
    if in_channels == 1:
        return w.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / c)
    return w.repeat(1, reps, 1, 1)[:, :in_channels] * (c / in_channels)


def _set_in_channels(model: nn.Module, backbone: str, in_channels: int) -> None:
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
    _replace(model, STEM_PATHS[backbone], new)


def _densenet_rename(key: str) -> str:
    # old torchvision/CheXNet files name "denselayer1.norm.1.weight"; current modules "norm1".
    return re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.(\d+)\.", r"\1\2.", key)


def _unwrap_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: does not hold a state dict (a mapping of names to tensors)")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{source}: holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def sniff_format(path: str | Path) -> str:
    """ "safetensors" | "pickle" (torch.save zip or raw pickle) | "unknown", from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    return "unknown"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local state dict: .safetensors, or a torch.save file via ``torch.load(weights_only=True)``.

    Unwraps ``{"state_dict": ...}``-style containers and a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    kind = sniff_format(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap_state(load_file(str(path)), str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    if kind == "pickle":
        import pickle

        try:  # a file object: torch.load must not pick a loader from the name (e.g. ".safetensors")
            with open(path, "rb") as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:
            if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
                raise WeightsError(
                    f"{path}: torch.load(weights_only=True) refused it: it holds Python objects, not only "
                    "tensors (e.g. a whole model saved with torch.save(model)). In a session you trust, load "
                    "it and save model.state_dict() with safetensors.torch.save_file, then pass that file. "
                    f"({_torch_load_reason(exc)})"
                ) from None
            raise WeightsError(
                f"{path}: cannot read this torch.save file ({_torch_load_reason(exc)}); it may be "
                "truncated or corrupt, or hold more than tensors"
            ) from None
        return _unwrap_state(obj, str(path))
    raise WeightsError(f"{path}: neither a safetensors nor a torch.save file")


def _torch_load_reason(exc: BaseException) -> str:
    """The useful part of torch.load's error: the disallowed global or the unpickler's complaint, else
    the first line, without ANSI codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it references {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def hub_cache_file(backbone: str, weights: str) -> Path:
    """Where torch hub keeps the file of torchvision enum ``weights`` (e.g. "DEFAULT") for ``backbone``."""
    from urllib.parse import urlparse

    from torchvision.models import get_model_weights

    _check_backbone(backbone)
    if backbone in _NO_ENUM:
        raise WeightsError(
            f"backbone {backbone!r} has no torchvision pretrained weights; pass weights=None or a path to a state dict"
        )
    enum = get_model_weights(backbone)
    name = weights.split(".")[-1]
    try:
        member = enum[name]
    except KeyError:
        choices = ["DEFAULT", *enum.__members__]
        raise WeightsError(
            f"{weights!r} is not a weights name of {backbone} (choose one of "
            f"{sorted(set(choices))}) nor an existing file"
        ) from None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(member.url).path).name


def resolve_weights(backbone: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """State dict for ``weights``: an existing file path, or an enum name found in the hub cache."""
    p = Path(weights)
    looks_like_path = (
        p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors") or "/" in str(weights) or "\\" in str(weights)
    )
    if p.is_file() or looks_like_path:
        return read_state_dict(p)
    cached = hub_cache_file(backbone, str(weights))
    if not cached.is_file():
        raise WeightsError(
            f"pretrained weights {weights!r} for {backbone} are not in the local torch hub cache "
            f"(looked for {cached}); chestxr never downloads. Copy the file there (set TORCH_HOME to "
            "move the cache) or pass the path of a state dict file as weights"
        )
    return read_state_dict(cached)


def load_backbone_weights(model: nn.Module, state: Mapping[str, torch.Tensor]) -> LoadReport:
    """Copy matching backbone tensors of ``state`` into single ``model``; the head stays as it is.

    Keys are matched by name (DenseNet's old "norm.1" names are mapped); a stem conv with other
    input channels is adapted (summed over RGB for 1 channel). Raises WeightsError if nothing matched;
    warns with a summary when some tensors are missing, unexpected or of another shape.
    """
    spec = _spec_of(model)
    head, stem = HEAD_PATHS[spec.backbone] + ".", STEM_PATHS[spec.backbone] + ".weight"
    if spec.backbone == "densenet121":
        state = {_densenet_rename(k): v for k, v in state.items()}
    own = model.state_dict()
    report, new = LoadReport(), {}
    for key, value in state.items():
        if key.startswith(head):
            report.skipped_head.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif value.shape == own[key].shape:
            new[key] = value
            report.loaded.append(key)
        elif (
            key == stem
            and value.ndim == 4
            and value.shape[0] == own[key].shape[0]
            and value.shape[2:] == own[key].shape[2:]
        ):
            new[key] = _adapt_conv_weight(value, own[key].shape[1])
            report.adapted.append(key)
        else:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    report.missing = [
        k for k in own if not k.startswith(head) and k not in new and not k.endswith("num_batches_tracked")
    ]
    if not new:
        raise WeightsError(
            f"no tensor of the weights file fits backbone {spec.backbone!r}: {report.summary()}. "
            f"Expected keys like {list(own)[:3]}; is it a state dict of another architecture?"
        )
    with torch.no_grad():
        for key, value in new.items():
            own[key].copy_(value.to(own[key].dtype))
    if report.missing or report.unexpected or report.mismatched:
        warnings.warn(f"partial weight load into {spec.backbone}: {report.summary()}", stacklevel=3)
    return report


def _build_single(
    backbone: str, n_findings: int, *, state: Mapping[str, torch.Tensor] | None, in_channels: int, dropout: float
) -> nn.Module:
    model = BACKBONES[backbone]()
    old = cast(nn.Linear, model.get_submodule(HEAD_PATHS[backbone]))
    _replace(model, HEAD_PATHS[backbone], HeadLinear(old.in_features, n_findings, dropout=dropout))
    parent_path = HEAD_PATHS[backbone].rpartition(".")[0]
    if parent_path:  # the architecture's own head dropout is replaced by ``dropout``
        parent = model.get_submodule(parent_path)
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())
    _set_in_channels(model, backbone, in_channels)
    _attach(model, "chestxr_spec", ModelSpec(backbone, n_findings, "multilabel", in_channels, dropout))
    if state is not None:
        _attach(model, "chestxr_weights_report", load_backbone_weights(model, state))
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
    _check_backbone(backbone)
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
    _attach(model, "chestxr_spec", ModelSpec(backbone, n_findings, "ovr", in_channels, dropout))
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


def head_rows_for(old_findings: Sequence[str], new_findings: Sequence[str]) -> list[int | None]:
    """For each new finding, the index of the same finding in ``old_findings`` (None if absent).

    Names are matched as everywhere in chestxr (:func:`chestxr.data.findings.match_findings`): an
    exact name wins, else aliases ("Pleural Effusion" is "Effusion"), case, spaces, "_" and "-"
    are ignored. Two old names for the same finding are refused (the head rows would be ambiguous).
    """
    from chestxr.data.findings import match_findings, same_finding_key

    seen: dict[str, str] = {}
    for name in old_findings:
        key = same_finding_key(name)
        if key in seen:
            raise CheckpointError(f"findings {seen[key]!r} and {name!r} are the same finding")
        seen[key] = name
    index = {name: i for i, name in enumerate(old_findings)}
    matched = match_findings(list(old_findings), list(new_findings))
    return [index[c] if c is not None else None for c in (matched[n] for n in new_findings)]


def _find_head(state: Mapping[str, torch.Tensor], n_out: int, backbone: str | None) -> str:
    paths = [HEAD_PATHS[backbone]] if backbone else sorted(set(HEAD_PATHS.values()))
    found = [
        p
        for p in paths
        if f"{p}.weight" in state and state[f"{p}.weight"].ndim == 2 and state[f"{p}.weight"].shape[0] == n_out
    ]
    if len(found) != 1:
        raise CheckpointError(
            f"cannot find the {n_out}-output head in the checkpoint's state (candidates {found}); pass backbone="
        )
    return found[0]


def _fresh_rows(n: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    lin = nn.Linear(in_features, n)
    return lin.weight.detach(), lin.bias.detach()


def transfer_findings(
    model_old_state: Mapping[str, torch.Tensor] | nn.Module,
    old_findings: Sequence[str],
    new_findings: Sequence[str],
    model: nn.Module | None = None,
    *,
    backbone: str | None = None,
) -> dict[str, torch.Tensor]:
    """State dict for ``new_findings`` from a chestxr model trained on ``old_findings``.

    The backbone is copied; head rows (weight (n, features) and bias (n,)) of findings present in
    both lists (names matched with aliases, :func:`head_rows_for`) are copied, the others re-initialised (from
    ``model``'s own head when given, else nn.Linear's default init). OneVsRest states: members are
    re-ordered by finding; a new finding's member gets member 0's backbone and a fresh head.
    If ``model`` is given, the result is also loaded into it (strictly).
    """
    old = model_old_state.state_dict() if isinstance(model_old_state, nn.Module) else model_old_state
    old = {k: v.detach().clone() for k, v in old.items()}
    src = head_rows_for(old_findings, new_findings)
    mine = model.state_dict() if model is not None else None
    new: dict[str, torch.Tensor] = {}
    if any(k.startswith("members.") for k in old):
        prefix = lambda i: f"members.{i}."  # noqa: E731
        member0 = {k[len(prefix(0)) :]: v for k, v in old.items() if k.startswith(prefix(0))}
        head = _find_head(member0, 1, backbone)
        for j, i in enumerate(src):
            for suffix in member0:
                key = prefix(j) + suffix
                if i is not None:
                    new[key] = old[prefix(i) + suffix]
                elif suffix.startswith(head + "."):
                    fresh = _fresh_rows(1, member0[f"{head}.weight"].shape[1])
                    value = fresh[0] if suffix.endswith("weight") else fresh[1]
                    new[key] = mine[key].clone() if mine is not None and key in mine else value
                else:
                    new[key] = member0[suffix]
    else:
        head = _find_head(old, len(old_findings), backbone)
        new = {k: v for k, v in old.items() if not k.startswith(head + ".")}
        w_old, b_old = old[f"{head}.weight"], old[f"{head}.bias"]
        if mine is not None and f"{head}.weight" in mine:
            w, b = mine[f"{head}.weight"].clone(), mine[f"{head}.bias"].clone()
        else:
            w, b = _fresh_rows(len(new_findings), w_old.shape[1])
        for j, i in enumerate(src):
            if i is not None:
                w[j], b[j] = w_old[i], b_old[i]
        new[f"{head}.weight"], new[f"{head}.bias"] = w, b
    if model is not None:
        try:
            model.load_state_dict(new, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"the checkpoint does not fit the new model: {exc}") from None
    return new
