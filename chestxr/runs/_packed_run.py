"""A run folder as bytes, to ship a :class:`~chestxr.runs.Run` to Ray actors or Spark executors.

A cluster's workers rarely see the driver's disk. ``pack_run(run_dir)`` reads the two files a Run needs
(model.json and model.safetensors; never the training-patient key ``patient_hash.key``, thresholds.json or
last/) into a :class:`PackedRun`; ship it however the engine ships data (``ray.put``, a Spark broadcast)
and call :func:`load_packed` on the worker: it writes the files into a private temporary folder (removed
when the process exits), checks the weights' sha256 against model.json (as :meth:`Run.load` always does)
and loads them once per process (a second call with the same pack returns the cached Run, so a Spark
pandas UDF called per batch loads the model once per executor)::

    packed = pack_run("runs/nih")                  # driver: ~ the size of model.safetensors
    run = load_packed(packed, device="cpu")        # worker: a chestxr.Run, no CLI, no shared disk

Nothing is unpickled: the pack is two byte strings (JSON and safetensors).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from chestxr.core import CheckpointError

#: the files of a run folder that :meth:`Run.load` reads (and nothing else: not the patient-hash key)
PACKED_FILES = ("model.json", "model.safetensors")
_LOADED: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PackedRun:
    """The bytes of a run's model.json and model.safetensors; ``sha256`` identifies the pair."""

    files: tuple[tuple[str, bytes], ...]
    sha256: str
    source: str

    @property
    def nbytes(self) -> int:
        return sum(len(b) for _, b in self.files)

    def file(self, name: str) -> bytes:
        return dict(self.files)[name]

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the packed model.safetensors."""
        return hashlib.sha256(self.file("model.safetensors")).hexdigest()

    def metadata(self):
        """The packed model.json as a :class:`~chestxr.runs.RunMetadata` (validated)."""
        import json

        from chestxr.runs._metadata import RunMetadata

        where = f"{self.source}/model.json"
        try:
            doc = json.loads(self.file("model.json"))
        except ValueError as exc:
            raise CheckpointError(f"{where}: not JSON ({exc})") from None
        return RunMetadata.from_json(doc, where)


def pack_run(run_dir: str | Path) -> PackedRun:
    """Read ``run_dir``'s model files into a PackedRun; CheckpointError naming a missing file."""
    run_dir = Path(run_dir)
    files = []
    digest = hashlib.sha256()
    for name in PACKED_FILES:
        path = run_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; pass the run folder `chestxr train` wrote") from None
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        files.append((name, data))
    return PackedRun(files=tuple(files), sha256=digest.hexdigest(), source=str(run_dir))


def load_packed(packed: PackedRun, *, device: str = "auto"):
    """The :class:`~chestxr.runs.Run` of ``packed``, loaded once per process and device."""
    from chestxr.runs._run import Run

    key = (packed.sha256, device)
    with _LOCK:
        cached = _LOADED.get(key)
        if cached is not None:
            return cached
        folder = Path(tempfile.mkdtemp(prefix=f"chestxr-run-{packed.sha256[:12]}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for name, data in packed.files:
            if name not in PACKED_FILES:
                raise CheckpointError(f"packed run from {packed.source}: unexpected file {name!r}")
            (folder / name).write_bytes(data)
        run = Run.load(folder, device=device)
        _LOADED[key] = run
        return run
