"""Running a saved model: load a run folder, predict a list of images, turn logits into scores.

A run folder describes itself (model.json: findings, preprocessing, thresholds, probability
calibration), so nothing else is needed to predict.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from chestxr.core.config import PreprocessConfig, _from_dict
from chestxr.imaging.dataset import build_dataset, collate
from chestxr.modeling.distributed import GlobalBatchSampler
from chestxr.modeling.engine import Predictions, predict, resolve_amp, resolve_device
from chestxr.core.errors import CheckpointError


@dataclass
class LoadedRun:
    """A model ready for inference and its metadata."""

    model: torch.nn.Module
    meta: dict[str, Any]
    run_dir: Path
    device: torch.device

    @property
    def findings(self) -> list[str]:
        return list(self.meta["findings"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        from chestxr.core.errors import ConfigError

        try:
            return _from_dict(PreprocessConfig, dict(self.meta["preprocessing"]), "preprocessing")
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.run_dir / 'model.json'}: invalid preprocessing: {exc}") from None

    def thresholds(self) -> np.ndarray:
        """(f,) probability thresholds: calibrated ones, else 0.5 (logit 0)."""
        return thresholds_from_meta(self.meta)


def thresholds_from_meta(meta: dict[str, Any]) -> np.ndarray:
    """Stored thresholds (f,) from model.json; 0.5 (logit > 0) where none is stored or it is NaN."""
    n = len(meta["findings"])
    out = np.full(n, 0.5)
    recs = meta.get("thresholds") or []
    by_name = {r.get("finding"): r for r in recs if isinstance(r, dict)}
    for j, f in enumerate(meta["findings"]):
        v = by_name.get(f, {}).get("threshold")
        if v is not None and np.isfinite(v):
            out[j] = float(v)
    return out


def load_run(run_dir: str | Path, *, device: str = "auto") -> LoadedRun:
    """Load ``run_dir`` (a folder with model.json + model.safetensors); never unpickles."""
    from chestxr.modeling.checkpoint import load_model

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: no such run folder; pass the folder `chestxr train` wrote")
    dev = resolve_device(device)
    model, meta = load_model(run_dir, map_location="cpu")
    model.to(dev).eval()
    return LoadedRun(model=model, meta=meta, run_dir=run_dir, device=dev)


def predict_paths(run: LoadedRun, paths: Sequence[str], *, batch_size: int = 32, num_workers: int = 2,
                  cache_dir: Optional[str] = None, on_bad_image: str = "error",
                  channels_last: bool = True) -> Predictions:
    """Logits (n_ok, f) for ``paths`` (unreadable ones listed in ``.skipped`` with on_bad_image=skip)."""
    pre = run.preprocessing
    ds = build_dataset(paths=list(paths), targets=None, mask=None, preprocessing=pre, augmentation=None,
                       train=False, cache_dir=cache_dir, on_bad_image=on_bad_image,  # type: ignore[arg-type]
                       n_findings=len(run.findings))
    sampler = GlobalBatchSampler(len(ds), global_batch=batch_size, shuffle=False)
    workers = num_workers if len(ds) > batch_size else 0
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                        pin_memory=run.device.type == "cuda")
    model = run.model.to(memory_format=torch.channels_last) if channels_last else run.model
    return predict(model, loader, device=run.device, amp_dtype=resolve_amp("auto", run.device),
                   channels_last=channels_last, total=len(sampler), findings=run.findings)


def scores_from_logits(logits: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Probabilities (n, f): the stored probability calibration if any, else the sigmoid."""
    cal = meta.get("probability_calibration")
    if cal:
        from chestxr.evaluation.probability import ProbabilityCalibrator

        return np.asarray(ProbabilityCalibrator.from_dict(cal).apply(logits), dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ""}


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files from a mix of files and folders (folders searched recursively for images/DICOMs)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for root, _dirs, files in os.walk(p):
                for name in sorted(files):
                    fp = Path(root) / name
                    if fp.suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                        out.append(fp)
        elif p.exists():
            out.append(p)
        else:
            raise CheckpointError(f"{p}: no such file or folder to predict")
    return sorted(set(out))


def study_key_for_file(path: Path) -> str:
    """A study key for a file without a manifest: a hash of the DICOM StudyInstanceUID (never the UID
    itself), else the file's folder name."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        uid = str(getattr(ds, "StudyInstanceUID", "") or "")
        if uid:
            return "study-" + hashlib.sha256(uid.encode()).hexdigest()[:12]
    except Exception:  # not a DICOM, or unreadable header: fall back to the folder
        pass
    return path.parent.name or "study"
