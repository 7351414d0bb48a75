"""Checkpoints without pickle: safetensors weights + JSON metadata (the run folder's model files).

A run folder holds ``model.safetensors`` (weights) and ``model.json``: a
:class:`~chestxr.modeling.run_metadata.RunMetadata` (findings, mode, task, backbone, preprocessing,
label policy, thresholds, calibration, config, hashed training patients, versions, ``version``,
``history``, and the weights' sha256 so a mismatched pair is caught).
:func:`update_metadata` never overwrites silently: the previous file is kept as ``model.v{N}.json``; it
runs under the run folder's fcntl lock and writes model.json with its companion files (thresholds.json)
as one journaled transaction (:mod:`chestxr.core.locking`).

Resumable training state (``last/``) lives in :mod:`chestxr.modeling.training_state`, on the same
safe file helpers (``load_tensors`` refuses pickles, ``read_run_json`` caps size and depth). Loading
never unpickles: a pickle file is refused.

Reading is hostile-input safe: model.json and state.json over ``MAX_JSON_BYTES`` (64 MiB) or nested
deeper than ``MAX_JSON_DEPTH`` (64) are refused with a CheckpointError naming the file (never a
RecursionError or a memory blow-up).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from chestxr.core.errors import CheckpointError
from chestxr.core.fileio import hash_file, to_jsonable, write_json_atomic, write_with_atomic
from chestxr.core.locking import JOURNAL, commit_files, folder_lock, recover_transaction
from chestxr.modeling.run_metadata import FROZEN_FIELDS, RunMetadata

MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
#: cap on the size of model.json / state.json read from a run folder (a model.json of 1M hashed
#: training patients is about 20 MB); larger files are refused before they are read
MAX_JSON_BYTES = 64 * 2**20
#: cap on their nesting depth (chestxr writes fewer than 10 levels; optimizer states about 6)
MAX_JSON_DEPTH = 64
#: keys tied to the weights; update_metadata refuses to change them.
FROZEN_KEYS = FROZEN_FIELDS


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _check_not_pickle(path: Path) -> None:
    from chestxr.modeling.models import sniff_format

    kind = sniff_format(path)
    if kind == "pickle":
        raise CheckpointError(
            f"{path}: is a pickle/torch.save file, not safetensors; chestxr refuses to "
            "load it because unpickling can run arbitrary code. Re-save the weights "
            "with chestxr.modeling.checkpoint.save_model (safetensors) from a session you trust"
        )
    if kind != "safetensors":
        raise CheckpointError(f"{path}: not a safetensors file (corrupt or truncated?)")


def load_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    _check_not_pickle(path)
    try:
        return load_file(str(path), device=device)
    except Exception as exc:  # safetensors' own error types
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    write_with_atomic(path, lambda tmp: save_file(flat, tmp, metadata={"format": "pt"}))


def _read_json(path: Path) -> dict[str, Any]:
    """A run-folder JSON file (model.json, state.json), refused with a CheckpointError naming the file
    when it is over MAX_JSON_BYTES, nested deeper than MAX_JSON_DEPTH, or not a JSON object."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (is this a chestxr run folder?)")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {size:,} bytes, over the {MAX_JSON_BYTES:,}-byte cap for run-folder JSON files "
                "(chestxr.modeling.checkpoint.MAX_JSON_BYTES); it is not a chestxr file or it is corrupt"
            )
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: grew over the {MAX_JSON_BYTES:,}-byte cap while being read")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({_one_line(exc)})") from None
    except RecursionError:
        raise CheckpointError(
            f"{path}: JSON nested too deeply to read (a crafted or corrupt file); chestxr files are nested "
            f"at most {MAX_JSON_DEPTH} levels"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise CheckpointError(
            f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH); "
            "not a chestxr file (crafted or corrupt)"
        )
    return data


read_run_json = _read_json  # public name: every run-folder JSON read goes through the caps


def _json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON (iterative: never recurses, whatever the input)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name in (MODEL_FILE, META_FILE) else path


def read_metadata(run_dir: str | Path) -> RunMetadata:
    """The current ``model.json`` of a run folder (or of the folder of a model.json/.safetensors path).

    Raises CheckpointError naming the file when it is missing, not JSON, or not a valid model.json.
    """
    folder = _run_dir(run_dir)
    path = folder / META_FILE
    if (folder / JOURNAL).exists():  # a calibrate crashed mid-commit: finish it before reading
        with folder_lock(folder):
            recover_transaction(folder)
    return RunMetadata.from_json(_read_json(path), path)


def _metadata_for(model: nn.Module, metadata: RunMetadata | Mapping[str, Any]) -> RunMetadata:
    """``metadata`` as RunMetadata, with backbone/mode/in_channels/dropout taken from the model's spec."""
    spec = getattr(model, "chestxr_spec", None)
    doc = metadata.to_json() if isinstance(metadata, RunMetadata) else dict(to_jsonable(dict(metadata)))
    if "findings" not in doc:
        raise CheckpointError("save_model: metadata needs 'findings' (the list of finding names)")
    if spec is not None:
        for key in ("backbone", "mode", "in_channels", "dropout"):
            if key in doc and doc[key] != getattr(spec, key):
                raise CheckpointError(
                    f"save_model: metadata {key}={doc[key]!r} but the model has {getattr(spec, key)!r}"
                )
            doc[key] = getattr(spec, key)
        if spec.n_findings != len(doc["findings"]):
            raise CheckpointError(
                f"save_model: {len(doc['findings'])} findings but the model has {spec.n_findings} outputs"
            )
    for key in ("backbone", "mode"):
        if key not in doc:
            raise CheckpointError(f"save_model: metadata needs {key!r} for a model not built by build_model")
    return RunMetadata.from_json(doc, "save_model: metadata")


