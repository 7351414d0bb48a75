"""Export a trained run as a MONAI Bundle, so MONAI tooling (``monai.bundle`` scripts, MONAI Label,
MONAI Deploy) can load and serve a chestxr model without chestxr installed.

``export_monai_bundle(run_dir, out_dir)`` writes::

    out_dir/
      configs/metadata.json   MONAI bundle metadata: versions, network_data_format (input image
                              (C, S, S) float32, output "pred" (n_findings,) logits, channel_def =
                              the findings), plus "chestxr": findings, preprocessing, thresholds,
                              probability calibration, source run
      configs/inference.json  a ConfigWorkflow "infer" config: PNG files of ``dataset_dir`` ->
                              LoadImage -> [0, 1] -> letterbox -> channels -> normalization ->
                              network -> sigmoid, run by a SupervisedEvaluator
      models/model.ts         the traced TorchScript model (image (B, C, S, S) -> logits (B, F)),
                              with metadata.json embedded (monai.data.save_net_with_metadata)
      docs/README.md          what the bundle expects and returns

The traced model is checked against the eager model on a random batch (|difference| <= ``atol``)
before anything is written; the folder is written under a temporary name and renamed into place, so
a failed export leaves nothing behind.

Preprocessing: ``inference.json`` reproduces chestxr's evaluation transform in MONAI transforms for
PNG input (``image_max`` = 255 for 8-bit, 65535 for 16-bit files). MONAI's resize is not
bit-identical to chestxr's antialiased bilinear resize (differences of a few 1e-3 in the scores);
DICOM decoding (modality/VOI LUT, MONOCHROME1) is chestxr's job - :func:`chestxr.imaging.read_image`
gives the [0, 1] image the ``preprocessing`` section expects after its ScaleIntensityRange.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chestxr.core.errors import ChestXRError, OutputExistsError
from chestxr.modeling.run_metadata import RunMetadata

BUNDLE_VERSION = "0.1.0"


def _require_monai() -> Any:
    try:
        import monai
    except ImportError:
        raise ChestXRError(
            "MONAI Bundle export needs MONAI: pip install 'chestxr[monai]' (or use --format torchscript)"
        ) from None
    return monai


def _normalization(pre: dict[str, Any], channels: int) -> dict[str, Any] | None:
    """The NormalizeIntensityd step equal to chestxr's normalization, or None for "none"."""
    from chestxr.imaging.transforms import IMAGENET_MEAN, IMAGENET_STD, XRV_SCALE

    norm = pre.get("normalization", "imagenet")
    if norm == "imagenet":
        mean = list(IMAGENET_MEAN) if channels == 3 else [sum(IMAGENET_MEAN) / 3]
        std = list(IMAGENET_STD) if channels == 3 else [sum(IMAGENET_STD) / 3]
        return {"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": mean, "divisor": std,
                "channel_wise": True}  # fmt: skip
    if norm == "xrv":  # [0, 1] -> [-1024, 1024]
        return {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 1.0,
                "b_min": -XRV_SCALE, "b_max": XRV_SCALE}  # fmt: skip
    return None


def _preprocessing(meta: RunMetadata) -> dict[str, Any]:
    from chestxr.core.config import config_to_dict

    return config_to_dict(meta.preprocessing) if meta.preprocessing is not None else {}


def _resize_steps(pre: dict[str, Any], size: int) -> list[dict[str, Any]]:
    mode = pre.get("resize", "letterbox")
    resize = {"_target_": "Resized", "keys": "image", "mode": "bilinear", "anti_aliasing": True}
    if mode == "letterbox":  # long side = size, centred zero padding
        return [{**resize, "spatial_size": size, "size_mode": "longest"},
                {"_target_": "SpatialPadd", "keys": "image", "spatial_size": [size, size], "value": 0.0}]  # fmt: skip
    if mode == "crop":
        raise ChestXRError(
            "preprocessing.resize=crop has no MONAI Resize equivalent (no shortest-side mode); "
            "export --format torchscript, or train with letterbox or stretch"
        )
    return [{**resize, "spatial_size": [size, size]}]  # stretch


def inference_config(pre: dict[str, Any], *, channels: int, size: int) -> dict[str, Any]:
    """The ``configs/inference.json`` content for a run's preprocessing section (see the module docstring)."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader", "reverse_indexing": False,
         "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": "@image_max", "b_min": 0.0,
         "b_max": 1.0, "clip": True},
        *_resize_steps(pre, size),
    ]  # fmt: skip
    if channels > 1:
        steps.append({"_target_": "RepeatChanneld", "keys": "image", "repeats": channels})
    norm = _normalization(pre, channels)
    if norm is not None:
        steps.append(norm)
    steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False})
    return {
        "imports": ["$import glob", "$import os", "$import torch", "$import monai"],
        "bundle_root": ".",
        "image_max": 255,
        "dataset_dir": "$@bundle_root + '/images'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "torch.jit.load", "f": "$@bundle_root + '/models/model.ts'", "map_location": "cpu"},
        "network": "$@network_def.to(@device).eval()",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.png')))]",
        "preprocessing": {"_target_": "Compose", "transforms": steps},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 8,
            "shuffle": False,
            "num_workers": 0,
        },  # fmt: skip
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}],
        },
        "handlers": [],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def bundle_metadata(meta: RunMetadata, *, channels: int, size: int) -> dict[str, Any]:
    """The ``configs/metadata.json`` content (MONAI's bundle metadata keys + a "chestxr" section)."""
    import monai

    from chestxr import __version__

    findings = list(meta.findings)
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by chestxr {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {},
        "name": f"chestxr {meta.backbone} ({len(findings)} findings)",
        "task": "Multi-label chest X-ray classification",
        "description": "Frontal chest radiograph -> one logit per finding (sigmoid -> score); compare scores "
        "with the per-finding thresholds in chestxr.thresholds.",
        "authors": "chestxr",
        "copyright": "see the source run",
        "intended_use": "Research; thresholds must be signed off on local data before clinical use.",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "xray",
                    "num_channels": channels,
                    "spatial_shape": [size, size],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): "grayscale" for i in range(channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classification",
                    "num_channels": len(findings),
                    "spatial_shape": [len(findings)],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): f for i, f in enumerate(findings)},
                }
            },
        },
        "chestxr": {
            "findings": findings,
            "mode": meta.mode,
            "task": meta.task,
            "backbone": meta.backbone,
            "preprocessing": _preprocessing(meta),
            "thresholds": [r.to_dict() for r in meta.thresholds] if meta.thresholds is not None else None,
            # null: not calibrated, that finding calls nothing (never a silent 0.5)
            "probability_thresholds": [t if t == t else None for t in meta.decision_thresholds()],
            "threshold_status": meta.threshold_status(),
            "probability_calibration": meta.probability_calibration,
            "scores": "sigmoid(logits), or probability_calibration applied to the logits when set",
            "source": {"weights_sha256": meta.weights_sha256, "metadata_version": meta.version},
            "chestxr_version": __version__,
        },
    }


