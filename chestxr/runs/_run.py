"""``Run``: a trained run folder as one Python object, the object users hold (load once, then predict, score,
calibrate, evaluate, approve, export).

    from chestxr import Run, calibrate_run, evaluate_run
    run = Run.load("runs/nih")                       # model.json + model.safetensors, never unpickles
    probs = run.scores(["a.dcm", "b.png"])           # (n, f) probabilities (calibrated if calibrated)
    result = run.predict(["a.dcm", "b.png"])         # scores + calls at run.thresholds (chestxr.evaluation.decide)
    calibrate_run(run, "val.csv", split="val")       # updates `run` in place: new thresholds, new version
    evaluate_run(run, "test.csv", "eval", split="test")   # evaluates the thresholds just fitted

A Run never goes stale: :func:`chestxr.runs.calibrate_run` and :func:`chestxr.runs.approve_run` update the
Run they are given (its metadata becomes the version they wrote), and every workflow given a Run re-reads
model.json first when the file changed on disk since (another process calibrated or approved it); the weights
are reloaded when they changed. ``run.metadata`` is the typed :class:`~chestxr.runs.RunMetadata`. A Run is
path-like (``os.fspath(run)`` is its folder), so it goes wherever a run folder path does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from chestxr.core import CheckpointError, LabelPolicy, PreprocessConfig, sigmoid
from chestxr.data import LabeledSet, load_labeled_set
from chestxr.evaluation import OperatingPoint, decide
from chestxr.imaging import IN_PROCESS, LoaderOptions, build_dataset, collate
from chestxr.modeling import GlobalBatchSampler, Predictions, predict, resolve_amp, resolve_device
from chestxr.runs._checkpoint import load_model, read_metadata
from chestxr.runs._folder import RunFolder
from chestxr.runs._metadata import RunMetadata


@dataclass
class RunPredictions:
    """What :meth:`Run.predict` returns for n input paths and f findings.

    scores (n, f) float64 probabilities, NaN rows for skipped images; calls (n, f) bool (the decision rule
    :func:`chestxr.evaluation.decide`; False on skipped rows, see ``ok``); ok (n,) bool: the image was read;
    thresholds (f,); skipped: (path, reason) of each unreadable image (with on_bad_image="skip");
    predicted (n,) int, task multiclass only: the class index (argmax, first on ties; -2 abstained, -1 skipped).
    """

    paths: list[str]
    findings: list[str]
    scores: np.ndarray
    calls: np.ndarray
    ok: np.ndarray
    thresholds: np.ndarray
    skipped: list[tuple[str, str]]
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=object))
    predicted: Optional[np.ndarray] = None

    def to_frame(self) -> pd.DataFrame:
        """One row per path: path, ok, prob_<finding>..., call_<finding>... ("positive", "negative",
        "not calibrated", "no score": the call column every chestxr CSV uses)."""
        out = pd.DataFrame({"path": self.paths, "ok": self.ok})
        for j, f in enumerate(self.findings):
            out[f"prob_{f}"] = self.scores[:, j]
        for j, f in enumerate(self.findings):
            out[f"call_{f}"] = self.labels[:, j]
        return out


@dataclass
class Run:
    """A loaded run folder: the model (eval mode, on ``device``) and its typed metadata."""

    model: torch.nn.Module
    metadata: RunMetadata
    run_dir: Path
    device: torch.device
    _stamp: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], *, device: str = "auto") -> Run:
        """Load ``run_dir`` (the folder ``chestxr train`` wrote); never unpickles.

        Raises CheckpointError for a missing folder, missing/corrupt files, or weights that do not
        match model.json.
        """
        run_dir = RunFolder(run_dir).path
        if not run_dir.exists():
            raise CheckpointError(f"{run_dir}: no such run folder; pass the folder `chestxr train` wrote")
        dev = resolve_device(device)
        model, meta = load_model(run_dir, map_location="cpu")
        model.to(dev).eval()
        return cls(model=model, metadata=meta, run_dir=run_dir, device=dev, _stamp=_stamp(run_dir))

    def __fspath__(self) -> str:
        return str(self.run_dir)

    # ------------------------------------------------------------------ never stale

    def refresh(self) -> Run:
        """Re-read model.json when it changed on disk since this Run last read or wrote it (and the weights
        when their sha256 changed); returns ``self``. Every workflow calls it before using the Run."""
        stamp = _stamp(self.run_dir)
        if stamp != self._stamp:
            meta = read_metadata(self.run_dir)
            if meta.weights_sha256 != self.metadata.weights_sha256:
                model, meta = load_model(self.run_dir, map_location="cpu")
                self.model = model.to(self.device).eval()
            self.metadata, self._stamp = meta, _stamp(self.run_dir)
        return self

    def _updated(self, meta: RunMetadata) -> None:
        """The workflows that write a new model.json version (calibrate, approve) hand it over here."""
        self.metadata, self._stamp = meta, _stamp(self.run_dir)

    # ------------------------------------------------------------------ what the run says about itself

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def findings(self) -> list[str]:
        return list(self.metadata.findings)

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def preprocessing(self) -> PreprocessConfig:
        if self.metadata.preprocessing is None:
            raise CheckpointError(f"{self.folder.metadata}: no preprocessing stored; cannot read images for it")
        return self.metadata.preprocessing

    @property
    def label_policy(self) -> LabelPolicy:
        return self.metadata.label_policy or LabelPolicy()

    @property
    def operating_points(self) -> list[OperatingPoint]:
        """One operating point per finding, in order (see :meth:`RunMetadata.operating_points`)."""
        return self.metadata.operating_points()

    @property
    def thresholds(self) -> np.ndarray:
        """(f,) probability thresholds: the calibrated ones (NaN: not calibrated, calls nothing); 0.5 (logit 0)
        for every finding of a run never calibrated. See RunMetadata.operating_points."""
        return np.asarray(self.metadata.decision_thresholds(), dtype=np.float64)

    @property
    def calibrated(self) -> bool:
        return bool(self.metadata.thresholds)

    # ------------------------------------------------------------------ inference

    def logits(
        self,
        paths: Sequence[str | Path],
        *,
        loading: LoaderOptions = LoaderOptions(),
        channels_last: bool = True,
        features: bool = False,
    ) -> Predictions:
        """Logits (n_ok, f) for ``paths``, in path order; unreadable ones in ``.skipped`` with on_bad_image=skip.
        ``features``: also the penultimate features and input statistics (``Predictions.features``)."""
        ds = build_dataset(
            paths=[str(p) for p in paths],
            targets=None,
            mask=None,
            preprocessing=self.preprocessing,
            augmentation=None,
            train=False,
            cache_dir=loading.cache_dir,
            on_bad_image=loading.on_bad_image,
            n_findings=len(self.findings),
        )
        sampler = GlobalBatchSampler(len(ds), global_batch=loading.batch_size, shuffle=False)
        workers = loading.num_workers if len(ds) > loading.batch_size else 0
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
            features=features,
        )

    def scores_from_logits(self, logits: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Probabilities (n, f) from logits (n, f): the stored probability calibrator if any (and
        ``calibrated``), else the sigmoid."""
        cal = self.metadata.probability_calibration
        if cal is not None and calibrated:
            return np.asarray(cal.apply(logits), dtype=np.float64)
        return sigmoid(logits)

    def scores(self, paths: Sequence[str | Path], *, loading: LoaderOptions = IN_PROCESS) -> np.ndarray:
        """(n, f) float64 probabilities for ``paths`` (NaN rows for images skipped with on_bad_image=skip)."""
        preds = self.logits(paths, loading=loading)
        out = np.full((len(paths), len(self.findings)), np.nan)
        if len(preds.indices):
            out[preds.indices] = self.scores_from_logits(preds.logits)
        return out

    def predict(
        self, paths: Sequence[str | Path], *, loading: LoaderOptions = IN_PROCESS, abstain: bool = False
    ) -> RunPredictions:
        """Scores and calls for ``paths`` at :attr:`thresholds` by the one decision rule
        (:func:`chestxr.evaluation.decide`): task multiclass gives one class per path, the argmax
        (``predicted``; ``calls`` one-hot), the thresholds used only with ``abstain``."""
        self.refresh()
        preds = self.logits(paths, loading=loading)
        n, f = len(paths), len(self.findings)
        scores = np.full((n, f), np.nan)
        if len(preds.indices):
            scores[preds.indices] = self.scores_from_logits(preds.logits)
        ok = np.zeros(n, dtype=bool)
        ok[preds.indices] = True
        thr = self.thresholds
        if abstain and self.task != "multiclass":
            raise ValueError("abstain applies to runs with task: multiclass")
        decisions = decide(scores, thr, multiclass=self.task == "multiclass", abstain=abstain)
        return RunPredictions(
            paths=[str(p) for p in paths],
            findings=self.findings,
            scores=scores,
            calls=decisions.positive,
            ok=ok,
            thresholds=thr,
            skipped=[(str(paths[i]), r) for i, r in preds.skipped],
            labels=decisions.labels(),
            predicted=decisions.predicted,
        )

    def score_labeled(
        self,
        manifest: str | Path,
        *,
        split: Optional[str] = None,
        loading: LoaderOptions = LoaderOptions(),
        features: bool = False,
    ) -> LabeledScores:
        """Score the rows of a labelled manifest (``split`` only, when given) with this run: the labelled
        rows (the run's findings and label policy), the logits of those that were read, and the skipped ones
        (``features``: with the penultimate features and input statistics of the kept rows)."""
        labeled = load_labeled_set(
            manifest, findings=self.findings, policy=self.label_policy, split=split, seed=self.metadata.seed
        )
        preds = self.logits(labeled.paths, loading=loading, features=features)
        return LabeledScores(labeled, preds.logits, preds.indices, preds.skipped, preds.features, preds.input_stats)


