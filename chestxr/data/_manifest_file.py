"""File-level reading of a manifest: existence, gzip, size cap, encoding, line ends; CSV structure and parsing.

``read_bytes`` returns the file's bytes (gunzipped, UTF-8 checked, BOM dropped, line ends made ``\\n``) or
records why it cannot be read; ``field_counts`` counts fields per record (vectorized when nothing is quoted);
``parse_cells`` turns the records into a DataFrame of text cells (label columns tried as float64 first).

Encoding: UTF-8 with or without BOM is accepted (CRLF and CR line ends too). Anything else is an
error naming the first bad byte and its offset; there is no silent latin-1 fallback, because a
wrongly decoded path or patient id would silently point at the wrong file or patient.

Caps on what a manifest may make chestxr read: bytes after decompression and characters per cell.

- ``CHESTXR_MAX_MANIFEST_BYTES`` (default 256 MiB = :data:`DEFAULT_MAX_MANIFEST_BYTES`): a manifest,
  after gunzip, larger than this is refused. A .csv.gz is inflated in chunks and reading stops at the
  cap, so a small file that inflates to gigabytes (a gzip bomb) never reaches memory. A 1M-row
  manifest with 14 findings is about 100 MB.
- ``CHESTXR_MAX_CELL_CHARS`` (default 64 KiB = :data:`DEFAULT_MAX_CELL_CHARS`): a cell longer than
  this is a problem naming its row (the csv module's own limit raised a ``_csv.Error`` traceback).

Both are read when a manifest is read, so ``CHESTXR_MAX_MANIFEST_BYTES=2000000000 chestxr train ...``
raises a cap for one command.
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.data._schema import Collector, Problem

DEFAULT_MAX_MANIFEST_BYTES = 256 << 20
DEFAULT_MAX_CELL_CHARS = 64 << 10
_CHUNK = 1 << 20


class ManifestTooLarge(ValueError):
    """The manifest (decompressed) is larger than the cap; ``args[0]`` is the readable reason."""


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def max_manifest_bytes() -> int:
    """$CHESTXR_MAX_MANIFEST_BYTES, default 256 MiB."""
    return _env_int("CHESTXR_MAX_MANIFEST_BYTES", DEFAULT_MAX_MANIFEST_BYTES)


def max_cell_chars() -> int:
    """$CHESTXR_MAX_CELL_CHARS, default 64 KiB."""
    return _env_int("CHESTXR_MAX_CELL_CHARS", DEFAULT_MAX_CELL_CHARS)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def read_capped(path: Path, cap: int | None = None) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic; ManifestTooLarge past ``cap``.

    Raises zlib.error/EOFError for a corrupt gzip stream."""
    cap = max_manifest_bytes() if cap is None else cap
    fix = f"split the manifest, or raise the cap (CHESTXR_MAX_MANIFEST_BYTES, now {cap})"
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head != b"\x1f\x8b":
            data = fh.read(cap + 1)
            if len(data) > cap:
                raise ManifestTooLarge(f"the manifest holds more than {_mib(cap)}; {fix}")
            return data
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts: list[bytes] = []
        size = 0
        while True:
            pending = inflate.unconsumed_tail or fh.read(_CHUNK)
            if not pending:
                break
            out = inflate.decompress(pending, min(_CHUNK * 16, cap + 1 - size))  # bounded output per call
            parts.append(out)
            size += len(out)
            if size > cap:
                raise ManifestTooLarge(f"the manifest inflates to more than {_mib(cap)} (gzip); {fix}")
            if inflate.eof:
                break
        if not inflate.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        return b"".join(parts)


@contextmanager
def csv_field_limit(limit: int) -> Iterator[None]:
    """Temporarily set the csv module's per-field limit (process-wide) to ``limit`` characters."""
    old = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def long_cell_rows(raw: bytes, limit: int) -> list[int]:
    """Line numbers (1-based) of unquoted lines with a comma-separated cell longer than ``limit``."""
    rows = []
    for i, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > limit and any(len(cell) > limit for cell in line.split(b",")):
            rows.append(i)
    return rows


def read_bytes(path: Path, col: Collector) -> Optional[bytes]:
    if not path.exists():
        col.add("error", Problem(None, None, None, f"manifest file {path} not found", "check the path", "file"))
        return None
    if path.is_dir():
        col.add("error", Problem(None, None, None, f"{path} is a folder, not a CSV file", "pass the CSV file", "file"))
        return None
    try:
        raw = read_capped(path)  # gunzipped in chunks, at most CHESTXR_MAX_MANIFEST_BYTES (chestxr.data._limits)
    except ManifestTooLarge as exc:
        reason, fix = str(exc).split("; ", 1)
        col.add("error", Problem(None, None, None, reason, fix, "file_too_large"))
        return None
    except (OSError, EOFError, zlib.error) as exc:
        col.add("error", Problem(None, None, None, f"corrupt gzip file: {exc}", "re-create the .csv.gz", "file"))
        return None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        col.add(
            "error",
            Problem(
                None,
                None,
                None,
                "the file is UTF-16 encoded",
                "save it as 'CSV UTF-8' (Excel: Save As > CSV UTF-8)",
                "encoding",
            ),
        )
        return None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col.add(
            "error",
            Problem(
                line,
                None,
                None,
                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} (line {line})",
                "save the file as 'CSV UTF-8', e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`",
                "encoding",
            ),
        )
        return None
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not raw.strip():
        col.add(
            "error", Problem(None, None, None, "the file is empty", "write a header row and one row per image", "empty")
        )
        return None
    return raw


