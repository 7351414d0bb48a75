"""``train(config, out_dir=...)``: the run-folder contract around the engine.

Writes, atomically: config.yaml (resolved), splits.csv (when it made the split), model.safetensors +
model.json (best epoch by validation mean AUROC), last/ (everything --resume needs: weights,
optimizer, scheduler, epoch, RNG, history; no pickle), metrics.csv (one row per epoch) and
skipped.csv (images skipped with on_bad_image=skip). Works unchanged under torchrun (DDP).

The loop is in chestxr/modeling/fitting.py (model and loaders: fit_setup.py; run-folder files: run_outputs.py;
one-vs-rest best epochs: ovr_best.py; the --resume recipe check: resume.py). ``seed_everything`` and
``build_metadata`` stay importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from chestxr.core.config import Config, write_config
from chestxr.core.errors import CheckpointError, TrainingError
from chestxr.core.fileio import prepare_output_dir
from chestxr.data.labels import load_training_splits
from chestxr.modeling._torchrun import (
    check_ranks_agree,
    decode_digest,
    elastic_plan,
    remove_marker,
    split_digest,
    write_marker,
)
from chestxr.modeling.distributed import barrier, cleanup_distributed, setup_distributed
from chestxr.modeling.engine import resolve_device
from chestxr.modeling.fitting import fit, seed_everything
from chestxr.modeling.run_outputs import build_metadata

__all__ = ["train", "seed_everything", "build_metadata"]


def train(
    config: Config,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    log: Optional[Callable[[str], None]] = None,
    stop_after_epochs: Optional[int] = None,
) -> Path:
    """Train a model as configured; returns the run folder.

    ``stop_after_epochs`` ends the process's work early (for tests of --resume), as a crash would.
    ``log`` gets one line per epoch (default :func:`chestxr.core.progress.say`: stdout, silent with --quiet).
    """
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    info = setup_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    run_dir = Path(out_dir)
    from chestxr.core.progress import say as default_log

    main_log: Callable[[str], None] = log if log is not None else default_log
    say: Callable[[str], None] = main_log if info.is_main else (lambda s: None)
    plan = elastic_plan(run_dir, resume=resume, overwrite=overwrite)  # a torchrun restart resumes
    resume, overwrite = plan.resume, plan.overwrite
    if plan.note:
        say(plan.note)
    try:
        if resume:
            if not (run_dir / "last" / "state.json").exists():
                raise CheckpointError(f"{run_dir}: nothing to resume (no last/state.json); start without --resume")
        elif info.is_main:
            prepare_output_dir(run_dir, overwrite=overwrite)
            write_marker(run_dir)
        if info.is_main:
            from chestxr.core.patient_ids import load_or_create_key

            load_or_create_key(run_dir)  # the other ranks read it after the barrier
        barrier(info)
        seed_everything(config.seed)
        splits = load_training_splits(config, run_dir=run_dir if (info.is_main and not resume) else None)
        train_set, val_set = splits["train"], splits.get("val")
        if val_set is None or len(val_set) == 0:
            raise TrainingError("no validation rows: set data.val_fraction > 0 or give a split column with 'val'")
        findings = train_set.findings
        if info.enabled:
            agreed = check_ranks_agree(
                info,
                {
                    "split": split_digest(train_set, val_set),
                    "decode": decode_digest(
                        train_set.frame["path"].astype(str).tolist(),
                        config.preprocessing,
                        cache_dir=config.data.cache_dir,
                    ),
                },
            )
            say(
                f"{info.world} ranks agree: patient split {agreed['split'][:12]}, decoded images {agreed['decode'][:12]}"
            )
        if resume:
            from chestxr.modeling.resume import check_resume_recipe, recorded_hashes

            check_resume_recipe(
                run_dir,
                config,
                manifest_hashes={"train": train_set.manifest_hash, "val": val_set.manifest_hash},
                recorded=recorded_hashes(run_dir),
            )
        if info.is_main:
            write_config(config, run_dir / "config.yaml")
        done = fit(
            config,
            run_dir=run_dir,
            train_set=train_set,
            val_set=val_set,
            findings=findings,
            device=device,
            info=info,
            resume=resume,
            say=say,
            stop_after_epochs=stop_after_epochs,
        )
        if info.is_main and stop_after_epochs is None:
            remove_marker(run_dir)
        return done
    finally:
        cleanup_distributed()
