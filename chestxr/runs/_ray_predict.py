"""Batch inference on Ray Data: CPU decoding in Ray tasks streamed into model actors, results kept in a
keyed store so a killed job resumes where it stopped (``chestxr predict --engine ray``; extra ``ray``).

The pipeline of :func:`score_with_ray` for n image paths:

1. **hash** (Ray tasks, ``HASH_BLOCK`` paths each): the SHA-256 of every file's bytes. A file that cannot be
   read is given the reason the image reader gives for it (the same words as ``chestxr predict``).
2. **filter** (driver): the distinct image hashes not yet in the result store
   (chestxr/runs/_result_store.py, keyed by image + model + thresholds hash). Only they go on.
3. **decode** (Ray tasks, ``batch_size`` images each, ``decode_cpus`` CPUs and ``decode_memory`` bytes
   reserved per task): the run's own Dataset item code (read, decode cache, content checks, eval
   transform), so pixels are those of plain predict. An unreadable image becomes ``ok=False`` with the
   reader's reason; an unexpected decoder exception too (``unexpected <Type>: ...``): a bad image never
   fails the job.
4. **infer** (a pool of ``actors`` Ray actors, each with ``gpus_per_actor`` GPUs and ``cpus_per_actor``
   CPUs): each actor loads the run once from bytes shipped through the object store (``ray.put`` of
   model.json + model.safetensors, chestxr/runs/_packed_run.py: no shared disk needed), runs the
   engine's ``predict`` (eval mode, channels_last, the run's AMP rule; non-finite outputs are skipped like
   unreadable images), turns logits into probabilities with the run's probability calibration and calls
   them at the run's thresholds.
5. **write** (driver): results stream back (a few floats per image) and are appended to the store in
   parts of ``part_rows`` rows (or every ``flush_seconds``), each written atomically; the driver is the
   only writer and drops any image it already holds, so no row is written twice.

Ray Data retries decode tasks whose worker dies and restarts dead actors (its defaults); ``ray.init`` is
called with ``address`` (or ``$RAY_ADDRESS``) to join a cluster, else a local Ray is started with
``num_cpus`` CPUs and shut down at the end. A Ray session that is already initialised is used as it is.
With ``ship_code`` (default) the driver's ``chestxr`` package is sent to the workers
(``runtime_env={"py_modules": [...]}``) so every worker runs the driver's code; the workers need
chestxr's dependencies (torch, pydicom, ...) installed.

``ray`` is imported only inside these functions: ``import chestxr`` never imports Ray.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core import CheckpointError, ChestXRError, ConfigError, ImageReadError
from chestxr.evaluation import decide
from chestxr.runs._packed_run import PackedRun, load_packed, pack_run
from chestxr.runs._result_store import (
    STATUS_OK,
    STATUS_SKIPPED,
    ResultStore,
    hash_image_file,
    model_sha256,
    thresholds_sha256,
)

#: paths per hash task
HASH_BLOCK = 256
_MiB = 1 << 20


class RayUnavailableError(ChestXRError):
    """Ray (the extra ``ray``) is not installed, or the cluster cannot be reached."""


@dataclass(frozen=True)
class RayOptions:
    """How ``--engine ray`` runs. ``address``: a Ray cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``);
    None joins ``$RAY_ADDRESS`` when set, else starts a local Ray with ``num_cpus`` CPUs (default: all) and
    ``object_store_memory`` bytes (default: Ray's). ``actors`` model actors with ``gpus_per_actor`` GPUs
    (fractions share a GPU) and ``cpus_per_actor`` CPUs each (torch threads = max(1, int(cpus_per_actor)));
    decode tasks take ``decode_cpus`` CPUs and reserve ``decode_memory`` bytes each. ``part_rows``: rows per
    result part (default ``$CHESTXR_RAY_PART_ROWS`` or 4096: smaller parts lose less work to a kill);
    ``flush_seconds``: the longest a finished result waits in memory before it is written."""

    address: Optional[str] = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    decode_cpus: float = 1.0
    decode_memory: int = 512 * _MiB
    batch_size: int = 32
    part_rows: int = field(default_factory=lambda: int(os.environ.get("CHESTXR_RAY_PART_ROWS", "4096")))
    flush_seconds: float = 60.0
    num_cpus: Optional[int] = None
    object_store_memory: Optional[int] = None
    ship_code: bool = True

    def check(self) -> None:
        """ConfigError naming the option that is out of range."""
        if self.actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {self.actors}")
        if self.gpus_per_actor < 0:
            raise ConfigError(f"--gpus-per-actor must be >= 0, got {self.gpus_per_actor}")
        if self.cpus_per_actor <= 0 and self.gpus_per_actor == 0:
            raise ConfigError(f"cpus_per_actor must be > 0 for CPU actors, got {self.cpus_per_actor}")
        if self.batch_size < 1 or self.part_rows < 1:
            raise ConfigError(f"batch_size and part_rows must be >= 1, got {self.batch_size}, {self.part_rows}")


@dataclass
class RayScores:
    """What :func:`score_with_ray` returns for n paths and f findings.

    scores (n, f) float64 probabilities (NaN rows where not ``ok``); ok (n,) bool; skipped: (index, reason)
    of each image not scored, in path order; image_sha256: per path (None when the file could not be read);
    computed: distinct images scored by this call; reused: distinct images found in the store;
    seconds: wall time per stage ("ray_start", "hash", "infer", "total")."""

    paths: list[str]
    findings: list[str]
    scores: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[int, str]]
    image_sha256: list[Optional[str]]
    model_sha256: str
    thresholds_sha256: str
    computed: int
    reused: int
    seconds: dict[str, float] = field(default_factory=dict)


def import_ray() -> Any:
    """``ray`` with ``ray.data``, or RayUnavailableError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(
            f"--engine ray needs Ray Data ({exc.name or 'ray'} is not installed): pip install 'chestxr[ray]'"
        ) from None
    return ray


@contextmanager
def ray_session(options: RayOptions) -> Iterator[dict[str, Any]]:
    """A Ray connection for one job (see the module doc); yields {"started": bool, "seconds": float,
    "cpus": float, "gpus": float}."""
    ray = import_ray()
    t0 = time.perf_counter()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if options.ship_code:
            import chestxr

            kwargs["runtime_env"] = {"py_modules": [str(Path(chestxr.__file__).parent)]}
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=options.num_cpus, object_store_memory=options.object_store_memory, **kwargs)
        except ConnectionError as exc:
            raise RayUnavailableError(f"--ray-address {address}: cannot connect to the Ray cluster ({exc})") from None
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # chestxr's own progress line instead of one bar per operator
    ctx.print_on_execution_start = False
    data_log = logging.getLogger("ray.data")
    log_level = data_log.level
    data_log.setLevel(logging.WARNING)  # no "execution finished" line per stage
    resources = ray.cluster_resources()
    info = {
        "started": started,
        "seconds": time.perf_counter() - t0,
        "cpus": float(resources.get("CPU", 0.0)),
        "gpus": float(resources.get("GPU", 0.0)),
    }
    try:
        yield info
    finally:
        data_log.setLevel(log_level)
        if started:
            ray.shutdown()


