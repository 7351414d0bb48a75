"""``load_manifest``: the manifest checks behind ``validate_manifest``/``read_manifest`` (see chestxr/data/manifest.py).

Order: file (exists, gzip, encoding; chestxr/data/manifest_file.py), structure (header names, duplicate columns,
field counts per row; chestxr/data/manifest_header.py), then columns (path, patient_id, study_id, view, split,
findings, age; chestxr/data/manifest_columns.py), collecting every problem (chestxr/data/problem_collector.py).
Everything is vectorized: string columns are factorized and only their unique values are inspected in Python;
file existence is checked with one directory listing per unique folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from chestxr.core.csvsafe import unescape_cell
from chestxr.data.findings import match_findings
from chestxr.data.limits import max_cell_chars
from chestxr.data.manifest_columns import (
    check_id_columns,
    check_labels,
    check_path_column,
    check_split,
    normalized,
    other_columns,
    parse_labels,
)
from chestxr.data.manifest_file import (
    LongCell,
    field_counts,
    has_padding,
    parse_cells,
    read_bytes,
    unescape_formula_cells,
)
from chestxr.data.manifest_header import check_column_names, check_required_columns, finding_columns
from chestxr.data.problem_collector import Collector
from chestxr.data.schema import Manifest, Problem, ValidationResult, is_metadata_column, normalize_view

__all__ = ["load_manifest", "parse_labels"]


def load_manifest(
    path: Union[str, Path], *, findings: Optional[Sequence[str]] = None, check_paths: bool = True
) -> tuple[ValidationResult, Optional[Manifest]]:
    """Check a manifest; returns (every problem, the Manifest or None when there are errors)."""
    path = Path(path)
    source = Path(os.path.abspath(path))
    col = Collector()
    raw = read_bytes(path, col)
    if raw is None:
        return col.result, None
    try:
        header, counts, rows = field_counts(raw)
    except LongCell as exc:
        limit = max_cell_chars()
        col.add(
            "error",
            Problem(
                exc.row,
                None,
                None,
                f"a cell longer than {limit} characters",
                "shorten it (an unclosed quote makes the rest of the file one cell), or raise the cap "
                f"CHESTXR_MAX_CELL_CHARS (now {limit})",
                "cell_too_long",
            ),
        )
        return col.result, None
    names = [unescape_cell(h.strip()) for h in header]  # chestxr.core.csvsafe: '=x (written escaped) is =x
    ncol = len(names)
    ragged = counts != ncol
    if ragged.any():
        bad_counts = counts[ragged]
        col.rows(
            "error",
            "field_count",
            None,
            rows[ragged],
            None,
            lambda i, v: f"has {bad_counts[i]} fields but the header has {ncol}",
            "quote values that contain commas, and give every row one value per column",
        )
    rows = rows[~ragged]
    if len(rows) == 0:
        col.add(
            "error",
            Problem(
                None, None, None, "the manifest has no data rows", "add one row per image below the header", "empty"
            ),
        )
        return col.result, None
    canon = [n.lower() if is_metadata_column(n) and not n.lower().startswith("meta_") else n for n in names]
    numeric = [i for i, nm in enumerate(canon) if nm and canon.count(nm) == 1 and not is_metadata_column(nm)]
    if findings is not None:
        wanted = set(match_findings([canon[i] for i in numeric], list(findings)).values())
        numeric = [i for i in numeric if canon[i] in wanted]
    frame = parse_cells(raw, ncol, len(rows), bool(ragged.any()), numeric)
    if b"'" in raw:
        unescape_formula_cells(frame)
    strip = has_padding(raw)  # else no cell needs stripping

    keep_idx, final = check_column_names(frame, canon, col)
    frame = frame[keep_idx]
    frame.columns = final
    n = len(frame)
    check_required_columns(final, col)
    finding_cols = finding_columns(final, findings, col)

    out: dict[str, Any] = {}
    written = np.full(n, "", dtype=object)
    if "path" in final:
        written, out["path"] = check_path_column(frame, rows, raw, source, strip, check_paths, col)
    out.update(check_id_columns(frame, final, rows, written, strip, col))
    out["view"] = normalized(frame["view"], normalize_view) if "view" in final else np.full(n, "", dtype=object)
    out["split"] = check_split(frame, rows, out["patient_id"], "patient_id" in final, col)
    out.update(other_columns(frame, final, finding_cols, rows, strip, col))
    out.update(check_labels(frame, finding_cols, rows, raw, ncol, keep_idx, final, col))
    if col.result.errors or "path" not in out:
        return col.result, None
    index = pd.RangeIndex(n)
    table = pd.DataFrame(
        {
            c: pd.Series(v, index=index, dtype=np.float64 if c in finding_cols or c == "age" else object)
            for c, v in out.items()
        }
    )
    return col.result, Manifest(table, list(finding_cols), source)
