"""Caps on what a manifest may make chestxr read: bytes after decompression and characters per cell.

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
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