def _check_capacity(options: RayOptions, info: dict[str, Any]) -> None:
    """Refuse a plan whose actors leave no CPU for the decode tasks (Ray would wait forever)."""
    actor_cpus = options.actors * options.cpus_per_actor
    if info["cpus"] and actor_cpus + options.decode_cpus > info["cpus"] + 1e-9:
        raise ConfigError(
            f"--actors {options.actors} x {options.cpus_per_actor:g} CPUs leaves no room for a decode task "
            f"({options.decode_cpus:g} CPU) on a Ray cluster of {info['cpus']:g} CPUs: lower --actors or "
            "cpus_per_actor, or add nodes"
        )
    gpus = options.actors * options.gpus_per_actor
    if gpus > info["gpus"] + 1e-9:
        raise ConfigError(
            f"--actors {options.actors} x --gpus-per-actor {options.gpus_per_actor:g} needs {gpus:g} GPUs; "
            f"the Ray cluster has {info['gpus']:g}"
        )


# ----------------------------------------------------------------------------- stage functions (on workers)


def _reader_reason(path: str, preprocessing: Any) -> str:
    """The reason the image reader gives for ``path`` (used when the file cannot even be hashed)."""
    from chestxr.imaging import build_image_loader

    try:
        build_image_loader(preprocessing, cache_dir=None)(path)
    except ImageReadError as exc:
        return exc.reason
    except Exception as exc:  # the reader's own bug: still a reason, never a failed job
        return f"unexpected {type(exc).__name__}: {exc}"
    return "the file could not be read while hashing it; it was readable afterwards (changing under the job?)"


