"""Serialised, transactional writes to a folder (a run folder): an fcntl lock and a journaled commit.

:func:`folder_lock` takes an exclusive ``fcntl.flock`` on ``FOLDER/.lock``; a second chestxr command
(another process or thread) waits up to ``timeout`` seconds (default ``$CHESTXR_LOCK_TIMEOUT`` or 60)
and then fails with :class:`~chestxr.core.RunBusyError` ("run folder is busy"). The lock is
re-entrant within one thread, so a locked workflow can call locked helpers.

:func:`commit_files` writes several files as one transaction: each new content goes to a temp file
(fsynced), then a journal ``.transaction.json`` naming the renames is written atomically (the commit
point), then the renames happen and the journal is removed. A crash before the journal leaves the old
files; a crash after it is rolled forward by :func:`recover_transaction` (called by every reader of
the folder's metadata), so readers never see thresholds.json and model.json from different versions.
Call it under :func:`folder_lock`.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from chestxr.core._errors import CheckpointError, RunBusyError
from chestxr.core._fileio import current_umask

LOCK_FILE = ".lock"
JOURNAL = ".transaction.json"
DEFAULT_TIMEOUT_S = 60.0

_held = threading.local()


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    try:
        return float(os.environ.get("CHESTXR_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


@contextmanager
def folder_lock(folder: str | Path, *, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (re-entrant per thread); RunBusyError after ``timeout`` s."""
    folder = Path(folder)
    key = str(folder.resolve())
    held: dict[str, int] = getattr(_held, "paths", None) or {}
    _held.paths = held
    if held.get(key):
        held[key] += 1
        try:
            yield folder
        finally:
            held[key] -= 1
        return
    wait = _timeout(timeout)
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise CheckpointError(f"{folder / LOCK_FILE}: cannot open the run folder's lock ({exc.strerror})") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunBusyError(
                        f"{folder}: run folder is busy (another chestxr command holds {LOCK_FILE}; waited "
                        f"{wait:g} s); wait for it to finish and retry, or raise CHESTXR_LOCK_TIMEOUT"
                    ) from None
                time.sleep(0.05)
        held[key] = 1
        try:
            yield folder
        finally:
            held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_files(folder: str | Path, files: Mapping[str, bytes]) -> None:
    """Replace ``folder/name`` by ``files[name]`` for every name, all or none (see the module doc)."""
    folder = Path(folder)
    recover_transaction(folder)
    mode = 0o666 & ~current_umask()
    staged: list[tuple[str, str]] = []
    try:
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"commit_files: {name!r} must be a plain file name")
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".txn", dir=folder)
            staged.append((Path(tmp).name, name))
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        journal = json.dumps({"renames": staged}).encode()
        fd, tmp = tempfile.mkstemp(prefix=f"{JOURNAL}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(journal)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / JOURNAL)  # the commit point
    except BaseException:
        for tmp_name, _ in staged:
            try:
                os.unlink(folder / tmp_name)
            except FileNotFoundError:
                pass
        raise
    _fsync_dir(folder)
    recover_transaction(folder)


def recover_transaction(folder: str | Path) -> bool:
    """Finish a committed transaction (rename what its journal names); True if there was one."""
    folder = Path(folder)
    journal = folder / JOURNAL
    if not journal.exists():
        return False
    try:
        renames = json.loads(journal.read_text())["renames"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{journal}: unreadable transaction journal ({exc}); remove it after checking "
            "model.json and thresholds.json agree"
        ) from None
    for tmp_name, name in renames:
        if (folder / tmp_name).exists():
            os.replace(folder / tmp_name, folder / name)
    _fsync_dir(folder)
    journal.unlink()
    return True
