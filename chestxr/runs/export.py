"""Export a trained run to TorchScript or ONNX for deployment without chestxr.

``export_model(run_dir, out_path, format=...)`` loads the run's best weights (eval mode, CPU),
traces the model at the checkpoint's preprocessing size, and writes

* ``out_path``: the TorchScript archive (``torch.jit.load``) or ONNX graph (input ``image``
  (batch, C, S, S) float32, output ``logits`` (batch, n_findings); the batch axis is dynamic);
* ``out_path + ".json"``: a sidecar with what a deployment needs to turn pixels into calls -
  findings, preprocessing (size, resize mode, normalization, VOI handling), thresholds,
  probability calibration, the source run's weights hash and the measured export error.

Before the file is renamed into place, its outputs are compared with the eager model's on a
random batch of a different size than the traced one; a difference above ``atol`` (1e-4) raises
:class:`~chestxr.core.errors.ChestXRError` and leaves nothing under ``out_path``. Both files are written
atomically (temp file + rename).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from chestxr.core.config import config_to_dict
from chestxr.core.errors import ChestXRError, OutputExistsError
from chestxr.modeling.run_metadata import RunMetadata

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
    run_dir: str | Path,
    out_path: str | Path,
    *,
    format: Literal["torchscript", "onnx"] = "torchscript",
    example_size: Optional[int] = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Path:
    """Export the model of ``run_dir`` to ``out_path``; returns ``out_path``.

    The exported module maps image (B, C, S, S) float32 -> logits (B, n_findings) float32,
    with S = ``example_size`` or the checkpoint's ``preprocessing.size`` and any B.
    ``atol``: the largest |exported - eager| allowed on a random (3, C, S, S) batch.
    Raises CheckpointError for a missing/broken run, OutputExistsError when ``out_path`` exists
    and not ``overwrite``, ChestXRError when export or the check fails.
    """
    from chestxr.core.fileio import hash_file, write_json_atomic, write_with_atomic
    from chestxr.modeling.checkpoint import load_model

    if format not in FORMATS:
        raise ChestXRError(f"export format must be one of {list(FORMATS)}, got {format!r}")
    out_path = Path(out_path)
    if out_path.is_dir():
        raise OutputExistsError(f"{out_path} is a folder; --out names the file to write, e.g. model.pt")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} already exists; pass --overwrite to replace it")
    if format == "onnx":
        _require_onnx()
    model, meta = load_model(run_dir, map_location="cpu")
    model.eval()
    pre = config_to_dict(meta.preprocessing) if meta.preprocessing is not None else {}
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
        "probability_calibration": meta.probability_calibration,
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


def _versions(meta: RunMetadata) -> dict[str, Any]:
    from chestxr import __version__

    return {"chestxr": __version__, "trained_with": meta.versions}
