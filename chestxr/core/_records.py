"""Typed JSON records that write back what they read.

A record (a dataclass stored as a JSON object, e.g. an operating point in thresholds.json and model.json)
read from a file may lack keys a newer version writes. So that rewriting an old file (a new model.json
version after ``chestxr approve``) changes nothing the user did not change, such a record remembers the
keys it was read with (``present``) and :func:`written_keys` keeps, of its full JSON form, those keys plus
the ones whose field was set since (differs from the field's default). A record made in memory
(``present`` None) writes every key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Optional


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (also inside lists and tuples)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def fields_set(record: Any) -> set[str]:
    """Names of the dataclass fields of ``record`` whose value differs from the field's default."""
    out = set()
    for f in dataclasses.fields(record):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out.add(f.name)
            continue
        if not _same(getattr(record, f.name), default):
            out.add(f.name)
    return out


def written_keys(
    full: Mapping[str, Any],
    present: Optional[Iterable[str]],
    changed: Iterable[str],
    also: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """``full`` (a record's complete JSON form, in order) restricted to the keys in ``present`` or ``changed``
    (the keys of fields set since the record was read); ``present`` None keeps everything. ``also`` maps a
    derived key to the field it comes from (``{"guaranteed": "status"}``): it is written with that field when
    the field was set after reading (a key the record was read without stays out otherwise)."""
    if present is None:
        return dict(full)
    read = set(present)
    keep = read | set(changed)
    keep |= {key for key, source in (also or {}).items() if source in keep and source not in read}
    return {k: v for k, v in full.items() if k in keep}