@dataclass
class LabeledScores:
    """A labelled split scored by a run: ``labeled`` (every row), ``logits`` (n_kept, f) of the rows in
    ``kept`` (indices into ``labeled``, sorted), ``skipped`` (index, reason) of the unreadable ones."""

    labeled: LabeledSet
    logits: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[int, str]]
    features: Optional[np.ndarray] = None  # (n_kept, D) with score_labeled(features=True)
    input_stats: Optional[np.ndarray] = None  # (n_kept, 2)

    @property
    def patient_ids(self) -> np.ndarray:
        """(n_kept,) the patient IDs of the scored rows."""
        return self.labeled.patient_ids[self.kept]


def _stamp(run_dir: Path) -> tuple[float, ...]:
    """(mtime_ns, size) of model.json and model.safetensors: changes whenever either is rewritten."""
    folder = RunFolder(run_dir)
    out: list[float] = []
    for path in (folder.metadata, folder.weights):
        try:
            st = os.stat(path)
            out += [st.st_mtime_ns, st.st_size, st.st_ino]
        except OSError:
            out += [-1, -1, -1]
    return tuple(out)


RunLike = Union[Run, str, "os.PathLike[str]"]


def as_run(run: RunLike) -> Run:
    """A current Run: ``run`` itself (refreshed from disk if its model.json changed since), or the run folder
    it names, loaded."""
    return run.refresh() if isinstance(run, Run) else Run.load(run)


def load_run(run_dir: str | Path, *, device: str = "auto") -> Run:
    """``Run.load(run_dir, device=device)``."""
    return Run.load(run_dir, device=device)
