"""Small file helpers: atomic writes (temp file + fsync + rename) and content hashes.

Everything chestxr writes that a user relies on (checkpoints, thresholds, reports) goes through
these, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename."""
    write_with_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN written as null) atomically."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_with_atomic(path: str | Path, writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` then rename the temp file onto ``path`` (same filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, Paths and NaN/inf (-> None) into JSON-safe values."""
    import math

    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None  # type: ignore[assignment]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if np is not None:
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist())
        if isinstance(obj, np.generic):
            obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def hash_file(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_strings(values: list[str] | tuple[str, ...], salt: str = "chestxr") -> list[str]:
    """One-way short hashes of identifiers (e.g. patient IDs), so artifacts never hold raw IDs."""
    return [hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:16] for v in values]


def prepare_output_dir(path: str | Path, *, overwrite: bool, marker: str | None = None) -> Path:
    """Create ``path``; refuse (OutputExistsError) if it already holds files unless ``overwrite``.

    ``marker``: if given, only a folder containing that file counts as holding results.
    """
    from chestxr.core.errors import OutputExistsError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a folder; choose another --out")
    if path.is_dir() and not overwrite:
        has = (path / marker).exists() if marker else any(path.iterdir())
        if has:
            raise OutputExistsError(
                f"{path} already holds results; pass --overwrite to replace them or choose another --out"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path
