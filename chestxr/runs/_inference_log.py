"""The inference log: what ``predict`` and ``listen`` append per image for ``chestxr monitor``.

Format: JSON lines (UTF-8), one file ``inference_log.jsonl`` in the command's output folder. Two kinds
of line, each one JSON object:

- a header ``{"chestxr_inference_log": 1, "findings": [...], "model": <weights sha256>, "thresholds":
  <thresholds hash>, "profile": <reference profile sha256 or null>, "sketch_dim": d, "key_id": <which key
  hashed the identifiers>, "source": "predict" | "listen", "chestxr": <version>}``, written when a
  writer opens the file (so a file may hold several: a listener restarted with another run);
- an entry per image: ``{"t": "2025-01-06T08:00:00.000Z", "image": h, "study": h, "patient": h,
  "fields": {...}, "numeric": {...}, "scores": [F], "calls": [F], "sketch": [d]}``, belonging to the
  header above it. ``image``/``study``/``patient`` are keyed hashes (HMAC-SHA256 under the run's key,
  ``RUN/patient_hash.key``: the same image or patient gets the same hash in every log of that run,
  and nothing about it can be learned without the key); ``fields`` are the non-identifying
  acquisition fields, ``numeric`` the numeric ones (see :mod:`chestxr.runs._reference_profile`),
  ``calls`` 1 / 0 / -1 (no threshold). Never an identifier, UID, name, date of birth or path.

Crash safety: a writer appends whole lines with one ``write`` on an ``O_APPEND`` descriptor under an
``fcntl`` lock and ``fsync``s before returning, so every line it reported written is on disk. A crash can
leave only the last line torn: the reader skips a line that is not valid JSON when it is the file's last
line or is followed by a header (a writer that reopens a file ending mid-line first ends that line);
any other bad line is a :class:`LogError` naming the file and line. An image logged twice (a study
processed again after a crash between its log and its commit) is read once: entries with the same
(image, model, thresholds) are duplicates, counted and left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from chestxr.core import CheckpointError, ChestXRError, KeyedHasher
from chestxr.runs._patients import read_key

LOG_FILE = "inference_log.jsonl"
_HASH = re.compile(r"[0-9a-f]{16,64}")
FORMAT_VERSION = 1
HEADER_KEY = "chestxr_inference_log"
#: lines longer than this are refused (an entry is ~1 KB; a bigger line is not chestxr's)
MAX_LINE_BYTES = 1 << 20


class LogError(ChestXRError, ValueError):
    """An inference log cannot be read as one (a bad line that is not a torn last line, a missing header,
    wrong types). The message names the file and line."""


@dataclass(frozen=True)
class LogHeader:
    """What the entries below a header were made with (module docstring)."""

    findings: tuple[str, ...]
    model: str
    thresholds: str
    profile: Optional[str]
    sketch_dim: int
    key_id: str
    source: str
    chestxr: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            HEADER_KEY: FORMAT_VERSION,
            "findings": list(self.findings),
            "model": self.model,
            "thresholds": self.thresholds,
            "profile": self.profile,
            "sketch_dim": self.sketch_dim,
            "key_id": self.key_id,
            "source": self.source,
            "chestxr": self.chestxr,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> "LogHeader":
        if obj.get(HEADER_KEY) != FORMAT_VERSION:
            raise LogError(
                f"{where}: inference log format {obj.get(HEADER_KEY)!r} is not {FORMAT_VERSION}; "
                "read it with the chestxr version that wrote it"
            )
        try:
            return cls(
                findings=tuple(str(f) for f in obj["findings"]),
                model=str(obj["model"]),
                thresholds=str(obj["thresholds"]),
                profile=None if obj.get("profile") is None else str(obj["profile"]),
                sketch_dim=int(obj.get("sketch_dim") or 0),
                key_id=str(obj.get("key_id") or ""),
                source=str(obj.get("source") or ""),
                chestxr=str(obj.get("chestxr") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LogError(f"{where}: a log header without a valid {exc}: not a chestxr inference log") from None

    @property
    def key(self) -> tuple[tuple[str, ...], str, str, Optional[str]]:
        """Entries of different headers are read together only when these agree: findings, model,
        thresholds and reference profile (whose projection made the sketch)."""
        return self.findings, self.model, self.thresholds, self.profile


@dataclass(frozen=True)
class LogEntry:
    """One image as logged: UTC ``time``, keyed hashes, acquisition ``fields`` (str) and ``numeric``
    (float) values, ``scores`` (F,), ``calls`` (F,) in 1 / 0 / -1, ``sketch`` (d,)."""

    time: datetime
    image: str
    study: str
    patient: str
    fields: Mapping[str, Optional[str]]
    numeric: Mapping[str, Optional[float]]
    scores: Sequence[float]
    calls: Sequence[int]
    sketch: Sequence[float] = ()

    def to_json(self) -> dict[str, Any]:
        t = self.time.astimezone(timezone.utc) if self.time.tzinfo else self.time.replace(tzinfo=timezone.utc)
        return {
            "t": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            "image": self.image,
            "study": self.study,
            "patient": self.patient,
            "fields": {k: v for k, v in self.fields.items() if v not in (None, "")},
            "numeric": {k: round(float(v), 6) for k, v in self.numeric.items() if v is not None and math.isfinite(v)},
            "scores": [round(float(s), 7) for s in self.scores],
            "calls": [int(c) for c in self.calls],
            "sketch": [round(float(s), 5) for s in self.sketch],
        }


def _line(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


class InferenceLogWriter:
    """Appends to ``path`` (created 0600 if absent): a header on open, then entries (module docstring).
    Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, header: LogHeader) -> None:
        self.path = Path(path)
        self.header = header
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._append([_line(header.to_json())], end_torn_line=True)

    def _append(self, lines: list[bytes], *, end_torn_line: bool = False) -> None:
        import fcntl

        data = b"".join(lines)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if end_torn_line:
                size = os.fstat(self._fd).st_size
                if size:
                    with open(self.path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            data = b"\n" + data  # a crash left a torn last line: end it, never glue onto it
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Write ``entries`` (one write, then fsync): on disk when this returns."""
        if not entries:
            return
        n_f, d = len(self.header.findings), self.header.sketch_dim
        lines = []
        for e in entries:
            for name in ("image", "study", "patient"):
                if not _HASH.fullmatch(getattr(e, name)):
                    raise ValueError(
                        f"log entry {name} must be a keyed hash (16-64 hex characters), never an identifier"
                    )
            if len(e.scores) != n_f or len(e.calls) != n_f or len(e.sketch) != d:
                raise ValueError(
                    f"log entry has {len(e.scores)} scores / {len(e.sketch)} sketch values; the "
                    f"header says {n_f} findings / {d}"
                )
            lines.append(_line(e.to_json()))
        self._append(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "InferenceLogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class InferenceLog:
    """Entries read from one or more logs, columnar (n entries, F findings, d sketch dimensions), for one
    header key (findings, model, thresholds); ``other_headers`` counts entries under other keys."""

    header: LogHeader
    time: np.ndarray  # (n,) datetime64[ms]
    image: np.ndarray  # (n,) bytes (numpy S: the keyed hash's ASCII hex; .decode() for str)
    study: np.ndarray
    patient: np.ndarray
    fields: dict[str, np.ndarray]  # name -> (n,) object (one shared str per distinct value), None missing
    numeric: dict[str, np.ndarray]  # name -> (n,) float, NaN missing
    scores: np.ndarray  # (n, F)
    calls: np.ndarray  # (n, F) int8
    sketch: np.ndarray  # (n, d)
    files: tuple[str, ...] = ()
    torn_lines: tuple[str, ...] = ()  # "file:line" of skipped torn lines
    duplicates: int = 0
    other_headers: dict[str, int] = field(default_factory=dict)  # "model/thresholds" -> entries left out

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def log_files(paths: Sequence[str | Path]) -> list[Path]:
    """The log files named by ``paths``: files as given, folders searched (recursively) for LOG_FILE,
    sorted. LogError when a path does not exist or a folder holds no log."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(p.rglob(LOG_FILE))
            if not found:
                raise LogError(
                    f"{p}: no {LOG_FILE} in this folder or below; give the output folder of "
                    "chestxr predict / listen, or the log file itself"
                )
            out.extend(found)
        else:
            raise LogError(f"{p}: no such file or folder")
    return sorted(dict.fromkeys(out))


def _chunks(path: Path, size: int = 5_000) -> Iterator[list[tuple[int, bytes]]]:
    """Lists of (line number, line without its newline), ``size`` lines at a time, streaming."""
    with open(path, "rb") as fh:
        chunk: list[tuple[int, bytes]] = []
        for number, raw in enumerate(fh, start=1):
            chunk.append((number, raw.rstrip(b"\r\n")))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _count_lines(path: Path) -> int:
    """Lines in ``path`` (a last line without its newline counted), read in 4 MiB blocks: the rows to allocate."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


_HEADER_BYTES = f'"{HEADER_KEY}"'.encode("ascii")


def _parse_chunk(lines: list[tuple[int, bytes]]) -> tuple[list[Any], bool]:
    """(json objects of the lines (None where a line is not JSON, "" where it is blank), plain): one decode
    for the whole chunk when every line is good (the common case), line by line otherwise. ``plain``: the
    chunk is entries only: every line a JSON object within MAX_LINE_BYTES, no blank line, no header."""
    good = [raw for _, raw in lines if raw.strip()]
    if len(good) == len(lines):
        joined = b"[" + b",".join(good) + b"]"
        try:
            objs = json.loads(joined)
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            plain = (
                _HEADER_BYTES not in joined and set(map(type, objs)) == {dict} and max(map(len, good)) <= MAX_LINE_BYTES
            )
            return objs, plain
    return [_parse(raw) if raw.strip() else "" for _, raw in lines], False


class _Columns:
    """The entries read so far as numpy columns filled in place (``capacity`` rows allocated once: the number of
    lines in the files, an upper bound on the entries), never a Python object per entry: times (8 bytes), scores
    (8 F), calls (F), sketch (8 d), the three keyed hashes as ASCII bytes (numpy ``S``, 32 bytes each), each
    acquisition field as int32 codes into that field's table of values, each numeric field as float64: ~0.6 KB
    per entry with 14 findings and a 16-value sketch."""

    def __init__(self, n_f: int, d: int, capacity: int) -> None:
        self.n_f, self.d, self.n, self.capacity = n_f, d, 0, capacity
        self.times = np.empty(capacity, dtype="datetime64[ms]")
        self.scores = np.empty((capacity, n_f), dtype=np.float64)
        self.calls = np.empty((capacity, n_f), dtype=np.int8)
        self.sketch = np.empty((capacity, d), dtype=np.float64)
        self.hashes: dict[str, np.ndarray] = {}  # image / study / patient -> (capacity,) S<width>
        self.tables: dict[str, dict[Any, int]] = {}  # field -> {value: code}; code 0 is "absent"
        self.codes: dict[str, np.ndarray] = {}  # field -> (capacity,) int32
        self.numeric: dict[str, np.ndarray] = {}  # field -> (capacity,) float64, NaN absent

    def add_chunk(self, entries: list[dict[str, Any]], path: Path, lines: list[int]) -> None:
        """Append ``entries`` (parsed JSON objects of lines ``lines`` of ``path``); LogError naming the first
        line that is not a valid entry."""
        if not entries:
            return
        n_f, d, m = self.n_f, self.d, len(entries)
        try:
            t = [e["t"] for e in entries]
            bad = next((i for i, x in enumerate(t) if not (isinstance(x, str) and x.endswith("Z"))), None)
            if bad is not None:
                raise _EntryError(f"{path}:{lines[bad]}", f"time {t[bad]!r} is not UTC (...Z)")
            times = np.array([x[:-1] for x in t], dtype="datetime64[ms]")
            scores = np.array([e["scores"] for e in entries], dtype=np.float64)
            calls = np.array([e["calls"] for e in entries], dtype=np.int8)
            sketch = np.array([e.get("sketch") or [] for e in entries], dtype=np.float64)
            if scores.shape != (m, n_f) or calls.shape != (m, n_f):
                raise ValueError(f"scores/calls are not {n_f} values each, as the header's findings")
            if sketch.shape != (m, d) and not (d == 0 and sketch.size == 0):
                raise ValueError(f"sketch is not {d} values each, as the header says")
            hashes = []
            for k in ("image", "study", "patient"):
                values = [e[k] for e in entries]
                column = np.array(values, dtype="S")
                if column.dtype.itemsize > 64 or set(map(type, values)) != {str}:
                    raise ValueError("image/study/patient must be keyed hashes (16-64 hex characters)")
                hashes.append(column)
            fields = [e.get("fields") or {} for e in entries]
            numeric = [e.get("numeric") or {} for e in entries]
            # entries share a few combinations of acquisition fields: code each combination once
            combos: dict[tuple[Any, ...], int] = {}
            combo = np.fromiter(
                (combos.setdefault(tuple(f.items()), len(combos)) for f in fields), dtype=np.int32, count=m
            )
            codes = {}
            for name in {k for c in combos for k, _ in c}:
                table = self.tables.setdefault(name, {None: 0, "": 0})
                per_combo = [table.setdefault(dict(c).get(name), len(table) - 1) for c in combos]
                codes[name] = np.asarray(per_combo, dtype=np.int32)[combo]
            numbers = _numeric_columns(numeric)
        except _EntryError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            for e, number in zip(entries, lines):  # find the line to name
                try:
                    if not isinstance(e.get("fields") or {}, dict) or not isinstance(e.get("numeric") or {}, dict):
                        raise ValueError("fields/numeric are not JSON objects")
                    for k in ("image", "study", "patient"):
                        if not isinstance(e[k], str) or not 16 <= len(e[k]) <= 64:
                            raise ValueError(f"{k} is not a keyed hash")
                    if len(e["scores"]) != n_f or len(e["calls"]) != n_f:
                        raise ValueError("scores/calls do not match the header's findings")
                    np.array(e["scores"], dtype=np.float64), np.array(e["calls"], dtype=np.int8)
                    np.datetime64(str(e["t"])[:-1], "ms")
                    {hash(v) for v in (e.get("fields") or {}).values()}
                except (KeyError, TypeError, ValueError, AttributeError) as inner:
                    raise _EntryError(f"{path}:{number}", str(inner)) from None
            raise _EntryError(f"{path}:{lines[0]}", str(exc)) from None
        lo, hi = self.n, self.n + m
        if hi > self.capacity:  # a file grew while it was read: room for what was counted and this chunk
            self._grow(max(hi, int(self.capacity * 1.25)))
        for name, c in codes.items():
            if name not in self.codes:
                self.codes[name] = np.zeros(self.capacity, dtype=np.int32)
            self.codes[name][lo:hi] = c
        for name, v in numbers.items():
            if name not in self.numeric:
                self.numeric[name] = np.full(self.capacity, np.nan)
            self.numeric[name][lo:hi] = v
        self.times[lo:hi] = times
        self.scores[lo:hi] = scores
        self.calls[lo:hi] = calls
        self.sketch[lo:hi] = sketch.reshape(m, d)
        for k, h in zip(("image", "study", "patient"), hashes):
            held = self.hashes.get(k)
            if held is None or held.dtype.itemsize < h.dtype.itemsize:
                wider = np.zeros(self.capacity, dtype=h.dtype if held is None else f"S{h.dtype.itemsize}")
                if held is not None:
                    wider[:lo] = held[:lo]
                self.hashes[k] = held = wider
            held[lo:hi] = h
        self.n = hi

    def _grow(self, capacity: int) -> None:
        def grow(a: np.ndarray, fill: Any = 0) -> np.ndarray:
            out = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
            out[: self.n] = a[: self.n]
            return out

        self.times, self.scores, self.calls = grow(self.times), grow(self.scores), grow(self.calls)
        self.sketch = grow(self.sketch)
        self.hashes = {k: grow(v) for k, v in self.hashes.items()}
        self.codes = {k: grow(v) for k, v in self.codes.items()}
        self.numeric = {k: grow(v, np.nan) for k, v in self.numeric.items()}
        self.capacity = capacity


def _numeric_columns(numeric: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """name -> (m,) float64 (NaN where absent or not a number) of the entries' ``numeric`` objects: one array
    conversion when every entry names the same fields in the same order (the writer's case)."""
    keysets = {tuple(v) for v in numeric}
    if len(keysets) == 1:
        names = next(iter(keysets))
        try:
            mat = np.array([tuple(v.values()) for v in numeric], dtype=np.float64).reshape(len(numeric), len(names))
            return {str(k): mat[:, j].copy() for j, k in enumerate(names)}
        except (TypeError, ValueError):
            pass
    import pandas as pd

    out = {}
    for name in {k for ks in keysets for k in ks}:
        values = pd.Series([v.get(name) for v in numeric], dtype=object)
        out[str(name)] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return out


def _flush(
    rows: Optional[_Columns],
    entries: list[dict[str, Any]],
    path: Path,
    lines: list[int],
    header: Optional[LogHeader],
    capacity: int,
) -> Optional[_Columns]:
    """Move the pending ``entries`` into ``rows`` (made for ``header`` with ``capacity`` rows when None), then
    empty the lists."""
    if not entries or header is None:
        return rows
    if rows is None:
        rows = _Columns(len(header.findings), header.sketch_dim, max(capacity, len(entries)))
    try:
        rows.add_chunk(entries, path, lines)
    except _EntryError as exc:
        raise LogError(str(exc)) from None
    entries.clear()
    lines.clear()
    return rows


class _EntryError(Exception):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: not a valid log entry ({reason})")


def read_inference_logs(
    paths: Sequence[str | Path], *, header: Optional[LogHeader] = None, findings: Optional[Sequence[str]] = None
) -> InferenceLog:
    """Read the logs under ``paths`` (files or folders, :func:`log_files`) into one :class:`InferenceLog`.

    Entries are kept for one header key: ``header``'s if given (e.g. the run's model and thresholds),
    else the first header met; entries under other keys are counted in ``other_headers``. LogError on
    a bad line (module docstring) or when no entry matches.

    Streaming: lines are parsed 5,000 at a time and turned into numpy columns at once (:class:`_Columns`),
    so memory grows by ~0.7 KB per entry (14 findings, 16-value sketch), not by a dict per entry; duplicates
    are found at the end on the image hash column (the first of each is kept)."""
    files = log_files(paths)
    capacity = sum(_count_lines(p) for p in files)
    want = header.key if header is not None else None
    chosen: Optional[LogHeader] = header
    rows: Optional[_Columns] = None
    torn: list[str] = []
    other: dict[str, int] = {}
    for path in files:
        current: Optional[LogHeader] = None
        keep = False  # the entries below the current header are kept (its key is the one wanted)
        tag = ""
        pending: Optional[str] = None  # a bad line: torn only if a header or the end of the file follows
        for chunk in _chunks(path):
            objs, plain = _parse_chunk(chunk)
            if plain and pending is None and current is not None:  # entries only, under the current header
                if keep:
                    rows = _flush(rows, objs, path, [number for number, _ in chunk], chosen, capacity)
                else:
                    other[tag] = other.get(tag, 0) + len(objs)
                continue
            entries: list[dict[str, Any]] = []
            numbers: list[int] = []
            for (number, raw), obj in zip(chunk, objs):
                if obj == "":
                    continue
                is_dict = isinstance(obj, dict)
                if pending is not None:
                    if is_dict and HEADER_KEY in obj:
                        torn.append(pending)
                        pending = None
                    else:
                        raise LogError(
                            f"{pending}: not a JSON object (a damaged line in the middle of the log); "
                            "repair or remove that line"
                        )
                if len(raw) > MAX_LINE_BYTES:
                    raise LogError(
                        f"{path}:{number}: line of {len(raw)} bytes, over {MAX_LINE_BYTES}: not a chestxr inference log"
                    )
                if not is_dict:
                    pending = f"{path}:{number}"
                    continue
                if HEADER_KEY in obj:
                    rows = _flush(rows, entries, path, numbers, chosen, capacity)
                    current = LogHeader.from_json(obj, f"{path}:{number}")
                    if chosen is None:
                        chosen, want = current, current.key
                    keep = current.key == want
                    tag = (
                        f"model {current.model[:12]} / thresholds {current.thresholds[:12]} / "
                        f"profile {(current.profile or 'none')[:12]}"
                    )
                    continue
                if current is None:
                    raise LogError(f"{path}:{number}: an entry before any header: not a chestxr inference log")
                if not keep:
                    other[tag] = other.get(tag, 0) + 1
                    continue
                entries.append(obj)
                numbers.append(number)
            rows = _flush(rows, entries, path, numbers, chosen, capacity)
        if pending is not None:
            torn.append(pending)  # the file's last line: torn by a crash
    if chosen is None or rows is None or rows.n == 0:
        raise LogError(
            f"{', '.join(map(str, files))}: no log entries" + (" for this run's model and thresholds" if other else "")
        )
    if findings is not None and tuple(findings) != chosen.findings:
        raise LogError(f"the logs' findings {list(chosen.findings)} differ from the run's {list(findings)}")
    return _assemble(chosen, rows, files, torn, other)


def _assemble(
    header: LogHeader, rows: _Columns, files: list[Path], torn: list[str], other: dict[str, int]
) -> InferenceLog:
    """One InferenceLog from the filled columns: the fields' codes turned into object arrays sharing one str per
    distinct value, duplicates (an image hash met before) left out (the first is kept). The columns are the
    arrays filled while reading (trimmed views; copied only when duplicates or many unused rows are left out)."""
    n = rows.n
    image = rows.hashes["image"][:n]
    _, first = np.unique(image, return_index=True)
    duplicates = n - int(first.size)
    keep: Any = np.sort(first) if duplicates else slice(0, n)
    copy = duplicates > 0 or n < 0.9 * rows.capacity  # give back the rows other headers' lines took

    def column(a: np.ndarray) -> np.ndarray:
        out = a[keep]
        return out.copy() if copy and not duplicates else out

    fields: dict[str, np.ndarray] = {}
    for name, codes in sorted(rows.codes.items()):
        table = rows.tables[name]
        values = np.empty(max(table.values()) + 1, dtype=object)
        for value, code in table.items():
            if code:
                values[code] = value if isinstance(value, str) else str(value)
        fields[name] = values[codes[keep]]
    return InferenceLog(
        header=header,
        time=column(rows.times),
        image=column(rows.hashes["image"]),
        study=column(rows.hashes["study"]),
        patient=column(rows.hashes["patient"]),
        fields=fields,
        numeric={name: column(v) for name, v in sorted(rows.numeric.items())},
        scores=column(rows.scores),
        calls=column(rows.calls),
        sketch=column(rows.sketch),
        files=tuple(map(str, files)),
        torn_lines=tuple(torn),
        duplicates=duplicates,
        other_headers=other,
    )


def decision_sha256(parts: Mapping[str, Any]) -> str:
    """sha256 of what turns the model's outputs into calls (findings in order, stored and decision
    thresholds, probability calibration), from :func:`chestxr.runs.bound_parts`: the log header's
    ``thresholds``. A log entry is compared with a reference profile only when both were made under the
    same weights and this same hash."""
    doc = {k: parts[k] for k in ("findings", "thresholds", "probability_calibration")}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_log_header(run: Any, *, source: str, sketch_dim: int) -> LogHeader:
    """The header of the entries ``run`` (a :class:`chestxr.runs.Run`) logs now."""
    from chestxr import __version__
    from chestxr.runs._approval import bound_parts
    from chestxr.runs._reference_profile import profile_sha256

    parts = bound_parts(run.run_dir, run.metadata)
    key = read_key(run.run_dir)
    return LogHeader(
        findings=tuple(run.findings),
        model=str(parts["weights"]),
        thresholds=decision_sha256(parts),
        profile=profile_sha256(run.run_dir),
        sketch_dim=sketch_dim,
        key_id=KeyedHasher(key).key_id if key else "",
        source=source,
        chestxr=__version__,
    )


def log_predictions(
    run: Any,
    log_path: str | Path,
    *,
    paths: Sequence[str],
    features: Optional[np.ndarray],
    input_stats: Optional[np.ndarray],
    scores: np.ndarray,
    calls: np.ndarray,
    patient_ids: Optional[Sequence[Any]] = None,
    study_ids: Optional[Sequence[Any]] = None,
    ages: Optional[Sequence[Any]] = None,
    sexes: Optional[Sequence[Any]] = None,
    source: str = "predict",
) -> int:
    """Append one entry per predicted image (``paths`` (n,), ``scores``/``calls`` (n, F), ``features``
    (n, D), ``input_stats`` (n, 2)) to the log at ``log_path``; returns n. The run must have a reference
    profile (its key and sketch projection); CheckpointError otherwise."""
    from chestxr.runs._observations import observe_images
    from chestxr.runs._reference_profile import load_reference_profile

    profile = load_reference_profile(run.run_dir)
    key = read_key(run.run_dir)
    if key is None:
        raise CheckpointError(f"{run.run_dir}: no patient_hash.key; the inference log's hashes need the run's key")
    obs = observe_images(
        paths,
        KeyedHasher(key),
        input_stats=input_stats,
        features=features,
        patient_ids=patient_ids,
        study_ids=study_ids,
        ages=ages,
        sexes=sexes,
    )
    proj = profile.projection
    sketch = proj.apply(features) if proj is not None and features is not None else np.zeros((len(paths), 0))
    header = run_log_header(run, source=source, sketch_dim=int(sketch.shape[1]))
    now = datetime.now(timezone.utc)
    entries = [
        LogEntry(
            time=now,
            image=str(obs.image[i]),
            study=str(obs.study[i]),
            patient=str(obs.patient[i]),
            fields={k: v[i] for k, v in obs.fields.items()},
            numeric={k: float(v[i]) for k, v in obs.numeric.items()},
            scores=scores[i].tolist(),
            calls=calls[i].tolist(),
            sketch=sketch[i].tolist(),
        )
        for i in range(len(paths))
    ]
    with InferenceLogWriter(log_path, header) as writer:
        writer.append(entries)
    return len(entries)