class LongCell(Exception):
    """A cell longer than CHESTXR_MAX_CELL_CHARS; ``row`` is its spreadsheet row."""

    def __init__(self, row: int) -> None:
        super().__init__(row)
        self.row = row


def field_counts(raw: bytes) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(header, number of fields per data record, spreadsheet row number per record); blank lines skipped.

    Raises LongCell for a cell longer than the cell cap (chestxr.data._limits.max_cell_chars)."""
    limit = max_cell_chars()
    if b'"' not in raw:  # fast path: no quoting, so fields = commas + 1 on each non-empty line
        arr = np.frombuffer(raw, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        if len(ends) == 0 or ends[-1] != len(arr) - 1:
            ends = np.append(ends, len(arr))
        starts = np.concatenate([[0], ends[:-1] + 1])
        if len(ends) and int((ends - starts).max()) > limit:
            long_rows = long_cell_rows(raw, limit)
            if long_rows:
                raise LongCell(long_rows[0])
        # fields per line = commas in the line + 1 (one pass in C; blank lines are skipped below)
        counts = np.add.reduceat(arr == 44, starts, dtype=np.int64) + 1
        nonempty = np.flatnonzero(ends > starts)
        if len(nonempty) == 0:
            return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
        h = nonempty[0]
        header = raw[starts[h] : ends[h]].decode("utf-8").split(",")
        data = nonempty[1:]
        return header, counts[data], data + 1
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    head: Optional[list[str]] = None
    n_fields: list[int] = []
    row_numbers: list[int] = []
    prev = 0
    with csv_field_limit(limit):
        try:
            for rec in reader:
                start, prev = prev + 1, reader.line_num
                if not rec:
                    continue
                if head is None:
                    head = rec
                    continue
                n_fields.append(len(rec))
                row_numbers.append(start)
        except csv.Error:  # "field larger than field limit": the record starting after line prev
            raise LongCell(prev + 1) from None
    return head or [], np.asarray(n_fields, dtype=np.int64), np.asarray(row_numbers, dtype=np.int64)


def parse_cells(raw: bytes, ncol: int, n_expected: int, ragged: bool, numeric: Sequence[int] = ()) -> pd.DataFrame:
    """Cells as str (columns 0..ncol-1; only records with exactly ncol fields).

    Columns in ``numeric`` (label columns) are first tried as float64 by the C parser (blank ->
    NaN), which avoids a Python string per cell; if any cell there is not a number, everything is
    read as text and parse_labels reports the bad cells.
    """
    if not ragged:
        opts = dict(header=0, names=list(range(ncol)), index_col=False, skip_blank_lines=True, encoding="utf-8")
        frame = None
        if numeric:
            try:
                frame = pd.read_csv(
                    io.BytesIO(raw),
                    dtype={i: (np.float64 if i in numeric else object) for i in range(ncol)},
                    keep_default_na=False,
                    na_values={i: [""] for i in numeric},
                    **opts,
                )
            except ValueError:
                frame = None
        if frame is None:
            frame = pd.read_csv(io.BytesIO(raw), dtype=object, keep_default_na=False, na_filter=False, **opts)
        if frame.shape == (n_expected, ncol):
            return frame
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    with csv_field_limit(max_cell_chars() + 1):  # field_counts already refused longer cells
        records = [r for r in reader if r]
    good = [r for r in records[1:] if len(r) == ncol]
    return pd.DataFrame(good, columns=range(ncol), dtype=object)


def unescape_formula_cells(frame: pd.DataFrame) -> None:
    """In place: text cells written escaped against spreadsheet formulas ('=x, '+1@, see
    chestxr/core/_csvsafe.py) read back as written before escaping (=x, +1@)."""
    for c in frame.columns:
        if not pd.api.types.is_object_dtype(frame[c].dtype):
            continue
        values = frame[c].astype(str)
        hit = values.str.match(r"^'+[=+\-@\t\r]", na=False).to_numpy()
        if hit.any():
            frame.loc[hit, c] = values[hit].str[1:]


def has_padding(raw: bytes) -> bool:
    """True when some cell may start or end with a space/tab (substring tests run at memchr speed)."""
    if b" " not in raw and b"\t" not in raw:
        return False
    pairs = (b" ,", b", ", b"\t,", b",\t", b" \n", b"\n ", b"\t\n", b"\n\t", b' "', b'" ')
    return raw[:1] in (b" ", b"\t") or raw.rstrip(b"\n")[-1:] in (b" ", b"\t") or any(p in raw for p in pairs)
