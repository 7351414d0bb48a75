"""Resumable training state without pickle: what ``chestxr train --resume`` needs, in ``RUN/last/``.

``save_training_state`` writes ``state.safetensors`` (model, optimizer and scheduler tensors, RNG byte
states) and ``state.json`` (everything else, tensors referenced by name) into a temp folder that
replaces the old one only when complete; ``load_training_state`` restores them in place. The files go
through :mod:`chestxr.modeling.checkpoint`'s safe helpers: a pickle is refused, JSON size and depth are
capped.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chestxr.core.errors import CheckpointError
from chestxr.core.fileio import make_temp_dir, write_with_atomic
from chestxr.modeling.checkpoint import diff_keys, load_tensors, now_stamp, read_run_json, save_tensors
from chestxr.modeling.run_metadata import FORMAT_VERSION

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
    return {"epoch": int(doc["epoch"]), "rng": rng, "extra": extra}
