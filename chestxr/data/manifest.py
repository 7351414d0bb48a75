"""Read, validate and write manifests: the CSV contract between hospitals and chestxr.

One row per image. ``path`` (required) is relative to the manifest's folder or absolute;
``patient_id`` is needed for patient-level splits; ``study_id``, ``view``, ``split`` and the
metadata columns ``sex``, ``age``, ``age_band``, ``site`` and ``meta_*`` are optional. Every other
column is a finding (or only the columns named in ``findings=[...]``) holding 1, 0, -1 (uncertain),
blank (not mentioned) or a soft value in [0, 1]. data_manifests/README.md is the full schema.

``validate_manifest`` reports every problem at once (row numbers as a spreadsheet shows them:
the header is row 1); ``read_manifest`` raises ManifestError listing all errors and turns warnings
into ``warnings.warn``. Checks are vectorized (pandas/numpy) so a million rows take seconds; the
row-level checks live in chestxr/data/manifest_reader.py (orchestration), manifest_file.py,
manifest_header.py and manifest_columns.py; the types in chestxr/data/schema.py.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from chestxr.core.csvsafe import TRIGGERS, escape_cell
from chestxr.core.errors import ManifestError
from chestxr.data.manifest_reader import load_manifest
from chestxr.data.schema import (
    CORE_COLUMNS,
    LATERAL_VIEWS,
    MAX_LISTED,
    META_COLUMNS,
    SPLIT_ALIASES,
    SPLITS,
    Manifest,
    Problem,
    ValidationResult,
    is_metadata_column,
    normalize_view,
)

# The schema's names stay importable from here (chestxr.data.manifest is the facade users read).
__all__ = [
    "CORE_COLUMNS",
    "LATERAL_VIEWS",
    "MAX_LISTED",
    "META_COLUMNS",
    "SPLIT_ALIASES",
    "SPLITS",
    "Manifest",
    "Problem",
    "ValidationResult",
    "is_metadata_column",
    "normalize_view",
    "validate_manifest",
    "read_manifest",
    "expand_views",
    "filter_views",
    "relative_paths",
    "manifest_hash",
    "write_manifest",
    "format_numbers",
]


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


def relative_paths(paths: Sequence[str], folder: Union[str, Path]) -> list[str]:
    """Paths relative to ``folder`` ('/' separated, '..' where needed); relative inputs are kept.

    Vectorized over unique directories, so a million rows cost one relpath per directory.
    """
    folder = os.path.abspath(folder)
    cache: dict[str, str] = {}
    out = []
    for p in paths:
        if not p.startswith("/"):
            out.append(p)
            continue
        d, _, name = p.rpartition("/")
        rel = cache.get(d)
        if rel is None:
            rel = os.path.relpath(d or "/", folder).replace(os.sep, "/")
            cache[d] = rel
        out.append(name if rel == "." else f"{rel}/{name}")
    return out


def manifest_hash(manifest: Manifest) -> str:
    """Stable sha256 (hex) of what a manifest means for training and evaluation.

    Covers the finding names, and per image (sorted by path): the path relative to the manifest's
    folder, the patient id and the labels. Row order, metadata, views and splits do not count, so
    moving a manifest together with its images keeps its hash.
    """
    import hashlib

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
    from chestxr.core.fileio import write_with_atomic

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
    if any(v[:1] in ("'", *TRIGGERS) for v in values):  # spreadsheet formulas -> text (chestxr.core.csvsafe)
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
