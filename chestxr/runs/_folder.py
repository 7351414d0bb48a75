"""The run folder: the names of its files, how it is recognised, and the capped JSON reader every
run-folder JSON file goes through. Everything a run folder holds is read and written by this floor
(chestxr/runs/), each file by one module:

    RUN/
      config.yaml          the resolved config                          _train.py (written once)
      splits.csv           the split chestxr made or completed          _train.py
      model.safetensors    best weights                                 _checkpoint.py
      model.json           RunMetadata (typed, _metadata.py)            _checkpoint.py (new versions: update_metadata)
      model.vN.json        earlier model.json versions                  _checkpoint.py
      thresholds.json      the last calibration (CalibrationResult)     _calibrate.py, committed with model.json
      patient_hash.key     the run's key: training-patient hashes, the approval HMAC, the monitor's hashes   _patients.py
      last/                what --resume needs                          _resume.py
      metrics.csv          one row per epoch                            _train.py
      skipped.csv          images skipped while training                _train.py
      tb/                  TensorBoard event files (train.tensorboard)  chestxr.modeling's training loop
      reference_profile.json   the calibration images as the monitor sees them (ReferenceProfile)   _calibrate.py,
                           committed with model.json and thresholds.json; bound by an approval
      .lock, .transaction.json   the folder lock and the journal of a two-file commit (chestxr.core)
      .torchelastic.json   the torchrun job writing the folder (elastic restarts resume it)   _resume.py

Reading is hostile-input safe: a run-folder JSON file over :data:`MAX_JSON_BYTES` (64 MiB) or nested deeper
than :data:`MAX_JSON_DEPTH` (64) is refused with a CheckpointError naming it, never a RecursionError or a
memory blow-up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chestxr.core import CheckpointError

MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.csv"
THRESHOLDS_FILE = "thresholds.json"
KEY_FILE = "patient_hash.key"
LAST_DIR = "last"
METRICS_FILE = "metrics.csv"
SKIPPED_FILE = "skipped.csv"
TENSORBOARD_DIR = "tb"
#: Reserved for issue 23 (monitoring): the reference profile ``calibrate`` will write beside thresholds.json
#: (in the same transaction) and an approval will bind (:data:`chestxr.runs.BOUND_PARTS`). Not written yet.
REFERENCE_PROFILE_FILE = "reference_profile.json"
#: the torchrun job that is writing the folder (removed when training ends; see chestxr/runs/_resume.py)
ELASTIC_MARKER = ".torchelastic.json"
#: files whose presence marks a run folder (never used as an output folder of evaluate/predict)
RUN_FOLDER_MARKERS = (META_FILE, MODEL_FILE)
#: cap on the size of model.json / state.json read from a run folder (a model.json of 1M hashed
#: training patients is about 20 MB); larger files are refused before they are read
MAX_JSON_BYTES = 64 * 2**20
#: cap on their nesting depth (chestxr writes fewer than 10 levels; optimizer states about 6)
MAX_JSON_DEPTH = 64


@dataclass(frozen=True, init=False)
class RunFolder:
    """The paths of a run folder's files (see the module docstring). ``RunFolder(path)`` also accepts the
    path of its model.json or model.safetensors. Plain attributes: ``weights`` (model.safetensors),
    ``metadata`` (model.json), ``config``, ``splits``, ``thresholds``, ``patient_key``, ``last``, ``metrics``,
    ``skipped``, ``tensorboard`` and ``reference_profile``."""

    path: Path
    weights: Path
    metadata: Path
    config: Path
    splits: Path
    thresholds: Path
    patient_key: Path
    last: Path
    metrics: Path
    skipped: Path
    tensorboard: Path
    reference_profile: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        path = path.parent if path.name in (MODEL_FILE, META_FILE) else path
        names = {
            "path": "",
            "weights": MODEL_FILE,
            "metadata": META_FILE,
            "config": CONFIG_FILE,
            "splits": SPLITS_FILE,
            "thresholds": THRESHOLDS_FILE,
            "patient_key": KEY_FILE,
            "last": LAST_DIR,
            "metrics": METRICS_FILE,
            "skipped": SKIPPED_FILE,
            "tensorboard": TENSORBOARD_DIR,
            "reference_profile": REFERENCE_PROFILE_FILE,
        }
        for attr, name in names.items():
            object.__setattr__(self, attr, path / name if name else path)

    def __fspath__(self) -> str:
        return str(self.path)

    def metadata_version(self, version: int) -> Path:
        """model.v{version}.json: model.json as it was at ``version``."""
        return self.path / f"model.v{version}.json"


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` holds a chestxr run (model.json or model.safetensors)."""
    path = Path(path)
    return any((path / name).exists() for name in RUN_FOLDER_MARKERS)


def read_run_json(path: Path) -> dict[str, Any]:
    """A run-folder JSON file (model.json, state.json, thresholds.json), refused with a CheckpointError naming
    the file when it is missing, over MAX_JSON_BYTES, nested deeper than MAX_JSON_DEPTH, or not a JSON object."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (is this a chestxr run folder?)")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {size:,} bytes, over the {MAX_JSON_BYTES:,}-byte cap for run-folder JSON files "
                "(chestxr.runs.MAX_JSON_BYTES); it is not a chestxr file or it is corrupt"
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
