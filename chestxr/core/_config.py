"""Frozen config dataclasses, YAML loading with dotted overrides. Unknown keys are errors.

A config has sections ``data``, ``labels``, ``preprocessing``, ``augmentation``, ``model``,
``train``, ``calibration``; every field has a default, so ``Config()`` is a valid (demo-sized)
config. ``load_config("configs/x.yaml", ["train.epochs=3", "model.backbone=resnet18"])`` reads a
preset and applies overrides (values parsed as YAML scalars). ``config_to_dict`` gives the fully
resolved config that is written next to every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, TypeVar, Union

import yaml

from chestxr.core._errors import ConfigError
from chestxr.core._presets import read_config_text


@dataclass(frozen=True)
class LabelPolicy:
    """How manifest label values become (target, mask).

    uncertain (-1): "ones" | "zeros" | "masked" | "soft" (uniform in ``soft_range``, seeded per row
    and finding) | a float in [0, 1]. blank (not mentioned): "zeros" | "masked".
    ``per_finding`` overrides either for named findings, e.g. ``{"Atelectasis": {"uncertain": "ones"}}``.
    ``no_finding``: "keep" (a regular column if present) | "drop" (removed from the finding list).
    ``eval_bounds`` [low, high]: how a soft label (a manifest value strictly between 0 and 1) counts
    in EVALUATION metrics (calibration, evaluate): <= low is a negative, >= high a positive, strictly
    between is left out of the metrics (masked). The default [0, 1] leaves every soft value out, so
    the most uncertain label (0.5) is never counted as a positive; [0.5, 0.5] restores the old
    binarisation at >= 0.5. Training targets are not affected.
    """

    uncertain: Union[str, float] = "masked"
    blank: str = "masked"
    soft_range: tuple[float, float] = (0.55, 0.85)
    eval_bounds: tuple[float, float] = (0.0, 1.0)
    per_finding: dict[str, dict[str, Any]] = field(default_factory=dict)
    no_finding: str = "drop"


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how to pick rows.

    manifest: CSV path; ``split`` column values name the splits (train/val/test). When the manifest
    has no split column, a patient-level split with ``val_fraction``/``test_fraction`` is made.
    findings: the finding columns to use (None = every finding column in the manifest).
    views: keep only rows whose ``view`` is in this list (None = all).
    """

    manifest: Optional[str] = None
    val_manifest: Optional[str] = None
    test_manifest: Optional[str] = None
    findings: Optional[list[str]] = None
    views: Optional[list[str]] = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    on_bad_image: Literal["error", "skip"] = "error"
    cache_dir: Optional[str] = None
    num_workers: int = 2