_README = """# {name}

A MONAI Bundle exported by chestxr from a trained run.

- `models/model.ts`: TorchScript, input `image` float32 (B, {channels}, {size}, {size}) -> logits (B, {n}).
- findings (output channels, in order): {findings}
- `configs/inference.json`: `python -m monai.bundle run --config_file configs/inference.json
  --meta_file configs/metadata.json --bundle_root . --dataset_dir FOLDER_OF_PNGS` (set `--image_max 65535`
  for 16-bit PNGs). Scores are sigmoid(logits){calibration}.
- Operating points: `configs/metadata.json` -> `chestxr.probability_thresholds` (one per finding, on the
  score scale), fitted by `chestxr calibrate`; a score >= its threshold is a positive call; a null
  threshold is "not calibrated" (see `chestxr.threshold_status`) and calls nothing.
- DICOM: decode to a [0, 1] image (modality LUT, VOI LUT/window, MONOCHROME1 inverted) first, e.g. with
  `chestxr.imaging.read_image`, then apply the preprocessing after its ScaleIntensityRange step.
"""


def export_monai_bundle(
    run_dir: str | Path, out_dir: str | Path, *, atol: float = 1e-4, overwrite: bool = False
) -> Path:
    """Write the MONAI Bundle of ``run_dir`` into the folder ``out_dir``; returns ``out_dir``.

    Raises OutputExistsError when ``out_dir`` exists and not ``overwrite``, ChestXRError when MONAI
    is missing or tracing/the eager-vs-traced check fails, CheckpointError for a broken run.
    """
    from chestxr.core.fileio import hash_file, make_temp_dir
    from chestxr.modeling.checkpoint import load_model
    from chestxr.runs.export import _random_batch, _trace_torchscript

    _require_monai()
    from monai.data import save_net_with_metadata

    out = Path(out_dir)
    if out.exists() and not (overwrite and out.is_dir()):
        raise OutputExistsError(
            f"{out} already exists; pass --overwrite to replace it" if out.is_dir() else f"{out} is a file"
        )
    model, meta = load_model(run_dir, map_location="cpu")
    model.eval()
    pre = _preprocessing(meta)
    size = int(pre.get("size") or 224)
    channels = int(meta.in_channels)
    example, check = _random_batch(2, channels, size, seed=0), _random_batch(3, channels, size, seed=1)
    with torch.no_grad():
        expected = model(check).float().numpy()
    traced = _trace_torchscript(model, example)
    metadata = bundle_metadata(meta, channels=channels, size=size)
    inference = inference_config(pre, channels=channels, size=size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, prefix=f".{out.name}.")  # umask mode (mkdtemp alone: 0700)
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            save_net_with_metadata(
                traced,
                str(tmp / "models" / "model.ts"),
                include_config_vals=False,
                meta_values=metadata,
                more_extra_files={"inference.json": json.dumps(inference).encode()},
            )
            got = torch.jit.load(str(tmp / "models" / "model.ts"), map_location="cpu")
            with torch.no_grad():
                got = got(check).float().numpy()
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if got.shape != expected.shape or not diff <= atol:
            raise ChestXRError(
                f"the traced model differs from the eager model (shape {got.shape} vs {expected.shape}, "
                f"max |difference| {diff:.3g}, allowed {atol:g}); bundle not written"
            )
        metadata["chestxr"]["check"] = {"max_abs_diff": diff, "atol": atol, "batch": 3}
        metadata["chestxr"]["model_ts_sha256"] = hash_file(tmp / "models" / "model.ts")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n", encoding="utf-8")
        cal = meta.probability_calibration
        (tmp / "docs" / "README.md").write_text(
            _README.format(
                name=metadata["name"],
                channels=channels,
                size=size,
                n=meta.n_findings,
                findings=", ".join(meta.findings),
                calibration=(
                    f"; this run also has {cal.get('method')} probability calibration "
                    "(chestxr.probability_calibration in metadata.json), which these scores do not include"
                )
                if cal
                else "",
            ),
            encoding="utf-8",
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = ["bundle_metadata", "export_monai_bundle", "inference_config"]
