"""``chestxr train`` under torchrun past one process: elastic restarts resume, and every rank must agree.

Elastic restart (``torchrun --max-restarts N``): when a worker dies, torchrun stops the others and starts
every worker again with the same command line and ``TORCHELASTIC_RESTART_COUNT`` one higher. The run folder
written by the first attempt would refuse a plain ``chestxr train --out RUN`` (it already holds results),
so :func:`elastic_plan` decides for a restarted attempt: resume from ``RUN/last/`` when the folder carries
this job's marker (``RUN/.torchelastic.json``, written by the attempt that created the folder, naming
``TORCHELASTIC_RUN_ID``; removed when training ends) and a checkpoint; start over in it when the marker is
there but no epoch finished; otherwise the usual rules (refuse without ``--overwrite`` / ``--resume``). The
``--resume`` recipe check applies to an elastic resume as to any other.

Agreement (:func:`check_ranks_agree`): every rank reads the manifest, makes the patient split and reads
images through its own decode cache. A rank that disagrees (another manifest version on that node, another
chestxr or decoder version, a stale cache) would train on other rows or other pixels without any error. So
before the first epoch each rank computes

- :func:`split_digest`: the train and val rows (manifest hashes: relative paths, patients, labels) and the
  training targets and mask after the label policy;
- :func:`decode_digest`: the decode-cache settings (side, read options, cache format version) and the
  bytes of the first ``k`` training images as its loader returns them (through the cache when one is set),

and all ranks compare them (``all_gather_object``); any difference is a TrainingError on every rank naming
the ranks that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from chestxr.core.errors import ImageReadError, TrainingError
from chestxr.modeling.distributed import DistInfo, all_gather_objects

MARKER = ".torchelastic.json"


@dataclass(frozen=True)
class ElasticPlan:
    """What a (re)started attempt does: ``resume`` from last/, ``overwrite`` the folder, and why (``note``)."""

    resume: bool
    overwrite: bool
    note: str = ""


def restart_count() -> int:
    """``TORCHELASTIC_RESTART_COUNT`` (0 outside torchrun or on the first attempt)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def _run_id() -> str:
    return os.environ.get("TORCHELASTIC_RUN_ID", "none")


def elastic_plan(run_dir: str | Path, *, resume: bool, overwrite: bool) -> ElasticPlan:
    """The plan for this attempt (module doc); unchanged flags on a first attempt or outside torchrun."""
    run_dir = Path(run_dir)
    count = restart_count()
    if count == 0 or resume:
        return ElasticPlan(resume=resume, overwrite=overwrite)
    try:
        marker = json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return ElasticPlan(resume=resume, overwrite=overwrite)
    if not isinstance(marker, dict) or marker.get("run_id") != _run_id():
        return ElasticPlan(resume=resume, overwrite=overwrite)
    if (run_dir / "last" / "state.json").exists():
        return ElasticPlan(
            resume=True, overwrite=False, note=f"torchrun restart {count}: resuming {run_dir} from last/"
        )
    return ElasticPlan(
        resume=False, overwrite=True, note=f"torchrun restart {count}: no epoch had finished; starting {run_dir} over"
    )


def write_marker(run_dir: str | Path) -> None:
    """Mark ``run_dir`` as this torchrun job's (rank 0, right after the folder is prepared)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    from chestxr.core.fileio import write_json_atomic

    write_json_atomic(Path(run_dir) / MARKER, {"run_id": _run_id()})


def remove_marker(run_dir: str | Path) -> None:
    """Training ended: a later job must not take the folder for its own (rank 0)."""
    try:
        (Path(run_dir) / MARKER).unlink()
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------- agreement between ranks


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def split_digest(train_set: Any, val_set: Any) -> str:
    """SHA-256 of the train/val rows (their manifest hashes) and the training targets and mask."""
    return _sha(
        train_set.manifest_hash,
        val_set.manifest_hash,
        np.ascontiguousarray(train_set.targets, dtype=np.float32).tobytes(),
        np.ascontiguousarray(train_set.mask, dtype=bool).tobytes(),
    )


def decode_digest(paths: Sequence[str], preprocessing: Any, *, cache_dir: Optional[str], k: int = 4) -> str:
    """SHA-256 of the decode settings and of the first ``k`` images of ``paths`` as the loader returns them
    (an unreadable one counts by its reason)."""
    from chestxr.imaging.cache import CACHE_VERSION, build_image_loader
    from chestxr.imaging.readers import ReadOptions

    loader = build_image_loader(preprocessing, cache_dir=cache_dir)
    settings = json.dumps(
        {
            "options": ReadOptions.from_config(preprocessing).to_dict(),
            "side": preprocessing.cache_size,
            "cache": bool(cache_dir),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    parts: list[bytes | str] = [settings]
    for path in list(paths)[:k]:
        try:
            image = np.ascontiguousarray(loader(path), dtype=np.float32)
            parts += [str(image.shape), image.tobytes()]
        except ImageReadError as exc:
            parts.append(f"unreadable: {exc.reason}")
    return _sha(*parts)


def check_ranks_agree(info: DistInfo, digests: dict[str, str]) -> dict[str, str]:
    """Compare ``digests`` ({"split": ..., "decode": ...}) over all ranks; TrainingError on every rank when
    any differs (naming which and the ranks that differ from rank 0). Returns ``digests``."""
    gathered: list[dict[str, str]] = all_gather_objects(digests, info)
    problems = []
    for name, value in gathered[0].items():
        differ = [r for r, d in enumerate(gathered) if d.get(name) != value]
        if differ:
            what = {"split": "patient split", "decode": "decoded images (decode cache)"}.get(name, name)
            problems.append(f"the {what} of rank(s) {differ} differs from rank 0's")
    if problems:
        raise TrainingError(
            "; ".join(problems) + ": every node must see the same manifest, preprocessing, chestxr and decoder "
            "versions (and an up-to-date data.cache_dir)"
        )
    return digests