def hash_batch(batch: dict[str, np.ndarray], *, preprocessing: Any) -> dict[str, np.ndarray]:
    """Ray task: image_sha256 ("" when unreadable) and reason per path."""
    shas, reasons = [], []
    for path in batch["path"]:
        try:
            shas.append(hash_image_file(str(path)))
            reasons.append("")
        except OSError:
            shas.append("")
            reasons.append(_reader_reason(str(path), preprocessing))
    return {
        "row": batch["row"],
        "image_sha256": np.array(shas, dtype=object),
        "reason": np.array(reasons, dtype=object),
    }


def decode_batch(
    batch: dict[str, np.ndarray], *, preprocessing: Any, cache_dir: Optional[str]
) -> dict[str, np.ndarray]:
    """Ray task: model input (B, C, S, S) float32 per path with the run's Dataset item code; ok / reason."""
    from chestxr.imaging import build_dataset

    paths = [str(p) for p in batch["path"]]
    ds = build_dataset(
        paths=paths,
        targets=None,
        mask=None,
        preprocessing=preprocessing,
        augmentation=None,
        train=False,
        cache_dir=cache_dir,
        on_bad_image="skip",
        n_findings=1,
    )
    shape = (preprocessing.channels, preprocessing.size, preprocessing.size)
    images = np.zeros((len(paths), *shape), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    reasons = []
    for i in range(len(paths)):
        try:
            item = ds[i]
            images[i] = item["image"].numpy()
            ok[i], reason = bool(item["ok"]), str(item["reason"])
        except Exception as exc:  # a decoder bug on one image never fails the job
            reason = f"unexpected {type(exc).__name__}: {exc}"
        reasons.append(reason)
    return {
        "image_sha256": batch["image_sha256"],
        "path": batch["path"],
        "image": images,
        "ok": ok,
        "reason": np.array(reasons, dtype=object),
    }


class _SkipLoader:
    """One collated batch for the engine's ``predict``, whose dataset says on_bad_image="skip"."""

    class _Dataset:
        on_bad_image = "skip"

    dataset = _Dataset()

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield self.batch

    def __len__(self) -> int:
        return 1


def decide_calls(scores: np.ndarray, thresholds: np.ndarray, *, task: str, abstain: bool) -> np.ndarray:
    """(n, f) call strings for probabilities (n, f) by the one decision rule (:func:`chestxr.evaluation.decide`):
    "positive"/"negative" at prob >= threshold, "not calibrated" where the threshold is NaN; task multiclass:
    the argmax class (abstain rule optional) is "positive", the rest "negative"; a NaN row (not scored) is ""
    everywhere (the store keeps no call for it)."""
    scores = np.asarray(scores, dtype=float)
    out = decide(scores, thresholds, multiclass=task == "multiclass", abstain=abstain).labels()
    out[~np.isfinite(scores).all(axis=1)] = ""
    return out


class ModelActor:
    """Ray actor: the run (loaded once from the packed bytes) scoring decoded batches."""

    def __init__(self, packed: Any, *, device: str, threads: int, abstain: bool) -> None:
        import torch

        from chestxr.modeling import resolve_amp

        if not isinstance(packed, PackedRun):  # [ObjectRef]: fetched from the object store once
            import ray

            packed = ray.get(packed[0])
        torch.set_num_threads(max(1, threads))
        self.run = load_packed(packed, device=device)
        self.model = self.run.model.to(memory_format=torch.channels_last)
        self.amp = resolve_amp("auto", self.run.device)
        self.thresholds = self.run.thresholds
        self.abstain = abstain

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from chestxr.modeling import predict

        n = len(batch["image_sha256"])
        collated = {
            "image": torch.from_numpy(np.require(batch["image"], np.float32, ["C", "W"])),  # a writable copy
            "index": torch.arange(n, dtype=torch.long),
            "ok": torch.from_numpy(np.asarray(batch["ok"], dtype=bool)),
            "reason": [str(r) for r in batch["reason"]],
            "path": [str(p) for p in batch["path"]],
        }
        preds = predict(
            self.model,
            _SkipLoader(collated),
            device=self.run.device,
            amp_dtype=self.amp,
            channels_last=True,
            total=1,
            findings=self.run.findings,
            summary=False,
        )
        f = len(self.run.findings)
        scores = np.full((n, f), np.nan)
        if len(preds.indices):
            scores[preds.indices] = self.run.scores_from_logits(preds.logits)
        reasons = np.array([""] * n, dtype=object)
        for i, r in preds.skipped:
            reasons[i] = r
        ok = np.zeros(n, dtype=bool)
        ok[preds.indices] = True
        calls = decide_calls(scores, self.thresholds, task=self.run.task, abstain=self.abstain)
        out: dict[str, np.ndarray] = {
            "image_sha256": batch["image_sha256"],
            "status": np.where(ok, STATUS_OK, STATUS_SKIPPED).astype(object),
            "reason": reasons,
        }
        for j, name in enumerate(self.run.findings):
            out[f"prob_{name}"] = scores[:, j]
        for j, name in enumerate(self.run.findings):
            out[f"call_{name}"] = calls[:, j]
        return out


# ----------------------------------------------------------------------------- the driver


def _blocks(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + rows].reset_index(drop=True) for i in range(0, len(frame), rows)] or [frame]


