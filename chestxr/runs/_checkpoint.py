"""The model files of a run folder, without pickle: ``model.safetensors`` (weights) + ``model.json``
(:class:`~chestxr.runs.RunMetadata`, with the weights' sha256 so a mismatched pair is caught).

:func:`save_model` writes both atomically; :func:`load_model` rebuilds the model from model.json and loads the
weights strictly (a pickle file is refused: loading never unpickles); :func:`read_metadata` parses model.json
(finishing a two-file commit a crash interrupted); :func:`update_metadata` writes a new version of model.json
and never overwrites silently: the previous file is kept as ``model.v{N}.json``; it runs under the run folder's
fcntl lock and writes model.json with its companion files (thresholds.json) as one journaled transaction
(:mod:`chestxr.core`'s folder lock). Every JSON read goes through the run-folder caps
(:func:`chestxr.runs.read_run_json`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from chestxr.core import (
    JOURNAL,
    CheckpointError,
    commit_files,
    folder_lock,
    hash_file,
    recover_transaction,
    to_jsonable,
    write_json_atomic,
    write_with_atomic,
)
from chestxr.runs._folder import RunFolder, read_run_json
from chestxr.runs._metadata import FROZEN_FIELDS, HistoryEntry, RunMetadata

if TYPE_CHECKING:  # torch is imported where a model or tensors are handled: reading model.json stays light
    import torch
    from torch import nn


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _check_not_pickle(path: Path) -> None:
    from chestxr.modeling import sniff_format

    kind = sniff_format(path)
    if kind == "pickle":
        raise CheckpointError(
            f"{path}: is a pickle/torch.save file, not safetensors; chestxr refuses to "
            "load it because unpickling can run arbitrary code. Re-save the weights "
            "with chestxr.runs.save_model (safetensors) from a session you trust"
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


def read_metadata(run_dir: str | Path) -> RunMetadata:
    """The current ``model.json`` of a run folder (or of the folder of a model.json/.safetensors path).

    Raises CheckpointError naming the file when it is missing, not JSON, or not a valid model.json.
    """
    folder = RunFolder(run_dir)
    if (folder.path / JOURNAL).exists():  # a calibrate crashed mid-commit: finish it before reading
        with folder_lock(folder.path):
            recover_transaction(folder.path)
    return RunMetadata.from_json(read_run_json(folder.metadata), folder.metadata)


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
    import torch

    import chestxr

    run_dir = Path(run_dir)
    meta = _metadata_for(model, metadata)
    created = meta.created or now_stamp()
    meta = dataclasses.replace(
        meta,
        versions={"chestxr": chestxr.__version__, "torch": torch.__version__},
        created=created,
        history=meta.history or [HistoryEntry(meta.version, "saved", created)],
    )
    folder = RunFolder(run_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    save_tensors(folder.weights, model.state_dict())
    meta = dataclasses.replace(meta, weights_sha256=hash_file(folder.weights))
    write_json_atomic(folder.metadata, meta.to_json())
    return run_dir


def load_model(
    run_dir_or_file: str | Path, *, map_location: str | torch.device = "cpu", verify: bool = True
) -> tuple[nn.Module, RunMetadata]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` strictly; model in eval mode.

    verify: check the weights' sha256 against the metadata (catches a weights/metadata mix-up).
    """
    from chestxr.modeling import build_model

    folder = RunFolder(run_dir_or_file)
    meta = read_metadata(folder.path)
    weights = folder.weights
    tensors = load_tensors(weights, device=str(map_location))
    if verify and meta.weights_sha256 and hash_file(weights) != meta.weights_sha256:
        raise CheckpointError(
            f"{weights}: does not match {folder.metadata} (sha256 differs); the "
            "files come from different saves or one was modified"
        )
    try:
        model = build_model(
            meta.backbone, meta.n_findings, mode=meta.mode, in_channels=meta.in_channels, dropout=meta.dropout
        )
    except (ValueError, CheckpointError) as exc:
        raise CheckpointError(f"{folder.metadata}: cannot rebuild the model: {exc}") from None
    missing, unexpected = diff_keys(model.state_dict(), tensors)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not fit {meta.backbone} ({meta.mode}, "
            f"{meta.n_findings} findings): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    own = model.state_dict()
    wrong = [k for k in own if tuple(own[k].shape) != tuple(tensors[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{weights}: tensor shapes do not fit the model model.json describes ({meta.backbone}, in_channels "
            f"{meta.in_channels}, {meta.n_findings} findings): {k} is {list(tensors[k].shape)} in the file, "
            f"{list(own[k].shape)} in the model ({len(wrong)} tensor(s) differ); model.json was edited or belongs "
            "to other weights"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{weights}: tensor shapes do not fit the model: {first}") from None
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
    files of the run folder ({"thresholds.json": {...}}; bytes are written as they are, e.g. the reference
    profile's canonical JSON) written in the same transaction as model.json
    (:func:`chestxr.core.commit_files`): both change or neither does.
    """
    run_dir = RunFolder(run_dir).path
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
        folder = RunFolder(run_dir)
        backup = folder.metadata_version(version)
        current = folder.metadata.read_bytes()
        if backup.exists() and backup.read_bytes() != current:
            raise CheckpointError(f"{backup} already exists with other content; refusing to overwrite it")
        if not backup.exists():
            write_with_atomic(backup, lambda tmp: Path(tmp).write_bytes(current))
        entry = HistoryEntry(version + 1, reason, now_stamp(), sorted(changes))
        new = meta.replace(**changes, version=version + 1, history=[*meta.history, entry])
        files = {folder.metadata.name: new.to_json(), **(companions(version + 1) if companions else {})}
        commit_files(
            run_dir,
            {
                name: doc
                if isinstance(doc, bytes)
                else (json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n").encode()
                for name, doc in files.items()
            },
        )
    return new
