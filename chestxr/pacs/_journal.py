"""The listener's on-disk journal: every received instance is durable before it is acknowledged, and each
study is processed exactly once, across crashes and restarts.

Layout under ``<out>/journal`` (names are keys, never identifiers; the ``.dcm`` files are the received
instances, identifiers and all, as a PACS holds them)::

    key                                        the keyed hasher's secret (0600): names survive restarts
    <study key>/incoming/<instance key>.dcm    an image, written atomically (temp + fsync + rename, then the
                                               folder fsynced) before the C-STORE response
    <study key>/incoming/<instance key>.json   an instance acknowledged but not kept: a non-image SOP class
                                               ({"ignored": why}); it is listed, never predicted
    <study key>/round-<n>/...                  a batch claimed for processing (one atomic directory rename)
    <study key>/state.json                     {"next_round": n, "done": [..], "pushed": [..], "claimed": [instance keys]}
    <study key>/open-<token>                   an association that sent this study is open
    <study key>/aborted-<token>                one was aborted, or cut by a crash (an open-* found at start)

A study is processed in rounds: when it is complete (see chestxr/pacs/_listener.py), ``incoming`` is
renamed to ``round-<n>`` (instances arriving later start round n+1: a late image is never lost, never
merged into a result already sent). A round's results folder appears in one rename; then its SR is pushed
(the SR's UID is derived from its content, so a repeated push files it once); then the round is marked
done and its instances deleted. Whatever the crash point, a restart finds each round either unprocessed
(process it), processed but not pushed (push it), or done (clean up): no round is lost and none is
processed twice. A resend of an instance already claimed is acknowledged and not processed again.

Space: :meth:`Journal.add` refuses (:class:`NoRoom`, an ``ENOSPC`` OSError) any instance that would leave
less than ``reserve_bytes`` free on the journal's filesystem, so received instances never eat the space
the results, SRs and the journal's own bookkeeping need; it accepts again as soon as space returns.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from chestxr.core import write_bytes_atomic, write_json_atomic
from chestxr.pacs._staging import Keyer, dataset_bytes

INCOMING = "incoming"
#: default free space kept for results (``listen --reserve-mb``): see the README's listener SPEC.
DEFAULT_RESERVE_BYTES = 512 * 2**20


class NoRoom(OSError):
    """Journaling an instance would leave less free space than the reserve (errno ENOSPC)."""

    def __init__(self, free: int, reserve: int) -> None:
        super().__init__(errno.ENOSPC, f"{free / 2**20:.1f} MiB free, reserve {reserve / 2**20:.1f} MiB")
        self.free, self.reserve = free, reserve


def disk_free(path: Path) -> int:
    """Bytes an unprivileged process can still write on ``path``'s filesystem (statvfs f_bavail)."""
    return int(shutil.disk_usage(path).free)


