"""``Run``: a trained run folder as one Python object (load once, then predict, score, inspect).

    from chestxr import Run
    run = Run.load("runs/nih")                       # model.json + model.safetensors, never unpickles
    probs = run.scores(["a.dcm", "b.png"])           # (n, f) probabilities (calibrated if calibrated)
    result = run.predict(["a.dcm", "b.png"])         # scores + positive calls at run.thresholds
    print(dict(zip(run.findings, run.thresholds)))

``run.metadata`` is the typed :class:`~chestxr.modeling.run_metadata.RunMetadata`; the calibrate /
evaluate / predict workflows (:mod:`chestxr.runs.workflows`) and the exporter take a Run too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from chestxr.core.config import LabelPolicy, PreprocessConfig
from chestxr.core.errors import CheckpointError
from chestxr.core.numeric import sigmoid
from chestxr.imaging.dataset import build_dataset, collate
from chestxr.modeling.distributed import GlobalBatchSampler
from chestxr.modeling.engine import Predictions, predict, resolve_amp, resolve_device
from chestxr.modeling.run_metadata import RunMetadata


@dataclass
class RunPredictions:
    """What :meth:`Run.predict` returns for n input paths and f findings.

    scores (n, f) float64 probabilities, NaN rows for skipped images; positive (n, f) bool
    (score >= threshold; False on skipped rows, see ``ok``); ok (n,) bool: the image was read;
    skipped: (path, reason) of each unreadable image (with on_bad_image="skip").
    """

    paths: list[str]
    findings: list[str]
    scores: np.ndarray
    positive: np.ndarray
    ok: np.ndarray
    thresholds: np.ndarray
    skipped: list[tuple[str, str]]
    #: task multiclass only: the class index per path (argmax, first on ties; -2 abstained, -1 skipped)
    predicted: Optional[np.ndarray] = None

    def to_frame(self) -> pd.DataFrame:
        """One row per path: path, ok, prob_<finding>..., positive_<finding>..."""
        out = pd.DataFrame({"path": self.paths, "ok": self.ok})
        for j, f in enumerate(self.findings):
            out[f"prob_{f}"] = self.scores[:, j]
        for j, f in enumerate(self.findings):
            out[f"positive_{f}"] = self.positive[:, j]
        return out


@dataclass
class Run:
    """A loaded run folder: the model (eval mode, on ``device``) and its typed metadata."""

    model: torch.nn.Module
    metadata: RunMetadata
    run_dir: Path
    device: torch.device

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "auto") -> Run:
        """Load ``run_dir`` (the folder ``chestxr train`` wrote); never unpickles.

        Raises CheckpointError for a missing folder, missing/corrupt files, or weights that do not
        match model.json.
        """
        from chestxr.modeling.checkpoint import load_model

        run_dir = Path(run_dir)
        if not run_dir.exists():
            raise CheckpointError(f"{run_dir}: no such run folder; pass the folder `chestxr train` wrote")
        dev = resolve_device(device)
        model, meta = load_model(run_dir, map_location="cpu")
        model.to(dev).eval()
        return cls(model=model, metadata=meta, run_dir=run_dir, device=dev)

    # ------------------------------------------------------------------ what the run says about itself

    @property
    def findings(self) -> list[str]:
        return list(self.metadata.findings)

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def preprocessing(self) -> PreprocessConfig:
        if self.metadata.preprocessing is None:
            raise CheckpointError(f"{self.run_dir / 'model.json'}: no preprocessing stored; cannot read images for it")
        return self.metadata.preprocessing

    @property
    def label_policy(self) -> LabelPolicy:
        return self.metadata.label_policy or LabelPolicy()

    @property
    def thresholds(self) -> np.ndarray:
        """(f,) probability thresholds: the calibrated ones (NaN: not calibrated, calls nothing); 0.5 (logit 0)
        for every finding of a run never calibrated. See RunMetadata.decision_thresholds."""
        return np.asarray(self.metadata.decision_thresholds(), dtype=np.float64)

    @property
    def calibrated(self) -> bool:
        return bool(self.metadata.thresholds)

    # ------------------------------------------------------------------ inference

    def logits(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 32,
        num_workers: int = 2,
        cache_dir: Optional[str] = None,
        on_bad_image: Literal["error", "skip"] = "error",
        channels_last: bool = True,
    ) -> Predictions:
        """Logits (n_ok, f) for ``paths``, in path order; unreadable ones in ``.skipped`` with on_bad_image=skip."""
        ds = build_dataset(
            paths=[str(p) for p in paths],
            targets=None,
            mask=None,
            preprocessing=self.preprocessing,
            augmentation=None,
            train=False,
            cache_dir=cache_dir,
            on_bad_image=on_bad_image,
            n_findings=len(self.findings),
        )
        sampler = GlobalBatchSampler(len(ds), global_batch=batch_size, shuffle=False)
        workers = num_workers if len(ds) > batch_size else 0
        loader = DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
        )
        model = self.model.to(memory_format=torch.channels_last) if channels_last else self.model
        return predict(
            model,
            loader,
            device=self.device,
            amp_dtype=resolve_amp("auto", self.device),
            channels_last=channels_last,
            total=len(sampler),
            findings=self.findings,
        )

    def scores_from_logits(self, logits: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Probabilities (n, f) from logits (n, f): the stored probability calibrator if any (and
        ``calibrated``), else the sigmoid."""
        cal = self.metadata.probability_calibration
        if cal and calibrated:
            from chestxr.evaluation.probability import ProbabilityCalibrator

            return np.asarray(ProbabilityCalibrator.from_dict(cal).apply(logits), dtype=np.float64)
        return sigmoid(logits)

    def scores(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        on_bad_image: Literal["error", "skip"] = "error",
    ) -> np.ndarray:
        """(n, f) float64 probabilities for ``paths`` (NaN rows for images skipped with on_bad_image=skip)."""
        preds = self.logits(paths, batch_size=batch_size, num_workers=num_workers, on_bad_image=on_bad_image)
        out = np.full((len(paths), len(self.findings)), np.nan)
        if len(preds.indices):
            out[preds.indices] = self.scores_from_logits(preds.logits)
        return out

    def predict(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 32,
        num_workers: int = 0,
        on_bad_image: Literal["error", "skip"] = "error",
        abstain: bool = False,
    ) -> RunPredictions:
        """Scores and positive calls (score >= :attr:`thresholds`) for ``paths``.

        task multiclass: one class per path, the argmax (``predicted``; ``positive`` one-hot); the
        thresholds are used only with ``abstain`` (see :mod:`chestxr.evaluation.decisions`)."""
        preds = self.logits(paths, batch_size=batch_size, num_workers=num_workers, on_bad_image=on_bad_image)
        n, f = len(paths), len(self.findings)
        scores = np.full((n, f), np.nan)
        if len(preds.indices):
            scores[preds.indices] = self.scores_from_logits(preds.logits)
        ok = np.zeros(n, dtype=bool)
        ok[preds.indices] = True
        thr = self.thresholds
        positive = np.where(ok[:, None], np.nan_to_num(scores, nan=-np.inf) >= thr[None, :], False)
        predicted = None
        if self.task == "multiclass":
            from chestxr.evaluation.decisions import argmax_decision, one_hot_calls

            predicted, _ = argmax_decision(scores, thr, abstain=abstain)
            positive = one_hot_calls(predicted, f)
        elif abstain:
            raise ValueError("abstain applies to runs with task: multiclass")
        return RunPredictions(
            paths=[str(p) for p in paths],
            findings=self.findings,
            scores=scores,
            positive=positive,
            ok=ok,
            thresholds=thr,
            skipped=[(str(paths[i]), r) for i, r in preds.skipped],
            predicted=predicted,
        )


def load_run(run_dir: str | Path, *, device: str = "auto") -> Run:
    """``Run.load(run_dir, device=device)``."""
    return Run.load(run_dir, device=device)