def job_hashes(run: Any, packed: PackedRun, *, abstain: bool) -> tuple[str, str]:
    """(model_sha256, thresholds_sha256) of the shipped files; CheckpointError when they are not the run
    the driver holds (a calibrate or train wrote to the folder after it was loaded)."""
    shipped = packed.metadata()
    weights = packed.weights_sha256
    model_sha = model_sha256(shipped, weights_sha256=weights)
    thr_sha = thresholds_sha256(shipped, abstain=abstain)
    held = model_sha256(run.metadata, weights_sha256=run.metadata.weights_sha256 or weights)
    if held != model_sha or thresholds_sha256(run.metadata, abstain=abstain) != thr_sha:
        raise CheckpointError(
            f"{run.run_dir}: the run folder changed after it was loaded (calibrate or train wrote to it); "
            "load it again and rerun"
        )
    return model_sha, thr_sha


def score_with_ray(
    run: Any,
    paths: Sequence[str],
    *,
    store_dir: str | Path,
    options: RayOptions = RayOptions(),
    cache_dir: Optional[str] = None,
    abstain: bool = False,
    on_part: Optional[Callable[[int], None]] = None,
    progress: bool = True,
) -> RayScores:
    """Score ``paths`` with ``run`` (a chestxr Run) on Ray, resuming from the store in ``store_dir``.

    on_part: called after each result part is written with the number of images this call has stored
    so far (an exception raised there stops the job like a crash; what was stored stays)."""
    from chestxr.core import Progress

    options.check()
    t_start = time.perf_counter()
    paths = [str(p) for p in paths]
    findings = list(run.findings)
    pre = run.preprocessing
    packed = pack_run(run.run_dir)
    model_sha, thr_sha = job_hashes(run, packed, abstain=abstain)
    store = ResultStore(store_dir, model_sha=model_sha, thresholds_sha=thr_sha, findings=findings)
    store.load()
    seconds: dict[str, float] = {}
    computed = 0
    with ray_session(options) as info:
        ray = import_ray()
        seconds["ray_start"] = info["seconds"]
        _check_capacity(options, info)
        t0 = time.perf_counter()
        frame = pd.DataFrame({"row": np.arange(len(paths)), "path": paths})
        hashed = ray.data.from_pandas(_blocks(frame, HASH_BLOCK)).map_batches(
            hash_batch, batch_size=None, batch_format="numpy", fn_kwargs={"preprocessing": pre}
        )
        parts = [pd.DataFrame(b) for b in hashed.iter_batches(batch_size=None, batch_format="numpy")]
        hashes = pd.concat(parts, ignore_index=True).sort_values("row") if parts else frame.assign(image_sha256="")
        shas = hashes["image_sha256"].astype(str).to_numpy()
        unreadable = {int(r): str(x) for r, x in zip(hashes["row"], hashes["reason"])}
        seconds["hash"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        todo = pd.DataFrame({"image_sha256": shas, "path": paths})
        todo = todo[(todo["image_sha256"] != "")].drop_duplicates("image_sha256")
        reused = int(store.holds(todo["image_sha256"]).sum())
        todo = todo[~store.holds(todo["image_sha256"])].reset_index(drop=True)
        if len(todo):
            packed_ref = ray.put(packed)
            device = "cuda" if options.gpus_per_actor > 0 else "cpu"
            ds = (
                ray.data.from_pandas(_blocks(todo, options.batch_size))
                .map_batches(
                    decode_batch,
                    batch_size=options.batch_size,
                    batch_format="numpy",
                    fn_kwargs={"preprocessing": pre, "cache_dir": cache_dir},
                    num_cpus=options.decode_cpus,
                    memory=options.decode_memory,
                )
                .map_batches(
                    ModelActor,
                    batch_size=options.batch_size,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=options.actors),
                    num_cpus=options.cpus_per_actor,
                    num_gpus=options.gpus_per_actor or None,
                    # nested, so the actor fetches it (Ray resolves only top-level refs, and warns that a
                    # restarted actor could miss one; the driver holds packed_ref until the job ends)
                    fn_constructor_args=([packed_ref],),
                    fn_constructor_kwargs={
                        "device": device,
                        "threads": int(options.cpus_per_actor),
                        "abstain": abstain,
                    },
                )
            )
            bar = Progress(len(todo), "ray predict", unit="image", enabled=progress)
            pending: list[pd.DataFrame] = []
            n_pending, last_flush = 0, time.perf_counter()
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    got = pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v for k, v in batch.items()})
                    pending.append(got)
                    n_pending += len(got)
                    bar.update(1, items=len(got))
                    if n_pending >= options.part_rows or time.perf_counter() - last_flush >= options.flush_seconds:
                        computed += store.append(pd.concat(pending, ignore_index=True))
                        pending, n_pending, last_flush = [], 0, time.perf_counter()
                        if on_part is not None:
                            on_part(computed)
                if pending:
                    computed += store.append(pd.concat(pending, ignore_index=True))
                    if on_part is not None:
                        on_part(computed)
            finally:
                bar.close()
        seconds["infer"] = time.perf_counter() - t0

    held = store.load()
    at = held.index.get_indexer(shas)  # -1: unreadable file (no hash)
    if ((at < 0) & (shas != "")).any():
        raise ChestXRError(f"{store.folder}: results missing after the job finished (was the store changed?)")
    n, f = len(paths), len(findings)
    scores = np.full((n, f), np.nan)
    status = np.where(at >= 0, held["status"].to_numpy(dtype=object)[np.maximum(at, 0)], STATUS_SKIPPED)
    reasons = np.where(at >= 0, held["reason"].to_numpy(dtype=object)[np.maximum(at, 0)], "")
    ok = status == STATUS_OK
    if ok.any():
        probs = held[[f"prob_{x}" for x in findings]].to_numpy(dtype=float)
        scores[ok] = probs[at[ok]]
    skipped = [
        (int(i), str(reasons[i]) if shas[i] else unreadable.get(int(i), "cannot read the file"))
        for i in np.flatnonzero(~ok)
    ]
    seconds["total"] = time.perf_counter() - t_start
    return RayScores(
        paths=paths,
        findings=findings,
        scores=scores,
        ok=ok,
        skipped=skipped,
        image_sha256=[s or None for s in shas],
        model_sha256=model_sha,
        thresholds_sha256=thr_sha,
        computed=computed,
        reused=reused,
        seconds=seconds,
    )