class Journal:
    """Thread-safe journal of received studies under ``root`` (see the module docstring).

    reserve_bytes: free space :meth:`add` never eats into; free_space: probe of the free bytes on a path
    (default :func:`disk_free`; injectable for tests and for storage with its own quota).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        reserve_bytes: int = 0,
        free_space: Optional[Callable[[Path], int]] = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.keyer = Keyer.persistent(self.root)
        self.reserve_bytes = int(reserve_bytes)
        self.free_space = free_space or disk_free

    # ------------------------------------------------------------------ receiving

    def room_for(self, nbytes: int) -> None:
        """Raise :class:`NoRoom` unless ``nbytes`` more leave the reserve free."""
        free = int(self.free_space(self.root))
        if free - nbytes < self.reserve_bytes:
            raise NoRoom(free, self.reserve_bytes)

    def add(self, ds: Any, *, ignored: Optional[str] = None) -> tuple[str, bool]:
        """Journal one instance durably; returns (study key, False if it was already received: a resend
        of an instance already claimed for processing is acknowledged and not processed again).

        ignored: the reason an instance is acknowledged but not kept (a non-image SOP class): only a small
        record of it is written, so it is listed with its round and never predicted.
        """
        key = self.keyer.study(ds)
        name = self.keyer.instance(str(ds.SOPInstanceUID))
        if ignored is None:
            data, suffix = dataset_bytes(ds), ".dcm"
        else:
            data, suffix = json.dumps({"ignored": ignored}).encode(), ".json"
        self.room_for(len(data))
        with self._lock:
            target = self.root / key / INCOMING / f"{name}{suffix}"
            if name in self.state(key).get("claimed", []):
                return key, False
            existed = target.exists()
            write_bytes_atomic(target, data)
            _fsync_dir(target.parent)
        return key, not existed

    # ------------------------------------------------------------------ associations

    def begin_transfer(self, key: str, token: str) -> None:
        """Record that association ``token`` is sending study ``key`` (durable: a crash leaves it open)."""
        (self.root / key).mkdir(parents=True, exist_ok=True)
        (self.root / key / f"open-{token}").touch()
        _fsync_dir(self.root / key)

    def end_transfer(self, key: str, token: str, *, aborted: bool, cleared: bool) -> None:
        """Association ``token`` ended. aborted: its open mark becomes an abort mark (its sender did not
        finish); else the open mark goes. cleared: no cut transfer of the study is pending any more (a
        later one finished): every abort mark goes."""
        study = self.root / key
        opened = study / f"open-{token}"
        if aborted:
            if opened.exists():
                os.replace(opened, study / f"aborted-{token}")
        else:
            opened.unlink(missing_ok=True)
        if cleared:
            self.clear_aborted(key)
        _fsync_dir(study)

    def clear_aborted(self, key: str) -> None:
        for p in (self.root / key).glob("aborted-*"):
            p.unlink(missing_ok=True)

    def recover(self) -> tuple[list[str], set[str]]:
        """At start: drop half-written temp files, turn transfers left open by a crash into aborted ones.
        Returns (studies with incoming instances, oldest first by name; studies marked aborted)."""
        pending, aborted = [], set()
        for key in self.studies():
            study = self.root / key
            for p in study.glob("open-*"):
                os.replace(p, study / f"aborted-{p.name[5:]}")
            for p in (study / INCOMING).glob(".*.tmp"):
                p.unlink(missing_ok=True)
            if self.incoming(key):
                pending.append(key)
                if any(study.glob("aborted-*")):
                    aborted.add(key)
            else:  # nothing of it waits: nothing to hold
                self.clear_aborted(key)
        return pending, aborted

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
        """The study's unclaimed entries: images (``.dcm``) and ignored instances (``.json``)."""
        folder = self.root / key / INCOMING
        return sorted(p for p in folder.glob("*") if p.suffix in (".dcm", ".json") and not p.name.startswith("."))

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
        """Turn the study's incoming entries into the next round (one directory rename); None if there is
        no image among them (ignored instances alone are dropped, they have been logged)."""
        with self._lock:
            entries = self.incoming(key)
            if not entries:
                return None
            state = self.state(key)
            state["claimed"] = sorted(set(state.get("claimed", [])) | {p.stem for p in entries})
            if not any(p.suffix == ".dcm" for p in entries):
                self._save(key, state)
                shutil.rmtree(self.root / key / INCOMING, ignore_errors=True)
                return None
            n = int(state["next_round"])
            state["next_round"] = n + 1
            self._save(key, state)  # first: a crash before the rename only skips a round number
            os.rename(self.root / key / INCOMING, self.round_dir(key, n))
            _fsync_dir(self.root / key)
            return n

    def ignored(self, key: str, n: int) -> list[tuple[str, str]]:
        """(instance key, why) of the round's acknowledged-but-not-kept and quarantined instances."""
        out = []
        for p in sorted(self.round_dir(key, n).glob("*.json")):
            info = json.loads(p.read_text())
            out.append((p.stem, str(info.get("ignored") or info.get("quarantined"))))
        return out

    def quarantine(self, key: str, n: int, path: Path, reason: str, folder: Path) -> Path:
        """Move an instance of round ``n`` that cannot be re-read to ``folder/<study key>/`` (with a
        ``.txt`` giving ``reason``) and leave a record of it in the round; returns its new path. The
        instance no longer counts as received: a corrected resend (same SOP Instance UID) is accepted
        and predicted in a later round."""
        dest = folder / key / path.name
        with self._lock:
            state = self.state(key)
            state["claimed"] = [k for k in state.get("claimed", []) if k != path.stem]
            self._save(key, state)
        write_bytes_atomic(dest.with_suffix(".txt"), (reason + "\n").encode())
        record = f"quarantined in quarantine/{key}/{path.name}: {reason}"
        write_bytes_atomic(path.with_suffix(".json"), json.dumps({"quarantined": record}).encode())
        try:
            os.replace(path, dest)
        except OSError:  # another filesystem: copy durably, then drop the journal's copy
            write_bytes_atomic(dest, path.read_bytes())
            path.unlink()
        _fsync_dir(dest.parent)
        return dest

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
