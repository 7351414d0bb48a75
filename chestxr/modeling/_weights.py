"""Pretrained backbone weights, never downloaded: local state-dict files (.safetensors, or torch.save files through
``torch.load(weights_only=True)``), torchvision enum names found in the local torch hub cache, and copying the
matching backbone tensors into a model (a stem with other input channels adapted; the head never taken).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from chestxr.core import CheckpointError
from chestxr.modeling._architectures import BACKBONES, HEAD_PATHS, NO_ENUM, STEM_PATHS, spec_of


class WeightsError(CheckpointError):
    """Pretrained weights cannot be found or do not fit the chosen backbone."""


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


def check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise WeightsError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")


def _adapt_conv_weight(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, c, k, k) -> (out, in_channels, k, k) keeping the response to a grey image."""
    c = w.shape[1]
    if c == in_channels:
        return w
    if in_channels == 1:
        return w.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / c)
    return w.repeat(1, reps, 1, 1)[:, :in_channels] * (c / in_channels)


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

    check_backbone(backbone)
    if backbone in NO_ENUM:
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
    spec = spec_of(model)
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
