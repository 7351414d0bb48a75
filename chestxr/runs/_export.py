"""Export a trained run for deployment without chestxr: a TorchScript or ONNX file with a JSON sidecar
(:func:`export_model`), or a MONAI Bundle folder (:func:`export_monai_bundle`). Both take a
:class:`~chestxr.runs.Run` or a run folder, trace its best model at the checkpoint's preprocessing size, check the
traced model against the eager one on a random batch of another size (|difference| <= ``atol``) before anything is
written, and write atomically (a file renamed into place; a folder staged by :func:`chestxr.core.staged_output_dir`).

TorchScript / ONNX. ``export_model(run_dir, out_path, format=...)`` loads the run's best weights (eval mode, CPU),
traces the model at the checkpoint's preprocessing size, and writes

* ``out_path``: the TorchScript archive (``torch.jit.load``) or ONNX graph (input ``image``
  (batch, C, S, S) float32, output ``logits`` (batch, n_findings); the batch axis is dynamic);
* ``out_path + ".json"``: a sidecar with what a deployment needs to turn pixels into calls -
  findings, preprocessing (size, resize mode, normalization, VOI handling), thresholds,
  probability calibration, the source run's weights hash and the measured export error.

Before the file is renamed into place, its outputs are compared with the eager model's on a
random batch of a different size than the traced one; a difference above ``atol`` (1e-4) raises
:class:`~chestxr.core.ChestXRError` and leaves nothing under ``out_path``. Both files are written
atomically (temp file + rename).

MONAI Bundle. ``export_monai_bundle(run_dir, out_dir)`` writes::

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
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from chestxr import __version__
from chestxr.core import (
    ChestXRError,
    OutputExistsError,
    config_to_dict,
    hash_file,
    staged_output_dir,
    write_json_atomic,
    write_with_atomic,
)
from chestxr.imaging import IMAGENET_MEAN, IMAGENET_STD, XRV_SCALE
from chestxr.runs._metadata import RunMetadata
from chestxr.runs._output_guard import guard_run_output, refuse_run_folder
from chestxr.runs._run import RunLike, as_run

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17


def sidecar_path(out_path: str | Path) -> Path:
    """Where the JSON description of an exported file lives: ``<out_path>.json``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".json")


