"""``train --resume``: the training state in ``RUN/last/`` (without pickle) and the check that a resumed run
continues the same recipe.

Training state: ``save_training_state`` writes ``state.safetensors`` (model, optimizer and scheduler tensors,
RNG byte states) and ``state.json`` (everything else, tensors referenced by name) into a temp folder that
replaces the old one only when complete; ``load_training_state`` restores them in place. A pickle is refused;
JSON size and depth are capped (:func:`chestxr.runs.read_run_json`).

Elastic restart (``torchrun --max-restarts N``): when a worker dies, torchrun stops the others and starts every
worker again with the same command line and ``TORCHELASTIC_RESTART_COUNT`` one higher. The run folder written by
the first attempt would refuse a plain ``chestxr train --out RUN`` (it already holds results), so
:func:`elastic_plan` decides for a restarted attempt: resume from ``RUN/last/`` when the folder carries this
job's marker (``RUN/.torchelastic.json``, written by the attempt that created the folder, naming
``TORCHELASTIC_RUN_ID``; removed when training ends) and a checkpoint; start over in it when the marker is there
but no epoch finished; otherwise the usual rules (refuse without ``--overwrite`` / ``--resume``). The recipe check
applies to an elastic resume as to any other.

Recipe check: A resumed run must train the same model on the same data as the run it continues. Before resuming,
the resolved config is compared key by key with the run's ``config.yaml``, and the hashes of the
train and val rows with those recorded in ``last/state.json`` (``manifest_hashes``; older runs: the
training hash in model.json). Any difference outside :data:`MAY_CHANGE` is refused with the list of
differing keys (run value -> new value). ``data.manifest`` may point to another path when the rows
are the same (a moved file); changed rows are refused whatever the path.

Keys that may change on resume (:data:`MAY_CHANGE`): ``train.epochs`` (train to a new total; the LR
schedule restored from last/ keeps its original length), ``train.max_minutes``,
``train.early_stopping_patience``, ``train.threads``, ``train.device``, ``train.tensorboard``, ``train.cudnn_benchmark``,
``data.num_workers``, ``data.cache_dir``, ``data.manifest`` (path only, see above) and ``name``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from chestxr.core import CheckpointError, config_to_dict, make_temp_dir, write_json_atomic, write_with_atomic
from chestxr.runs._checkpoint import diff_keys, load_tensors, now_stamp, save_tensors
from chestxr.runs._folder import ELASTIC_MARKER, LAST_DIR, RunFolder, read_run_json
from chestxr.runs._metadata import FORMAT_VERSION

STATE_FILE = "state.safetensors"
STATE_META = "state.json"


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``obj``; tensors go to ``tensors`` under ``path`` and are referenced by name."""
    import numpy as np

    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise CheckpointError(f"training state: two tensors would be stored as {path!r}")
        tensors[path] = obj
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        return {
            "__dict__": [
                [_encode(k, f"{path}/k{i}", tensors), _encode(v, f"{path}/{i}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"training state: cannot store {type(obj).__name__} at {path!r} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy (global) and torch (CPU, and CUDA when available) RNG states."""
    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`capture_rng_state`.

    Other keys, and values not in capture_rng_state's form (e.g. a repr string), are left alone.
    """
    import numpy as np

    py = state.get("python")
    if isinstance(py, (tuple, list)) and len(py) == 3 and isinstance(py[1], (tuple, list)):
        random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state.get("numpy")
    if isinstance(npy, (tuple, list)) and len(npy) == 5 and npy[0] == "MT19937":
        np.random.set_state(tuple(npy))
    if isinstance(state.get("torch"), torch.Tensor):
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    cuda = state.get("cuda")
    if isinstance(cuda, (tuple, list)) and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in cuda])


#: an epoch number in last/state.json at or above this is refused (no run trains a million epochs)
MAX_EPOCHS = 1_000_000


def save_training_state(
    dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    rng: dict[str, Any],
    extra: dict[str, Any],
) -> Path:
    """Write what ``--resume`` needs into folder ``dir`` (replaced only once the new one is complete).

    rng: e.g. :func:`capture_rng_state`; extra: JSON-able values or tensors (best metric, history...).
    """
    dest = Path(dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    doc = {
        "format": "chestxr-training-state",
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "saved": now_stamp(),
        "model": _encode(model.state_dict(), "model", tensors),
        "optimizer": _encode(optimizer.state_dict(), "optimizer", tensors) if optimizer else None,
        "scheduler": _encode(scheduler.state_dict(), "scheduler", tensors) if scheduler else None,
        "rng": _encode(rng, "rng", tensors),
        "extra": _encode(extra, "extra", tensors),
    }
    tmp = make_temp_dir(dest.parent, prefix=f".{dest.name}.tmp-")
    try:
        save_tensors(tmp / STATE_FILE, tensors)
        text = json.dumps(doc, indent=1, allow_nan=True)
        write_with_atomic(tmp / STATE_META, lambda p: Path(p).write_text(text, encoding="utf-8"))
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _find_state_dir(dest: Path) -> Path:
    if (dest / STATE_META).is_file():
        return dest
    # a crash between the two renames of save_training_state leaves only the previous folder
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and (olds[-1] / STATE_META).is_file():
        return olds[-1]
    raise CheckpointError(f"{dest / STATE_META}: file not found (nothing to resume from)")


def has_training_state(dir: str | Path) -> bool:
    """Whether ``dir`` (RUN/last) holds a training state to resume from, also when a crash between the two
    renames of :func:`save_training_state` left only the previous one aside (``.last.old-PID``)."""
    try:
        _find_state_dir(Path(dir))
    except CheckpointError:
        return False
    return True


def restore_set_aside_state(dir: str | Path) -> None:
    """Put a training state that a crash between the two renames of :func:`save_training_state` left aside
    back in place as ``dir``, so every reader of RUN/last/ finds it (rank 0, before resuming)."""
    dest = Path(dir)
    if dest.exists():
        return
    src = _find_state_dir(dest)
    if src != dest:
        os.replace(src, dest)


def load_training_state(
    dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore model, optimizer and scheduler in place from :func:`save_training_state`'s folder.

    Returns {"epoch", "rng", "extra"}; with ``restore_rng`` the RNG states are also restored.
    """
    src = _find_state_dir(Path(dir))
    doc = read_run_json(src / STATE_META)
    epoch = doc.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < MAX_EPOCHS:
        raise CheckpointError(
            f"{src / STATE_META}: epoch {epoch!r} is not the number of a completed epoch (an integer 0 to "
            f"{MAX_EPOCHS - 1}); the file was edited or damaged: restore it from a backup or train a new run"
        )
    tensors = load_tensors(src / STATE_FILE)
    try:
        state = _decode(doc["model"], tensors)
        missing, unexpected = diff_keys(model.state_dict(), state)
        if missing or unexpected:
            raise CheckpointError(
                f"{src}: model state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        model.load_state_dict(state, strict=True)
        if optimizer is not None:
            if doc.get("optimizer") is None:
                raise CheckpointError(f"{src}: holds no optimizer state")
            optimizer.load_state_dict(_decode(doc["optimizer"], tensors))
        if scheduler is not None:
            if doc.get("scheduler") is None:
                raise CheckpointError(f"{src}: holds no scheduler state")
            scheduler.load_state_dict(_decode(doc["scheduler"], tensors))
        rng = _decode(doc.get("rng") or {}, tensors)
        extra = _decode(doc.get("extra") or {}, tensors)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{src}: training state does not fit this run: {exc}") from None
    if restore_rng:
        restore_rng_state(rng)
    return {"epoch": epoch, "rng": rng, "extra": extra}


MAY_CHANGE = (
    "name",
    "train.epochs",
    "train.max_minutes",
    "train.early_stopping_patience",
    "train.threads",
    "train.device",
    "train.tensorboard",
    "train.cudnn_benchmark",
    "data.num_workers",
    "data.cache_dir",
    "data.manifest",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def recipe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every dotted key whose value differs and that may not change."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k) and k not in MAY_CHANGE]


def check_resume_recipe(
    run_dir: Path,
    config: Any,
    *,
    manifest_hashes: dict[str, str],
    recorded: Optional[dict[str, str]],
    recorded_config: Optional[dict[str, Any]] = None,
) -> None:
    """CheckpointError listing what differs between the run's recipe and the resumed one.

    config: the resolved Config of the resumed run (the one it would train with); manifest_hashes: {"train": h,
    "val": h} of the rows it would train on; recorded: the hashes saved with the run (None when the run predates
    them); recorded_config: the resolved config last/state.json records, the recipe its weights were trained with
    (None for older runs): an edited config.yaml, which ``train --resume --out RUN`` loads when no --config is
    given, agrees with itself but not with it.
    """
    import yaml

    path = RunFolder(run_dir).config
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's recipe ({exc}); cannot check --resume") from None
    # compare resolved with resolved: the old file went through the same defaults when it was written
    new = config_to_dict(config)
    diffs = [f"{k} (run: {a!r}, now: {b!r})" for k, a, b in recipe_differences(old, new)]
    if recorded_config is not None:
        seen = {d.split(" ", 1)[0] for d in diffs}
        diffs += [
            f"{k} (trained with: {a!r}, now: {b!r})"
            for k, a, b in recipe_differences(recorded_config, new)
            if k not in seen
        ]
    for split, h in sorted(manifest_hashes.items()):
        if recorded and recorded.get(split) and recorded[split] != h:
            diffs.append(f"the {split} rows of data.manifest (sha256 {recorded[split][:12]}... -> {h[:12]}...)")
    if diffs:
        raise CheckpointError(
            f"{run_dir}: --resume with another recipe: {'; '.join(diffs)}. Only {', '.join(MAY_CHANGE)} may "
            "change on resume (data.manifest: the same rows at another path); undo the change, or train a new "
            "run (another --out)"
        )


def recorded_recipe(run_dir: Path) -> Optional[dict[str, Any]]:
    """The resolved config last/state.json records (the recipe its weights were trained with), or None (older
    runs, no state). Read through the run-folder JSON caps."""
    state = run_dir / LAST_DIR / STATE_META
    try:
        doc = read_run_json(state) if state.is_file() else {}
    except OSError:
        return None
    extra = doc.get("extra")
    config = extra.get("config") if isinstance(extra, dict) else None
    return config if isinstance(config, dict) else None


def recorded_hashes(run_dir: Path) -> Optional[dict[str, str]]:
    """{"train", "val"} row hashes saved in last/state.json (older runs: model.json's training hash).

    Read through the run-folder JSON caps (:func:`chestxr.runs.read_run_json`): a hostile file is a
    CheckpointError naming it; a missing one gives None."""
    try:
        state = run_dir / LAST_DIR / STATE_META
        doc = read_run_json(state) if state.is_file() else {}
        hashes = (doc.get("extra") or {}).get("manifest_hashes") if isinstance(doc.get("extra"), dict) else None
        if isinstance(hashes, dict):
            return {k: str(v) for k, v in hashes.items() if isinstance(v, str)}
        model = RunFolder(run_dir).metadata
        meta = read_run_json(model) if model.is_file() else {}
        return {"train": meta["training_manifest_hash"]} if meta.get("training_manifest_hash") else None
    except (OSError, KeyError):
        return None


# ----------------------------------------------------------------------------- elastic restarts


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
        marker = json.loads((Path(run_dir) / ELASTIC_MARKER).read_text())
    except (OSError, ValueError):
        return ElasticPlan(resume=resume, overwrite=overwrite)
    if not isinstance(marker, dict) or marker.get("run_id") != _run_id():
        return ElasticPlan(resume=resume, overwrite=overwrite)
    if has_training_state(RunFolder(run_dir).last):
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
    write_json_atomic(Path(run_dir) / ELASTIC_MARKER, {"run_id": _run_id()})


def remove_marker(run_dir: str | Path) -> None:
    """Training ended: a later job must not take the folder for its own (rank 0)."""
    try:
        (Path(run_dir) / ELASTIC_MARKER).unlink()
    except FileNotFoundError:
        pass
