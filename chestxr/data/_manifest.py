"""Read, validate and write manifests: the CSV contract between hospitals and chestxr.

One row per image. ``path`` (required) is relative to the manifest's folder or absolute;
``patient_id`` is needed for patient-level splits; ``study_id``, ``view``, ``split`` and the
metadata columns ``sex``, ``age``, ``age_band``, ``site`` and ``meta_*`` are optional. Every other
column is a finding (or only the columns named in ``findings=[...]``) holding 1, 0, -1 (uncertain),
blank (not mentioned) or a soft value in [0, 1]. data_manifests/README.md is the full schema.

``validate_manifest`` reports every problem at once (row numbers as a spreadsheet shows them:
the header is row 1); ``read_manifest`` raises ManifestError listing all errors and turns warnings
into ``warnings.warn``. Both go through :func:`load_manifest`, which reads in this order: the file (exists,
size cap, gzip, encoding, CSV structure; chestxr/data/_manifest_file.py), the header (names, duplicates,
required and finding columns), then the columns (path, patient_id, study_id, view, split, age, labels;
chestxr/data/_manifest_checks.py), collecting every problem. Everything is vectorized: string columns are
factorized and only their unique values inspected in Python; file existence is checked with one directory
listing per unique folder, so a million rows take seconds. The types are in chestxr/data/_schema.py.

``write_manifest`` writes a manifest back (paths relative to its folder, formulas escaped);
``relative_paths`` is the one rule for "a path relative to the manifest's folder"; ``manifest_hash`` is
what a manifest means for training and evaluation.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import pandas as pd

from chestxr.core import TRIGGERS, ManifestError, escape_cell, unescape_cell, write_with_atomic
from chestxr.data._findings import match_findings
from chestxr.data._manifest_checks import (
    check_column_names,
    check_id_columns,
    check_labels,
    check_path_column,
    check_required_columns,
    check_split,
    finding_columns,
    normalized,
    other_columns,
)
from chestxr.data._manifest_file import (
    LongCell,
    field_counts,
    has_padding,
    max_cell_chars,
    parse_cells,
    read_bytes,
    unescape_formula_cells,
)
from chestxr.data._schema import (
    CORE_COLUMNS,
    LATERAL_VIEWS,
    Collector,
    Manifest,
    Problem,
    ValidationResult,
    is_metadata_column,
    normalize_view,
)


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
    names = [unescape_cell(h.strip()) for h in header]  # chestxr/core/_csvsafe.py: '=x (written escaped) is =x
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


def validate_manifest(
    path: Union[str, Path], *, findings: Optional[Sequence[str]] = None, check_paths: bool = True
) -> ValidationResult:
    """Check a manifest file and return every error and warning (nothing is raised for bad content)."""
    result, _ = load_manifest(path, findings=findings, check_paths=check_paths)
    return result


def read_manifest(
    path: Union[str, Path],
    *,
    findings: Optional[Sequence[str]] = None,
    views: Optional[Sequence[str]] = None,
    check_paths: bool = True,
) -> Manifest:
    """Read and validate a manifest CSV (also .csv.gz).

    Raises ManifestError listing every error; warnings go through ``warnings.warn``.
    ``findings``: use only these finding columns (aliases accepted, renamed to the given spelling);
    None = every non-metadata column. ``views``: keep only these views ("frontal" = PA, AP and
    AP_*/PA_* variants; "lateral" = LATERAL, LL, RL, ...), applied after validation.
    """
    result, manifest = load_manifest(path, findings=findings, check_paths=check_paths)
    if result.errors or manifest is None:
        raise ManifestError(path, result.errors or [Problem(None, None, None, "cannot be read")])
    for w in result.warnings:
        warnings.warn(f"{path}: {w}", stacklevel=2)
    if views is not None:
        manifest = filter_views(manifest, views)
    return manifest


def expand_views(views: Sequence[str], present: Sequence[str]) -> set[str]:
    """The set of view codes ``views`` selects among ``present`` ("frontal"/"lateral" expanded)."""
    wanted: set[str] = set()
    for v in views:
        code = normalize_view(v)
        if code == "FRONTAL":
            wanted |= {p for p in present if p in ("PA", "AP", "FRONTAL") or p.startswith(("PA_", "AP_"))}
        elif code == "LATERAL":
            wanted |= {p for p in present if p in LATERAL_VIEWS}
        else:
            wanted.add(code)
    return wanted


def filter_views(manifest: Manifest, views: Sequence[str]) -> Manifest:
    """Only the rows whose view is selected by ``views``; ManifestError when none is left."""
    col = manifest.frame["view"].astype(str)
    present = sorted(set(col.unique()))
    wanted = expand_views(views, present)
    keep = col.isin(wanted).to_numpy()
    if not keep.any():
        raise ManifestError(
            manifest.source,
            [
                Problem(
                    None,
                    "view",
                    None,
                    f"no rows with view in {list(views)}; views present: {present}",
                    fix="choose views that occur in the manifest (data.views), or fill the 'view' column",
                )
            ],
        )
    return replace(manifest, frame=manifest.frame[keep].reset_index(drop=True))


def relative_paths(
    paths: Sequence[str], folder: Union[str, Path], *, outside: Literal["dotdot", "absolute"] = "dotdot"
) -> list[str]:
    """Paths relative to ``folder`` ('/' separated), the one rule for "a path relative to the manifest".

    Absolute paths are made relative as written (symlinks are not resolved, so an image under a linked
    folder keeps the link's name); relative inputs are kept as they are. A path outside ``folder``:
    ``outside="dotdot"`` writes it with '..' (how a manifest is written, so it moves with its images);
    ``outside="absolute"`` keeps it absolute unless it lies inside ``folder`` once both are resolved (how
    predictions name an image, so an image outside the manifest's folder is never given a '..' name).
    Vectorized over unique directories: a million rows cost one relpath per directory.
    """
    folder = os.path.abspath(folder)
    cache: dict[str, Optional[str]] = {}
    out = []
    for p in paths:
        if not p.startswith("/"):
            out.append(p)
            continue
        d, _, name = p.rpartition("/")
        if d not in cache:
            cache[d] = _relative_dir(d or "/", folder, outside)
        rel = cache[d]
        out.append(p if rel is None else name if rel == "." else f"{rel}/{name}")
    return out


def _relative_dir(d: str, folder: str, outside: str) -> Optional[str]:
    """``d`` relative to ``folder`` ('/' separated); None when it is outside and ``outside`` is "absolute"."""
    if outside == "dotdot":
        return os.path.relpath(d, folder).replace(os.sep, "/")
    for a, b in ((d, folder), (str(Path(d).resolve()), str(Path(folder).resolve()))):
        if a == b or a.startswith(b.rstrip("/") + "/"):
            return os.path.relpath(a, b).replace(os.sep, "/")
    return None


def manifest_hash(manifest: Manifest) -> str:
    """Stable sha256 (hex) of what a manifest means for training and evaluation.

    Covers the finding names, and per image (sorted by path): the path relative to the manifest's
    folder, the patient id and the labels. Row order, metadata, views and splits do not count, so
    moving a manifest together with its images keeps its hash.
    """
    frame = manifest.frame
    rel = np.array(relative_paths(frame["path"].astype(str).tolist(), manifest.folder), dtype=object)
    order = np.argsort(rel, kind="stable")
    h = hashlib.sha256(b"chestxr-manifest-v1\0")
    h.update("\x1f".join(manifest.findings).encode() + b"\0")
    h.update("\n".join(rel[order]).encode() + b"\0")
    pids = frame["patient_id"].astype(str).to_numpy(dtype=object)[order]
    h.update("\n".join(pids).encode() + b"\0")
    labels = manifest.labels()[order]
    labels = np.where(np.isnan(labels), -2.0, labels).astype("<f8")
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def write_manifest(manifest_or_frame: Union[Manifest, pd.DataFrame], path: Union[str, Path]) -> Path:
    """Write a manifest CSV atomically (UTF-8, '\\n' line ends); returns the path written.

    Absolute image paths are written relative to the destination folder ('..' allowed);
    relative paths are written unchanged. Labels are written as 1/0/-1/blank (soft values with
    up to 10 significant digits). Empty ``view``/``split`` columns are left out.
    """
    path = Path(path)
    frame = manifest_or_frame.frame if isinstance(manifest_or_frame, Manifest) else manifest_or_frame
    if "path" not in frame.columns:
        raise ManifestError(path, [Problem(None, "path", None, "cannot write a manifest without a 'path' column")])
    out = frame.copy()
    out["path"] = relative_paths(out["path"].astype(str).tolist(), path.parent.absolute())
    for col in ("view", "split"):
        if col in out.columns and (out[col].astype(str) == "").all():
            out = out.drop(columns=col)
    first = [c for c in CORE_COLUMNS if c in out.columns]
    out = out[first + [c for c in out.columns if c not in first]]
    header = ",".join(_quote(escape_cell(str(c))) for c in out.columns) + "\n"

    def writer(tmp: str, chunk: int = 100_000) -> None:  # chunked: memory stays flat for big manifests
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(header)
            for lo in range(0, len(out), chunk):
                part = out.iloc[lo : lo + chunk]
                columns = [_csv_cells(part[c]) for c in part.columns]
                fh.write("\n".join(",".join(row) for row in zip(*columns)) + "\n")

    write_with_atomic(path, writer)
    return path


_NEEDS_QUOTE = re.compile(r'[,"\n\r]')


def _quote(text: str) -> str:
    if _NEEDS_QUOTE.search(text) or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_cells(series: pd.Series) -> list[str]:
    """One column as CSV cells: numbers via format_numbers, text quoted where needed."""
    if pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype):
        return format_numbers(series.to_numpy(dtype=np.float64)).tolist()
    values = series.fillna("").astype(str).tolist()
    if any(v[:1] in ("'", *TRIGGERS) for v in values):  # spreadsheet formulas -> text (chestxr/core/_csvsafe.py)
        values = [escape_cell(v) for v in values]
    joined = "\x00" + "\x00".join(values) + "\x00"
    if any(ch in joined for ch in ',"\n\r') or any(p in joined for p in (" \x00", "\x00 ", "\t\x00", "\x00\t")):
        values = [_quote(v) for v in values]
    return values


def format_numbers(values: np.ndarray) -> np.ndarray:
    """float64 (n,) -> str (n,): '1', '0', '-1', '' for NaN, '0.35' (up to 10 significant digits).

    Only unique values are formatted, so label columns of a million rows take milliseconds.
    """
    codes, uniq = pd.factorize(np.asarray(values, dtype=np.float64), use_na_sentinel=True)
    text = np.array([f"{u:.10g}" for u in uniq] + [""], dtype=object)  # code -1 (NaN) -> ""
    return text[codes]
