"""``train(config, out_dir=...)``: the run-folder contract around the training loop; returns the :class:`Run`.

Writes, atomically: config.yaml (resolved), splits.csv (when chestxr made or completed the split),
model.safetensors + model.json (best epoch by validation mean AUROC), last/ (everything --resume needs:
weights, optimizer, scheduler, epoch, RNG, history; no pickle), metrics.csv (one row per epoch) and skipped.csv
(images skipped with on_bad_image=skip), and the training patients as keyed hashes (patient_hash.key). Works
unchanged under torchrun (DDP): every process trains, the first writes.

The loop itself is :func:`chestxr.modeling.fit`; :class:`RunRecorder` is what it reports to.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from chestxr.core import (
    CheckpointError,
    Config,
    TrainingError,
    config_to_dict,
    escape_row,
    prepare_output_dir,
    say,
    write_config,
    write_text_atomic,
)
from chestxr.data import LabeledSet, load_training_splits, write_manifest
from chestxr.modeling import (
    FitOptions,
    InitialWeights,
    Resumed,
    barrier,
    check_ranks_agree,
    cleanup_distributed,
    decode_digest,
    fit,
    resolve_device,
    seed_everything,
    setup_distributed,
    split_digest,
)
from chestxr.runs._checkpoint import load_model, save_model
from chestxr.runs._folder import RunFolder
from chestxr.runs._metadata import RunMetadata
from chestxr.runs._output_guard import guard_output, protected_inputs
from chestxr.runs._patients import load_or_create_key, training_patient_record
from chestxr.runs._resume import (
    capture_rng_state,
    check_resume_recipe,
    elastic_plan,
    has_training_state,
    load_training_state,
    recorded_hashes,
    recorded_recipe,
    remove_marker,
    restore_set_aside_state,
    save_training_state,
    write_marker,
)
from chestxr.runs._run import Run


def train(
    config: Config,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
    stop_after_epochs: Optional[int] = None,
) -> Run:
    """Train a model as configured into the run folder ``out_dir``; returns it loaded as a :class:`Run`.

    ``resume``: continue an interrupted run (the same recipe only, see chestxr/runs/_resume.py);
    ``overwrite``: replace a folder that holds results. ``log`` gets one line per epoch (default
    :func:`chestxr.core.say`: stdout, silent with --quiet). ``stop_after_epochs`` ends the process's work early
    (for tests of --resume), as a crash would.
    """
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    dist = setup_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    folder = RunFolder(out_dir)
    log = log or say
    quiet_rank = log if dist.is_main else (lambda s: None)
    plan = elastic_plan(folder.path, resume=resume, overwrite=overwrite)  # a torchrun restart resumes
    resume, overwrite = plan.resume, plan.overwrite
    if plan.note:
        quiet_rank(plan.note)
    try:
        if dist.is_main:  # never into another run, over a run (even with --overwrite) or over what it reads
            d, m = config.data, config.model
            weights = m.weights if m.weights and ("/" in m.weights or Path(m.weights).exists()) else None
            guard_output(
                folder.path,
                protected_inputs(
                    manifests=[d.manifest, d.val_manifest, d.test_manifest], inputs=[m.init_from, weights]
                ),
                own_run=folder.path if (resume or plan.note) else None,  # --resume, or this torchrun job's restart
            )
        if resume:
            if not has_training_state(folder.last):
                raise CheckpointError(f"{folder.path}: nothing to resume (no last/state.json); start without --resume")
            if dist.is_main:  # killed between the two renames of the last save: last/ is back before the barrier
                restore_set_aside_state(folder.last)
        elif dist.is_main:
            prepare_output_dir(folder.path, overwrite=overwrite)
            write_marker(folder.path)
        if dist.is_main:
            load_or_create_key(folder.path)  # the other ranks read it after the barrier
        barrier(dist, "the run folder set-up")
        seed_everything(config.seed, cudnn_benchmark=config.train.cudnn_benchmark)
        splits = load_training_splits(config)
        if dist.is_main and not resume and splits.made is not None:
            write_manifest(splits.made, folder.splits)  # calibrate/evaluate can use the same split
        train_set, val_set = splits["train"], splits.get("val")
        if val_set is None or len(val_set) == 0:
            raise TrainingError("no validation rows: set data.val_fraction > 0 or give a split column with 'val'")
        if dist.enabled:  # every rank must train on the same rows and pixels
            agreed = check_ranks_agree(
                dist,
                {
                    "split": split_digest(train_set, val_set),
                    "decode": decode_digest(
                        train_set.frame["path"].astype(str).tolist(),
                        config.preprocessing,
                        cache_dir=config.data.cache_dir,
                    ),
                },
            )
            quiet_rank(
                f"{dist.world} ranks agree: patient split {agreed['split'][:12]}, decoded images {agreed['decode'][:12]}"
            )
        hashes = {"train": train_set.manifest_hash, "val": val_set.manifest_hash}
        if resume:
            check_resume_recipe(
                folder.path,
                config,
                manifest_hashes=hashes,
                recorded=recorded_hashes(folder.path),
                recorded_config=recorded_recipe(folder.path),
            )
        if dist.is_main:
            write_config(config, folder.config)
        init_from = None
        if config.model.init_from:
            source = config.model.init_from

            def load_source() -> tuple[nn.Module, list[str]]:
                model, meta = load_model(source)
                return model, meta.findings

            init_from = InitialWeights(str(source), load_source)
        recorder = RunRecorder(folder, build_metadata(config, train_set, folder.path), train_set, val_set, hashes)
        options = FitOptions(
            device=device,
            dist=dist,
            resume=resume,
            init_from=init_from,
            log=quiet_rank,
            stop_after_epochs=stop_after_epochs,
            tensorboard_dir=folder.tensorboard,
        )
        result = fit(config, train_set, val_set, recorder, options)
        if result.skipped:
            quiet_rank(f"{len(result.skipped)} image(s) skipped as unreadable; see {folder.skipped}")
        if dist.is_main and stop_after_epochs is None:
            remove_marker(folder.path)
        barrier(dist, "the end of training")
    finally:
        cleanup_distributed()
    return Run.load(folder.path, device=str(device))


def build_metadata(config: Config, train_set: LabeledSet, run_dir: Optional[Path] = None) -> RunMetadata:
    """The self-description stored in model.json (everything predict needs).

    Training patients are stored as keyed hashes (HMAC-SHA256 under the run's secret key in
    ``run_dir/patient_hash.key``, see chestxr/runs/_patients.py); without ``run_dir`` none are stored.
    """
    findings = train_set.findings
    patients = training_patient_record(run_dir, train_set.patient_ids.tolist()) if run_dir is not None else None
    n = len(findings)
    return RunMetadata(
        findings=list(findings),
        mode=config.model.mode,
        task="binary" if n == 1 and config.model.task != "multiclass" else config.model.task,
        backbone=config.model.backbone,
        in_channels=config.preprocessing.channels,
        dropout=config.model.dropout,
        preprocessing=config.preprocessing,
        label_policy=config.labels,
        config=config_to_dict(config),
        training_patients_sha=list(patients.hashes) if patients else [],
        patient_hash=patients.scheme if patients else None,
        training_manifest_hash=train_set.manifest_hash,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


class RunRecorder:
    """What the training loop reports, kept in the run folder (:class:`chestxr.modeling.Recorder`):
    best weights -> model.safetensors + model.json, after each epoch last/ + metrics.csv + skipped.csv."""

    def __init__(
        self,
        folder: RunFolder,
        metadata: RunMetadata,
        train_set: LabeledSet,
        val_set: LabeledSet,
        manifest_hashes: dict[str, str],
    ) -> None:
        self.folder, self.metadata = folder, metadata
        self.sets = {"train": train_set, "val": val_set}
        self.manifest_hashes = manifest_hashes

    def resume(self, model: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
        state = load_training_state(self.folder.last, model=model, optimizer=optimizer, scheduler=scheduler)
        extra = state.get("extra", {})
        history = extra.get("history", [])
        if not isinstance(history, list) or len(history) != int(state["epoch"]) + 1:
            raise CheckpointError(
                f"{self.folder.last / 'state.json'}: epoch {state['epoch']} does not match the "
                f"{len(history) if isinstance(history, list) else 'unreadable'} epoch(s) its history records; the "
                "file was edited or damaged: restore it from a backup or train a new run"
            )
        return Resumed(
            epoch=int(state["epoch"]),
            history=list(extra.get("history", [])),
            best=dict(extra.get("best") or {}),
            ema=extra.get("ema"),
            source=str(self.folder.path),
        )

    def best_weights(self) -> Optional[dict[str, torch.Tensor]]:
        if not self.folder.weights.exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(self.folder.weights))

    def save_best(
        self, model: nn.Module, *, epoch: int, val_mean_auroc: Optional[float], per_member: Optional[list]
    ) -> None:
        import dataclasses

        if per_member is not None:
            meta = dataclasses.replace(self.metadata, best_epoch=epoch, best_val_auroc_per_finding=per_member)
        else:
            meta = dataclasses.replace(self.metadata, best_epoch=epoch, best_val_mean_auroc=val_mean_auroc)
        save_model(self.folder.path, model, meta)

    def end_epoch(
        self,
        epoch: int,
        *,
        model: nn.Module,
        optimizer: Any,
        scheduler: Any,
        history: list[dict[str, Any]],
        best: dict[str, Any],
        ema: Optional[dict[str, torch.Tensor]],
        skipped: dict[tuple[str, int], str],
    ) -> None:
        extra: dict[str, Any] = {
            "history": history,
            "best": best,
            "manifest_hashes": dict(self.manifest_hashes),
            "config": self.metadata.config,  # the recipe these weights were trained with (--resume checks it)
        }
        if ema is not None:
            extra["ema"] = ema
        save_training_state(
            self.folder.last,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epoch=epoch,
            rng=capture_rng_state(),
            extra=extra,
        )
        write_metrics_csv(self.folder.metrics, history)
        write_skipped(self.folder.path, self.sets["train"], self.sets["val"], skipped)

    def finish(self, model: nn.Module) -> None:
        if not self.folder.weights.exists():
            save_model(self.folder.path, model, self.metadata)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv: one row per epoch (every key of any row is a column), cells escaped against formulas."""
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(keys))
    for row in history:
        w.writerow(escape_row(row.get(k, "") for k in keys))
    write_text_atomic(path, buf.getvalue())


def write_skipped(
    run_dir: Path, train_set: LabeledSet, val_set: LabeledSet, skipped: dict[tuple[str, int], str]
) -> None:
    """skipped.csv: split, path, reason of every image training skipped (nothing when none was)."""
    if not skipped:
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(escape_row(["split", "path", "reason"]))
    for (split, i), r in sorted(skipped.items()):
        w.writerow(escape_row([split, (train_set if split == "train" else val_set).paths[i], r]))
    write_text_atomic(RunFolder(run_dir).skipped, buf.getvalue())
