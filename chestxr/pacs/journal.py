"""The listener's on-disk journal: every received instance is durable before it is acknowledged, and each
study is processed exactly once, across crashes and restarts.

Layout under ``<out>/journal`` (names are keys, never identifiers; the ``.dcm`` files are the received
instances, identifiers and all, as a PACS holds them)::

    <study key>/incoming/<instance key>.dcm    written atomically (temp + fsync + rename) before the C-STORE
                                               response: an instance acknowledged is an instance on disk
    <study key>/round-<n>/<instance key>.dcm   a batch claimed for processing (one atomic directory rename)
    <study key>/state.json                     {"next_round": n, "done": [1, ...], "pushed": [...], "claimed": [instance keys]}

A study is processed in rounds: when it has been quiet for the study timeout, ``incoming`` is renamed to
``round-<n>`` (instances arriving later start round n+1: a late image is never lost, never merged into a
result already sent). A round's results folder appears in one rename; then its SR is pushed (the SR's UID
is derived from its content, so a repeated push files it once); then the round is marked done and its
instances deleted. Whatever the crash point, a restart finds each round either unprocessed (process it),
processed but not pushed (push it), or done (clean up): no round is lost and none is processed twice.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

from chestxr.core.fileio import write_bytes_atomic, write_json_atomic
from chestxr.pacs.staging import Keyer, dataset_bytes

INCOMING = "incoming"


class Journal:
    """Thread-safe journal of received studies under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.keyer = Keyer.persistent(self.root)

    # ------------------------------------------------------------------ receiving

    def add(self, ds: Any) -> tuple[str, bool]:
        """Journal one instance durably; returns (study key, False if it was already received: a resend
        of an instance already claimed for processing is acknowledged and not processed again)."""
        key = self.keyer.study(ds)
        name = self.keyer.instance(str(ds.SOPInstanceUID))
        with self._lock:
            target = self.root / key / INCOMING / f"{name}.dcm"
            if name in self.state(key).get("claimed", []):
                return key, False
            existed = target.exists()
            write_bytes_atomic(target, dataset_bytes(ds))
            _fsync_dir(target.parent)
        return key, not existed

    # ------------------------------------------------------------------ state

    def state(self, key: str) -> dict[str, Any]:
        path = self.root / key / "state.json"
        if not path.exists():
            return {"next_round": 1, "done": [], "pushed": []}
        return json.loads(path.read_text())

    def _save(self, key: str, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / key / "state.json", state)

    def studies(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("study-"))

    def incoming(self, key: str) -> list[Path]:
        return sorted((self.root / key / INCOMING).glob("*.dcm"))

    def quiet_for(self, key: str, now: Optional[float] = None, *, since: float = 0.0) -> float:
        """Seconds since the study's last instance arrived, counted from ``since`` at the earliest (the
        listener's start: while it was down the sender could not send, so that silence proves nothing);
        inf when nothing is incoming."""
        files = self.incoming(key)
        if not files:
            return float("inf")
        return (now or time.time()) - max([since, *(f.stat().st_mtime for f in files)])

    def open_rounds(self, key: str) -> list[int]:
        """Rounds claimed but not done (a crash or a failed push left them), oldest first."""
        done = set(self.state(key)["done"])
        rounds = [int(p.name.split("-", 1)[1]) for p in (self.root / key).glob("round-*") if p.is_dir()]
        for n in rounds:
            if n in done:  # marked done, not yet cleaned up
                shutil.rmtree(self.round_dir(key, n), ignore_errors=True)
        return sorted(n for n in rounds if n not in done)

    def round_dir(self, key: str, n: int) -> Path:
        return self.root / key / f"round-{n}"

    def claim(self, key: str) -> Optional[int]:
        """Turn the study's incoming instances into the next round (one directory rename); None if none."""
        with self._lock:
            if not self.incoming(key):
                return None
            state = self.state(key)
            n = int(state["next_round"])
            state["claimed"] = sorted(set(state.get("claimed", [])) | {p.stem for p in self.incoming(key)})
            state["next_round"] = n + 1
            self._save(key, state)  # first: a crash before the rename only skips a round number
            os.rename(self.root / key / INCOMING, self.round_dir(key, n))
            _fsync_dir(self.root / key)
            return n

    def mark_pushed(self, key: str, n: int) -> None:
        with self._lock:
            state = self.state(key)
            state["pushed"] = sorted(set(state.get("pushed", [])) | {n})
            self._save(key, state)

    def is_pushed(self, key: str, n: int) -> bool:
        return n in self.state(key).get("pushed", [])

    def mark_done(self, key: str, n: int, *, keep: bool = False) -> None:
        """Record round ``n`` as done, then delete its instances (``keep``: move them to ``kept-<n>``)."""
        with self._lock:
            state = self.state(key)
            state["done"] = sorted(set(state["done"]) | {n})
            self._save(key, state)
            if keep:
                os.rename(self.round_dir(key, n), self.root / key / f"kept-{n}")
            else:
                shutil.rmtree(self.round_dir(key, n), ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX: fsync the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
