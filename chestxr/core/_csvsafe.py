"""CSV cells that cannot become spreadsheet formulas (OWASP "CSV injection").

Every CSV chestxr writes (predictions.csv, study_predictions.csv, metrics.csv, skipped.csv,
splits.csv, manifests) passes its text cells and header names through :func:`escape_cell`:

- a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets one
  leading apostrophe (``=cmd|' /C calc'!A0`` -> ``'=cmd|' /C calc'!A0``), so a spreadsheet shows it
  as text; plain numbers (``-1``, ``-0.25``, ``+3e-5``) are left alone, they are not formulas;
- a cell that already looks escaped (apostrophes followed by one of those characters) gets one
  more apostrophe, so the escaping can be undone exactly.

Reading back: :func:`unescape_cell` removes that one apostrophe, which is what the manifest reader
does for every text cell and header name. A manifest written by chestxr therefore round-trips
unchanged (``=cmd`` -> ``'=cmd`` -> ``=cmd``); a hand-written manifest cell ``'=x`` reads as ``=x``,
as a spreadsheet would show it. Numeric columns are never touched.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED = re.compile(r"^'+[=+\-@\t\r]")
_TRIGGERED = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def needs_escape(text: str) -> bool:
    """True when ``text`` would be read by a spreadsheet as a formula (or is an escaped cell)."""
    if _TRIGGERED.match(text):
        return not _NUMBER.match(text)
    return bool(_ESCAPED.match(text))


def escape_cell(value: Any) -> Any:
    """``value`` with one leading apostrophe where it could become a formula; non-str unchanged."""
    if isinstance(value, str) and value and needs_escape(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """The inverse of :func:`escape_cell` on str (one apostrophe before a trigger is dropped)."""
    if isinstance(value, str) and value.startswith("'") and _ESCAPED.match(value):
        return value[1:]
    return value


def escape_row(values: Iterable[Any]) -> list[Any]:
    """A row for ``csv.writer``: every str cell through :func:`escape_cell`."""
    return [escape_cell(v) for v in values]


def escape_frame(frame: Any) -> Any:
    """A pandas DataFrame whose object (text) columns and column names are escaped: ``frame`` itself
    when nothing needs it (no copy), else a copy. Numeric columns are never touched; a text column is
    scanned at C speed (one join and substring searches), so a 1M-row frame costs ~0.1 s per column."""
    import pandas as pd

    todo = []
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype):
            values = series.tolist()
            if _column_may_need(values):
                todo.append((col, values))
    names = [escape_cell(str(c)) for c in frame.columns]
    if not todo and names == [str(c) for c in frame.columns]:
        return frame
    out = frame.copy()
    for col, values in todo:
        out[col] = pd.Series([escape_cell(v) for v in values], index=out.index, dtype=object)
    out.columns = names
    return out


_FIRST = ("'", *TRIGGERS)


def _column_may_need(values: list[Any]) -> bool:
    """True when some str cell starts with an apostrophe or a trigger character."""
    try:
        joined = "\x00" + "\x00".join(values)
    except TypeError:  # not all str (NaN, numbers): the slow path
        return any(isinstance(v, str) and v[:1] in _FIRST for v in values)
    return any("\x00" + c in joined for c in _FIRST)