@dataclass(frozen=True)
class PreprocessConfig:
    """Decoding and resizing, shared by training and inference (stored in the checkpoint).

    size: side of the square model input. resize: "letterbox" (aspect-preserving, pad) |
    "crop" (aspect-preserving resize of the short side, center crop) | "stretch".
    normalization: "imagenet" (3 channels, ImageNet mean/std) | "xrv" (torchxrayvision's
    [-1024, 1024] scaling, replicated to ``channels``). voi: "auto" (use the file's VOI LUT or
    window when present) | "ignore" | "window" (use ``window`` = [center, width]).
    cache_size: side of the images stored in the decode cache (>= size).
    allow_color: convert colour images (DICOM RGB/YBR/PALETTE COLOR and colour PNG/JPEG/TIFF/BMP
    alike) to gray (luma) instead of refusing them.
    max_pixels: refuse images with more pixels than this (decompression-bomb guard).
    """

    size: int = 224
    channels: int = 3
    resize: Literal["letterbox", "crop", "stretch"] = "letterbox"
    normalization: Literal["imagenet", "xrv", "none"] = "imagenet"
    voi: Literal["auto", "ignore", "window"] = "auto"
    window: Optional[tuple[float, float]] = None
    allow_color: bool = False
    modalities: Optional[list[str]] = None
    body_parts: Optional[list[str]] = None
    view_positions: Optional[list[str]] = None
    cache_size: int = 256
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation (never applied at evaluation)."""

    enabled: bool = True
    rotate_deg: float = 7.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Backbone and head.

    backbone: a torchvision name (densenet121, resnet18, resnet50, efficientnet_b0, convnext_tiny,
    mobilenet_v3_small, mobilenet_v3_large) or "tiny" (a small CNN for tests and the demo).
    mode: "multilabel" (one model, n_findings logits) | "ovr" (one single-logit model per finding).
    task: "multilabel" | "multiclass" (mutually exclusive classes: predict/evaluate take the argmax over
    the calibrated scores, ties to the first class; thresholds only for ``predict --abstain``) | "binary".
    weights: None | a torchvision enum name ("DEFAULT", "IMAGENET1K_V1") | a path to a state dict.
    init_from: a chestxr run folder to fine-tune from (the finding list may differ).
    """

    backbone: str = "densenet121"
    mode: Literal["multilabel", "ovr"] = "multilabel"
    task: Literal["multilabel", "multiclass", "binary"] = "multilabel"
    weights: Optional[str] = None
    init_from: Optional[str] = None
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. amp: "auto" (bf16 on CUDA, off on CPU) | "off" | "bf16" | "fp16".

    threads: torch CPU threads (None = torch's default, one per core). Set it to the CPU quota in
    containers or on shared machines: OpenMP threads oversubscribing busy cores run 5-10x slower.
    tensorboard: also write loss, lr, images/s and per-finding val AUROC per epoch to RUN/tb/
    (needs the ``tensorboard`` extra).
    cudnn_benchmark: let cuDNN time its convolution algorithms for the input shape and keep the fastest
    (CUDA only; every batch has the same shape, so this is paid once per shape). Off by default: the
    algorithm chosen can differ between runs, so two runs with the same seed may then differ in the
    last bits.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    scheduler: Literal["cosine", "onecycle", "step", "none"] = "cosine"
    warmup_epochs: float = 0.0
    grad_clip: Optional[float] = 1.0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    early_stopping_patience: Optional[int] = None
    pos_weight: Optional[Union[str, float, list[float]]] = None
    ema_decay: Optional[float] = None
    max_minutes: Optional[float] = None
    device: str = "auto"
    threads: Optional[int] = None
    tensorboard: bool = False
    cudnn_benchmark: bool = False


@dataclass(frozen=True)
class CalibrationConfig:
    """Thresholds and probability calibration.

    method: default operating-point rule ("youden", "sensitivity:0.9", "specificity:0.9", "f1",
    "ppv:0.5", "cost:1:5", "fixed:0.5"); per_finding overrides by finding name.
    probability: None | "temperature" | "platt" | "isotonic".
    simultaneous: the guaranteed rules hold jointly for every finding carrying one (Bonferroni; False:
    each finding alone, ``chestxr calibrate --per-finding``). prevalence: [lo, hi] deployment prevalence
    range a ppv:X / npv:X rule must hold over (required by those rules; ``--prevalence LO:HI``).
    """

    method: str = "youden"
    per_finding: dict[str, str] = field(default_factory=dict)
    probability: Optional[Literal["temperature", "platt", "isotonic"]] = None
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    simultaneous: bool = True
    prevalence: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class Config:
    """The whole run config. ``name`` names the run folder; ``seed`` seeds everything."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelPolicy = field(default_factory=LabelPolicy)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to annotation ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is not valid ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
    from chestxr.core._ranges import check_config_value

    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    for k, v in kwargs.items():
        check_config_value(f"{where}.{k}" if where else k, v)  # ranges: chestxr.core.CONFIG_RANGES
    return cls(**kwargs)


SectionT = TypeVar("SectionT")


def section_from_dict(cls: type[SectionT], data: Mapping[str, Any], where: str) -> SectionT:
    """One config section (PreprocessConfig, LabelPolicy, CalibrationConfig, ...) from a plain mapping,
    validated as a config file is (unknown keys, types, ranges); ConfigError messages start with ``where``.
    Used to read the sections a run folder stores in model.json."""
    return _from_dict(cls, dict(data), where)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a validated Config from a (possibly partial) nested dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    return _from_dict(Config, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "data.findings=[A,B]"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from None
        _set_dotted(out, key.strip(), value)
    return out


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``extra`` wins."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "per_finding":
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML preset/file (optional) and apply dotted overrides; validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        p, text = read_config_text(str(path))
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data = loaded
    data = merge_dicts(data, parse_overrides(overrides))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def write_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from chestxr.core._fileio import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
