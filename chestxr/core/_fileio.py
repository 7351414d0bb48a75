"""Small file helpers: atomic writes (temp file + fsync + rename), staged output folders, content hashes.

Everything chestxr writes that a user relies on (checkpoints, thresholds, reports) goes through
these, so a crash never leaves a half-written file under the final name, and an output folder is
either the complete new result or the previous one (:func:`staged_output_dir`).

Permissions: files and folders honour the process umask like any ``open()``/``mkdir()`` would
(``0o666 & ~umask`` / ``0o777 & ~umask``); only files written with ``secret=True`` (e.g. a run's salt
key) are kept ``0600``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from chestxr.core._errors import OutputExistsError, OutputWriteError


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe), else by os.umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


def make_temp_dir(parent: str | Path, *, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the umask's mode (mkdtemp itself always makes 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def write_bytes_atomic(path: str | Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    secret: keep the file 0600 whatever the umask (keys, salts); otherwise the umask decides.
    """
    write_with_atomic(path, lambda tmp: Path(tmp).write_bytes(data), secret=secret)


def write_text_atomic(path: str | Path, text: str, *, secret: bool = False) -> None:
    """Write UTF-8 text to ``path`` atomically (``secret``: see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"), secret=secret)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN written as null) atomically."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_with_atomic(path: str | Path, writer: Callable[[str], Any], *, secret: bool = False) -> None:
    """Call ``writer(tmp_path)`` then rename the temp file onto ``path`` (same filesystem).

    The file gets ``0o666 & ~umask`` (mkstemp alone would make every file 0600), or 0600 when ``secret``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if secret else 0o666 & ~current_umask())
    finally:
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


def prepare_output_dir(path: str | Path, *, overwrite: bool, marker: str | None = None) -> Path:
    """Create ``path``; refuse (OutputExistsError) if it already holds files unless ``overwrite``.

    ``marker``: if given, only a folder containing that file counts as holding results.
    """
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


def _write_error(exc: OSError, out: Path, tmp: Path | None = None) -> OutputWriteError:
    where = str(exc.filename) if exc.filename else str(out)
    if tmp is not None and where.startswith(str(tmp)):
        where = str(out) + where[len(str(tmp)) :]  # name the folder the user asked for, not the staging one
    reason = exc.strerror or type(exc).__name__
    at = "" if where == str(out) else f" at {where}"
    return OutputWriteError(
        f"{out}: cannot write the output folder ({reason}{at}); free space, fix the permissions or choose another --out"
    )


@contextmanager
def staged_output_dir(
    out: str | Path,
    *,
    overwrite: bool = False,
    marker: str | None = None,
    refuse: Callable[[Path], str | None] | None = None,
) -> Iterator[Path]:
    """Build an output folder under a temporary name and swap it in only when complete.

    Yields a fresh, empty temporary folder next to ``out`` (``.{name}.tmp-XXXX``, same filesystem).
    When the ``with`` body finishes, the temporary folder replaces ``out`` (the previous folder is
    renamed aside, then deleted), so ``out`` is always either the complete new result or the
    complete previous one: a failed or interrupted rerun never leaves a half-written report under
    the final name, and a clean rerun keeps no file of the previous result (no stale skipped.csv).

    Refuses (OutputExistsError) when ``out`` is a file, when it already holds results and not
    ``overwrite`` (``marker``: only a folder holding that file counts as results), and when ``refuse(out)``
    gives a reason (e.g. :func:`chestxr.runs.refuse_run_folder`: a run folder is never an output folder). OSError
    (disk full, permission denied, a path that cannot be created such as /proc/x) becomes one-line
    OutputWriteError naming the path. Example::

        with staged_output_dir(args.out, overwrite=args.overwrite, refuse=refuse_run_folder) as tmp:
            write_report(tmp)              # paths inside tmp; they live under args.out afterwards
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir():
        reason = refuse(out) if refuse is not None else None
        if reason:
            raise OutputExistsError(reason)
        has = (out / marker).exists() if marker else any(out.iterdir())
        if has and not overwrite:
            raise OutputExistsError(
                f"{out} already holds results; pass --overwrite to replace them or choose another --out"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(out.parent, prefix=f".{out.name}.tmp-")
    except OSError as exc:
        raise _write_error(exc, out) from None
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _write_error(exc, out, tmp) from None
        try:
            old = None
            if out.exists():
                old = make_temp_dir(out.parent, prefix=f".{out.name}.old-")
                os.replace(out, old / out.name)
            os.replace(tmp, out)
        except OSError as exc:
            if old is not None and not out.exists() and (old / out.name).exists():
                os.replace(old / out.name, out)  # put the previous result back
            raise _write_error(exc, out) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def rebase_paths(paths: dict[str, Path], staged: Path, final: Path) -> dict[str, Path]:
    """Map paths inside a staged folder (see :func:`staged_output_dir`) to where they live once swapped in."""
    return {k: final / Path(p).relative_to(staged) for k, p in paths.items()}