def _random_batch(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """(n, channels, size, size) float32 roughly in the range of normalized images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)


def _trace_torchscript(model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning; "torch.jit is deprecated" FutureWarning
            return torch.jit.trace(model, example, check_trace=False)
    except Exception as exc:  # tracing failures are library errors with long traces
        raise ChestXRError(f"cannot trace the model to TorchScript ({type(exc).__name__}: {exc})") from None


def _run_torchscript(path: str, x: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return loaded(x).float().numpy()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ChestXRError(
            f"ONNX export needs the packages onnx and onnxruntime ({exc.name} is missing); "
            "`pip install onnx onnxruntime` or use --format torchscript"
        ) from None


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(
                model,
                (example,),
                path,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    except Exception as exc:
        raise ChestXRError(f"cannot export the model to ONNX ({type(exc).__name__}: {exc})") from None


def _run_onnx(path: str, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"image": x.numpy()})[0], dtype=np.float32)


def export_model(
    run: RunLike,
    out_path: str | Path,
    *,
    format: Literal["torchscript", "onnx"] = "torchscript",
    example_size: Optional[int] = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Path:
    """Export the model of ``run`` (a Run or a run folder) to ``out_path``; returns ``out_path``.

    The exported module maps image (B, C, S, S) float32 -> logits (B, n_findings) float32,
    with S = ``example_size`` or the checkpoint's ``preprocessing.size`` and any B.
    ``atol``: the largest |exported - eager| allowed on a random (3, C, S, S) batch.
    Raises CheckpointError for a missing/broken run, OutputExistsError when ``out_path`` exists
    and not ``overwrite``, ChestXRError when export or the check fails.
    """
    if format not in FORMATS:
        raise ChestXRError(f"export format must be one of {list(FORMATS)}, got {format!r}")
    out_path = Path(out_path)
    guard_run_output(out_path, Path(run))  # never into a run folder (RUN/model.safetensors would replace the weights)
    guard_run_output(sidecar_path(out_path), Path(run), option="--out's sidecar")  # RUN/model -> RUN/model.json
    if out_path.is_dir():
        raise OutputExistsError(f"{out_path} is a folder; --out names the file to write, e.g. model.pt")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} already exists; pass --overwrite to replace it")
    if format == "onnx":
        _require_onnx()
    model, meta, run_dir = _cpu_model(run)
    pre = _preprocessing(meta)
    size = int(example_size or pre.get("size") or 224)
    channels = meta.in_channels
    if size < 8:
        raise ChestXRError(f"example size must be >= 8 pixels, got {size}")
    example = _random_batch(2, channels, size, seed=0)
    check = _random_batch(3, channels, size, seed=1)  # another batch size: the batch axis must be free
    with torch.no_grad():
        expected = model(check).float().numpy()
    result: dict[str, float] = {}

    def write(tmp: str) -> None:
        if format == "torchscript":
            traced = _trace_torchscript(model, example)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                traced.save(tmp)
            got = _run_torchscript(tmp, check)
        else:
            _write_onnx(model, example, tmp)
            got = _run_onnx(tmp, check)
        if got.shape != expected.shape:
            raise ChestXRError(
                f"exported {format} model gives shape {got.shape} for a batch of 3, the eager model {expected.shape}"
            )
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if not diff <= atol:
            raise ChestXRError(
                f"exported {format} model differs from the eager model by {diff:.3g} "
                f"(allowed {atol:g}) on a random batch; not written"
            )
        result["max_abs_diff"] = diff

    write_with_atomic(out_path, write)
    sidecar = {
        "format": format,
        "file": out_path.name,
        "sha256": hash_file(out_path),
        "input": {"name": "image", "shape": ["batch", channels, size, size], "dtype": "float32"},
        "output": {
            "name": "logits",
            "shape": ["batch", meta.n_findings],
            "dtype": "float32",
            "scores": "sigmoid(logits), or probability_calibration when set",
        },
        "findings": list(meta.findings),
        "mode": meta.mode,
        "task": meta.task,
        "backbone": meta.backbone,
        "preprocessing": pre,
        "thresholds": [r.to_dict() for r in meta.thresholds] if meta.thresholds is not None else None,
        "probability_thresholds": meta.decision_thresholds(),  # null: not calibrated, calls nothing
        "threshold_status": meta.threshold_status(),
        "probability_calibration": _calibration(meta),
        "source": {
            "run_dir": str(Path(run_dir)),
            "weights_sha256": meta.weights_sha256,
            "metadata_version": meta.version,
        },
        "check": {"max_abs_diff": result["max_abs_diff"], "atol": atol, "batch": 3},
        "opset": ONNX_OPSET if format == "onnx" else None,
        "versions": {"torch": torch.__version__, **_versions(meta)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(sidecar_path(out_path), sidecar)
    return out_path


def _cpu_model(run: RunLike) -> tuple[torch.nn.Module, RunMetadata, Path]:
    """A CPU copy of the run's model in eval mode (the Run's own model is left where it is), its metadata and
    its folder; ``run`` is a Run (re-read when its model.json changed) or a run folder."""
    import copy

    loaded = as_run(run)
    return copy.deepcopy(loaded.model).to("cpu").eval(), loaded.metadata, loaded.run_dir


def _versions(meta: RunMetadata) -> dict[str, Any]:
    return {"chestxr": __version__, "trained_with": meta.versions}


# ----------------------------------------------------------------------------- MONAI Bundle

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


def _calibration(meta: RunMetadata) -> Optional[dict[str, Any]]:
    """The probability calibrator's JSON form (None when the run has none)."""
    cal = meta.probability_calibration
    return cal.to_dict() if cal is not None else None


def _preprocessing(meta: RunMetadata) -> dict[str, Any]:
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
            "probability_calibration": _calibration(meta),
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


def export_monai_bundle(run: RunLike, out_dir: str | Path, *, atol: float = 1e-4, overwrite: bool = False) -> Path:
    """Write the MONAI Bundle of ``run`` (a Run or a run folder) into the folder ``out_dir``; returns ``out_dir``.

    Raises OutputExistsError when ``out_dir`` holds results and not ``overwrite`` (or is a file), ChestXRError
    when MONAI is missing or tracing/the eager-vs-traced check fails, CheckpointError for a broken run.
    """
    guard_run_output(out_dir, Path(run))  # --out RUN --overwrite would delete the run folder
    _require_monai()
    from monai.data import save_net_with_metadata

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; --out names the bundle folder to write")
    model, meta, _ = _cpu_model(run)
    pre = _preprocessing(meta)
    size = int(pre.get("size") or 224)
    channels = int(meta.in_channels)
    example, check = _random_batch(2, channels, size, seed=0), _random_batch(3, channels, size, seed=1)
    with torch.no_grad():
        expected = model(check).float().numpy()
    traced = _trace_torchscript(model, example)
    metadata = bundle_metadata(meta, channels=channels, size=size)
    inference = inference_config(pre, channels=channels, size=size)
    with staged_output_dir(out, overwrite=overwrite, refuse=refuse_run_folder) as tmp:
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
                    f"; this run also has {cal.method} probability calibration "
                    "(chestxr.probability_calibration in metadata.json), which these scores do not include"
                )
                if cal
                else "",
            ),
            encoding="utf-8",
        )
    return out