def save_model(run_dir: str | Path, model: nn.Module, metadata: RunMetadata | Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (each atomically) into ``run_dir``; returns run_dir.

    metadata: a RunMetadata, or a mapping with at least ``findings`` (hand-built models);
    backbone/mode/in_channels/dropout come from the model's ``chestxr_spec``. The save stamps
    ``versions`` (chestxr, torch), ``created`` (when unset), the weights' sha256 and the first
    ``history`` entry.
    """
    import chestxr

    run_dir = Path(run_dir)
    meta = _metadata_for(model, metadata)
    created = meta.created or now_stamp()
    meta = dataclasses.replace(
        meta,
        versions={"chestxr": chestxr.__version__, "torch": torch.__version__},
        created=created,
        history=meta.history or [{"version": meta.version, "reason": "saved", "time": created}],
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(run_dir / MODEL_FILE, model.state_dict())
    meta = dataclasses.replace(meta, weights_sha256=hash_file(run_dir / MODEL_FILE))
    write_json_atomic(run_dir / META_FILE, meta.to_json())
    return run_dir


def load_model(
    run_dir_or_file: str | Path, *, map_location: str | torch.device = "cpu", verify: bool = True
) -> tuple[nn.Module, RunMetadata]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` strictly; model in eval mode.

    verify: check the weights' sha256 against the metadata (catches a weights/metadata mix-up).
    """
    from chestxr.modeling.models import build_model

    run_dir = _run_dir(run_dir_or_file)
    meta = read_metadata(run_dir)
    weights = run_dir / MODEL_FILE
    tensors = load_tensors(weights, device=str(map_location))
    if verify and meta.weights_sha256 and hash_file(weights) != meta.weights_sha256:
        raise CheckpointError(
            f"{weights}: does not match {run_dir / META_FILE} (sha256 differs); the "
            "files come from different saves or one was modified"
        )
    try:
        model = build_model(
            meta.backbone, meta.n_findings, mode=meta.mode, in_channels=meta.in_channels, dropout=meta.dropout
        )
    except (ValueError, CheckpointError) as exc:
        raise CheckpointError(f"{run_dir / META_FILE}: cannot rebuild the model: {exc}") from None
    missing, unexpected = diff_keys(model.state_dict(), tensors)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not fit {meta.backbone} ({meta.mode}, "
            f"{meta.n_findings} findings): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: tensor shapes do not fit the model: {exc}") from None
    return model.to(map_location).eval(), meta


def diff_keys(own: dict[str, Any], other: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(own) - set(other)), sorted(set(other) - set(own))


def update_metadata(
    run_dir: str | Path,
    changes: Mapping[str, Any],
    *,
    reason: str,
    companions: Callable[[int], dict[str, Any]] | None = None,
    lock_timeout: float | None = None,
) -> RunMetadata:
    """Write a new version of ``model.json`` with ``changes`` (RunMetadata field -> new value) applied.

    The current file is first kept as ``model.v{N}.json``; ``version`` becomes N+1 and ``history``
    gains {version, reason, time, changed}. Fields tied to the weights (FROZEN_FIELDS) cannot change.

    Serialised and transactional: everything happens under the run folder's lock (RunBusyError after
    ``lock_timeout`` s, default $CHESTXR_LOCK_TIMEOUT or 60), so the version number is read under the
    lock and concurrent updates never lose one another. ``companions(new_version)`` returns other JSON
    files of the run folder ({"thresholds.json": {...}}) written in the same transaction as model.json
    (:func:`chestxr.core.locking.commit_files`): both change or neither does.
    """
    run_dir = _run_dir(run_dir)
    if not reason or not reason.strip():
        raise CheckpointError("update_metadata: give a reason (it is recorded in the history)")
    frozen = sorted(set(changes) & set(FROZEN_FIELDS))
    if frozen:
        raise CheckpointError(
            f"update_metadata: {frozen} cannot be changed (tied to the weights); train or fine-tune a new model instead"
        )
    with folder_lock(run_dir, timeout=lock_timeout):
        meta = read_metadata(run_dir)
        version = meta.version
        backup = run_dir / f"model.v{version}.json"
        current = (run_dir / META_FILE).read_bytes()
        if backup.exists() and backup.read_bytes() != current:
            raise CheckpointError(f"{backup} already exists with other content; refusing to overwrite it")
        if not backup.exists():
            write_with_atomic(backup, lambda tmp: Path(tmp).write_bytes(current))
        entry = {"version": version + 1, "reason": reason, "time": now_stamp(), "changed": sorted(changes)}
        new = meta.replace(**changes, version=version + 1, history=[*meta.history, entry])
        files = {META_FILE: new.to_json(), **(companions(version + 1) if companions else {})}
        commit_files(
            run_dir,
            {
                name: (json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n").encode()
                for name, doc in files.items()
            },
        )
    return new
