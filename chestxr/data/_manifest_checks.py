"""The checks a manifest's columns must pass: header (column names, required columns, which columns are
findings), image paths, patient and study IDs (blank, written in several ways, shared by patients), splits
(values, a patient in two splits), age and other columns, finding labels.

Every check reads the parsed frame (n rows, text cells; label columns may be float64), adds its problems to
the reader's collector (``Collector``, chestxr/data/_schema.py) and returns (n,) arrays. ``canon`` is the header with
metadata names lower-cased, ``final`` the kept column names (first of duplicates kept), ``rows`` the (n,)
spreadsheet row number of each record. String columns are factorized and only their unique values inspected in
Python; file existence is checked with one directory listing per unique folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from chestxr.core import normalize_ids
from chestxr.data._findings import match_findings
from chestxr.data._manifest_file import parse_cells
from chestxr.data._schema import MAX_LISTED, SPLIT_ALIASES, SPLITS, Collector, Problem, is_metadata_column

CONVERT_HINT = {"Image Index": "nih", "Finding Labels": "nih", "Path": "chexpert", "dicom_id": "mimic"}


def column_letter(i: int) -> str:
    """Spreadsheet column letter of 0-based column i (0 -> A, 26 -> AA)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def check_column_names(frame: pd.DataFrame, canon: list[str], col: Collector) -> tuple[list[int], list[str]]:
    """(indices of the kept columns, their names): unnamed columns dropped (an error when they hold values),
    duplicate names reported and only the first kept."""
    keep_idx: list[int] = []
    final: list[str] = []
    for i, name in enumerate(canon):
        if name == "":
            if all(not str(v).strip() for v in frame[i].unique()):
                col.add(
                    "warning",
                    Problem(
                        1,
                        column_letter(i),
                        None,
                        f"column {column_letter(i)} has no name and no values; ignored",
                        "remove the trailing comma(s) or the empty column",
                        "unnamed_column",
                    ),
                )
            else:
                col.add(
                    "error",
                    Problem(
                        1,
                        column_letter(i),
                        None,
                        f"column {column_letter(i)} has values but no name",
                        "name it (a finding, or meta_<name> for metadata)",
                        "unnamed_column",
                    ),
                )
        elif name not in final:
            final.append(name)
            keep_idx.append(i)
            where = [column_letter(j) for j, n in enumerate(canon) if n == name]
            if len(where) > 1:
                col.add(
                    "error",
                    Problem(
                        1,
                        name,
                        None,
                        f"column name appears {len(where)} times (columns {', '.join(where)})",
                        "rename or remove the duplicate columns",
                        "duplicate_column",
                    ),
                )
    return keep_idx, final


def check_required_columns(final: list[str], col: Collector) -> None:
    """Error when 'path' is missing (naming the converter when it looks like NIH/CheXpert/MIMIC); warning
    when 'patient_id' is."""
    if "path" not in final:
        kinds = sorted({CONVERT_HINT[c] for c in final if c in CONVERT_HINT})
        fix = (
            f"this looks like a {kinds[0]} label table: run `chestxr manifest convert --from {kinds[0]} ...`"
            if kinds
            else "add a 'path' column with each image's file (relative to the manifest's folder)"
        )
        col.add("error", Problem(1, "path", None, "required column 'path' is missing", fix, "missing_column"))
    if "patient_id" not in final:
        col.add(
            "warning",
            Problem(
                1,
                "patient_id",
                None,
                "no patient_id column: splits cannot be made by patient and leakage between splits cannot be checked",
                "add a patient_id column",
                "missing_column",
            ),
        )


def finding_columns(final: list[str], findings: Optional[Sequence[str]], col: Collector) -> dict[str, str]:
    """{finding name: its column}: the requested findings matched to columns (errors for missing ones), or
    every non-metadata column when none are requested."""
    candidates = [c for c in final if not is_metadata_column(c)]
    if findings is not None:
        matched = match_findings(candidates, list(findings))
        for req, c in matched.items():
            if c is None:
                col.add(
                    "error",
                    Problem(
                        1,
                        req,
                        None,
                        f"finding column {req!r} not found",
                        f"finding columns present: {candidates}",
                        "missing_finding",
                    ),
                )
        finding_cols = {req: c for req, c in matched.items() if c is not None}
    else:
        finding_cols = {c: c for c in candidates}
    if not finding_cols and findings is None:
        col.add(
            "warning",
            Problem(
                1,
                None,
                None,
                "no finding columns: usable for prediction only",
                "add one column per finding for training or evaluation",
                "no_findings",
            ),
        )
    return finding_cols


NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
ODD_PATH = re.compile(r"/\.{1,2}(?:/|$)|//")


def parse_age(text: str) -> float:
    """'63' -> 63.0, NIH's '058Y' -> 58.0, anything else NaN."""
    t = text.strip()
    t = t[:-1] if t[-1:] in ("Y", "y") else t
    return float(t) if NUMBER.match(t) else float("nan")


def existing_files(paths: list[str]) -> np.ndarray:
    """bool per path: is it an existing file? One directory scan per unique folder."""
    listing: dict[str, set[str]] = {}
    out = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        d, _, name = p.rpartition("/")
        names = listing.get(d)
        if names is None:
            try:
                with os.scandir(d or "/") as it:
                    names = {e.name for e in it if e.is_file()}
            except OSError:
                names = set()
            listing[d] = names
        out[i] = name in names
    return out


def parse_labels(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 labels, bool invalid) from label strings (only unique strings are parsed) or floats."""
    if pd.api.types.is_float_dtype(values.dtype):
        x = values.to_numpy(dtype=np.float64) + 0.0  # -0.0 -> 0.0
        ok = np.isnan(x) | (x == -1.0) | ((x >= 0.0) & (x <= 1.0))
        return np.where(ok, x, np.nan), ~ok
    codes, uniq = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    vals = np.full(len(uniq), np.nan)
    bad = np.zeros(len(uniq), dtype=bool)
    for k, u in enumerate(uniq):
        t = str(u).strip()
        if t == "":
            continue
        if NUMBER.match(t):
            x = float(t)
            if x == -1.0 or 0.0 <= x <= 1.0:
                vals[k] = x + 0.0  # -0.0 -> 0.0
                continue
        bad[k] = True
    return vals[codes], bad[codes]


def normalized(values: pd.Series, fn: Callable[[str], Any]) -> np.ndarray:
    """fn applied to each unique value (values factorized first): object array."""
    codes, uniq = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    mapped = np.empty(max(len(uniq), 1), dtype=object)
    mapped[: len(uniq)] = [fn(str(u)) for u in uniq]
    return mapped[codes]


def column_cells(frame: pd.DataFrame, name: str, strip: bool) -> np.ndarray:
    """A column as an object array of str, stripped when the file has spaces next to separators."""
    values = frame[name].to_numpy(dtype=object)
    if not strip:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = [v.strip() for v in values]
    return out


def check_path_column(
    frame: pd.DataFrame, rows: np.ndarray, raw: bytes, source: Path, strip: bool, check_paths: bool, col: Collector
) -> tuple[np.ndarray, np.ndarray]:
    """(paths as written with '/' separators, resolved absolute paths): blank, duplicate and (with check_paths)
    missing files reported; relative paths are relative to the manifest's folder (``source.parent``)."""
    n = len(frame)
    written = column_cells(frame, "path", strip)
    if b"\\" in raw:
        written = np.array([v.replace("\\", "/") for v in written] + [None], dtype=object)[:-1]
    blank = written == ""
    if blank.any():
        col.rows(
            "error",
            "blank_path",
            "path",
            rows[blank],
            [""] * int(blank.sum()),
            lambda i, v: "no image path",
            "fill in the image file for every row or remove the row",
        )
    folder = str(source.parent).rstrip("/") + "/"
    resolved = np.empty(n, dtype=object)
    resolved[:] = [v if v.startswith("/") else folder + v for v in written]
    if b"./" in raw or b"//" in raw or b"/.," in raw or b"/.\n" in raw:  # './', '../', '//' somewhere
        odd = np.flatnonzero([bool(ODD_PATH.search(v)) for v in resolved])
        for k in odd:
            resolved[k] = os.path.normpath(resolved[k])
    codes, uniq = pd.factorize(resolved)
    _, first = np.unique(codes, return_index=True)
    dup = (first[codes] != np.arange(n)) & ~blank
    if dup.any():
        firsts = rows[first[codes[dup]]]
        col.rows(
            "error",
            "duplicate_path",
            "path",
            rows[dup],
            written[dup],
            lambda i, v: f"same image as row {firsts[i]}",
            "list each image once",
        )
    if check_paths:
        exists = existing_files(list(uniq))[codes]
        missing = ~exists & ~blank
        if missing.any():
            missing_resolved = resolved[missing]
            col.rows(
                "error",
                "missing_file",
                "path",
                rows[missing],
                written[missing],
                lambda i, v: f"file not found: {missing_resolved[i]}",
                f"paths are relative to the manifest's folder ({folder.rstrip('/')}) or absolute; fix the "
                "path, or pass --no-check-paths if the images live elsewhere for now",
            )
    return written, resolved


def check_id_columns(
    frame: pd.DataFrame, final: list[str], rows: np.ndarray, written: np.ndarray, strip: bool, col: Collector
) -> dict[str, np.ndarray]:
    """{"patient_id", "study_id"}: blank IDs reported (a blank study_id becomes the image's path), IDs spelled
    several ways and studies shared by patients warned about."""
    n = len(frame)
    out: dict[str, np.ndarray] = {}
    if "patient_id" in final:
        pid = column_cells(frame, "patient_id", strip)
        blank = pid == ""
        if blank.any():
            col.rows(
                "error",
                "blank_patient_id",
                "patient_id",
                rows[blank],
                [""] * int(blank.sum()),
                lambda i, v: "no patient_id",
                "fill in every row's patient_id",
            )
        out["patient_id"] = pid
    else:
        out["patient_id"] = np.full(n, "", dtype=object)
    if "study_id" in final:
        sid = column_cells(frame, "study_id", strip)
        blank = sid == ""
        if blank.any():
            col.add(
                "warning",
                Problem(
                    int(rows[blank][0]),
                    "study_id",
                    "",
                    f"{int(blank.sum())} row(s) have no "
                    "study_id; each such image is its own study (study_id = its path)",
                    "fill in study_id to group the images of one study",
                    "blank_study_id",
                ),
            )
            sid = np.where(blank, written, sid)
        out["study_id"] = sid
    else:
        out["study_id"] = written.copy()
    if "patient_id" in final:
        check_id_spellings(out["patient_id"], rows, col)
        if "study_id" in final:
            check_shared_studies(out["patient_id"], out["study_id"], rows, col)
    return out


def check_split(frame: pd.DataFrame, rows: np.ndarray, pid: np.ndarray, has_pid: bool, col: Collector) -> np.ndarray:
    """Normalized split per row ("" when the column is absent or empty); errors for bad values/leaks."""
    n = len(frame)
    if "split" not in frame.columns:
        return np.full(n, "", dtype=object)
    raw = frame["split"].to_numpy(dtype=object)
    split = normalized(frame["split"], lambda s: SPLIT_ALIASES.get(s.strip().lower(), s.strip().lower()))
    blank = split == ""
    if blank.all():
        return split
    unknown = ~np.isin(split, list(SPLITS)) & ~blank
    if unknown.any():
        col.rows(
            "error",
            "unknown_split",
            "split",
            rows[unknown],
            raw[unknown],
            lambda i, v: "unknown split name",
            "use train, val or test (valid/validation mean val)",
        )
    if blank.any():
        col.rows(
            "error",
            "blank_split",
            "split",
            rows[blank],
            [""] * int(blank.sum()),
            lambda i, v: "no split while other rows have one",
            "fill in every row's split, or drop the column and run `chestxr manifest split`",
        )
    ok = ~unknown & ~blank
    if has_pid and ok.any():
        # IDs compared trimmed + case-folded (chestxr.core.normalize_id): "P1" and "p1 " are one patient
        sub = pd.DataFrame({"pid": normalize_ids(pid[ok]), "split": split[ok], "row": rows[ok]})
        firsts = sub.groupby(["pid", "split"], sort=False)["row"].min().reset_index()
        n_splits = firsts.groupby("pid", sort=False)["split"].transform("size")
        leak = firsts[n_splits > 1].sort_values(["pid", "row"])
        groups = list(leak.groupby("pid", sort=False))
        for k, (p, g) in enumerate(groups):
            if k == MAX_LISTED:
                col.add(
                    "error",
                    Problem(
                        None,
                        "split",
                        None,
                        f"... and {len(groups) - MAX_LISTED} more patient(s) in more than one split",
                        "",
                        "patient_in_two_splits",
                    ),
                )
                break
            parts = ", ".join(f"{s} (row {r})" for s, r in zip(g["split"], g["row"]))
            col.add(
                "error",
                Problem(
                    int(g["row"].iloc[1]),
                    "split",
                    str(g["split"].iloc[1]),
                    f"patient {p!r} is in more than one split: {parts}",
                    "put all of a patient's images in one split (`chestxr manifest split` does)",
                    "patient_in_two_splits",
                ),
            )
    return split


def other_columns(
    frame: pd.DataFrame,
    final: list[str],
    finding_cols: dict[str, str],
    rows: np.ndarray,
    strip: bool,
    col: Collector,
) -> dict[str, np.ndarray]:
    """The remaining columns (metadata, unrequested findings): age as float64 (warnings for non-numbers), the
    rest as text."""
    out: dict[str, np.ndarray] = {}
    for c in final:
        if c in ("path", "patient_id", "study_id", "view", "split") or c in finding_cols.values():
            continue
        if c == "age":
            text = normalized(frame[c], str.strip)
            age = normalized(frame[c], parse_age).astype(np.float64)
            bad = np.isnan(age) & (text != "")
            if bad.any():
                col.rows(
                    "warning",
                    "invalid_age",
                    "age",
                    rows[bad],
                    text[bad],
                    lambda i, v: "age is not a number (read as blank)",
                    "write the age in years, e.g. 63",
                )
            out["age"] = age
        else:
            out[c] = normalized(frame[c], str.strip) if strip else frame[c].to_numpy(dtype=object)
    return out


def check_labels(
    frame: pd.DataFrame,
    finding_cols: dict[str, str],
    rows: np.ndarray,
    raw: bytes,
    ncol: int,
    keep_idx: list[int],
    final: list[str],
    col: Collector,
) -> dict[str, np.ndarray]:
    """{finding name: (n,) float64 labels}: invalid cells are errors (shown as written in ``raw``, ``ncol`` fields per record), findings
    without positives or without negatives are warnings."""
    n = len(frame)
    out: dict[str, np.ndarray] = {}
    for name, c in finding_cols.items():
        vals, bad = parse_labels(frame[c])
        if bad.any():
            text = frame[c].to_numpy(dtype=object)
            if pd.api.types.is_float_dtype(frame[c].dtype):  # show the cells as written
                text = parse_cells(raw, ncol, n, False)[keep_idx[final.index(c)]].to_numpy(dtype=object)
            col.rows(
                "error",
                "invalid_label",
                c,
                rows[bad],
                text[bad],
                lambda i, v: "not a label value",
                "use 1 (positive), 0 (negative), -1 (uncertain), blank (not mentioned) or a number in [0, 1]",
            )
        if not (vals >= 0.5).any():
            col.add(
                "warning",
                Problem(
                    None,
                    c,
                    None,
                    "no positive labels (1 or >= 0.5) in any row: this finding "
                    "cannot be learned and its AUROC is undefined",
                    "add positive cases or leave the finding out",
                    "no_positives",
                ),
            )
        if not ((vals >= 0) & (vals < 0.5)).any():
            col.add(
                "warning",
                Problem(
                    None,
                    c,
                    None,
                    "no negative labels (0 or < 0.5) in any row",
                    "add negative cases, or use labels.blank: zeros if blank means negative",
                    "no_negatives",
                ),
            )
        out[name] = vals
    return out


def check_id_spellings(pid: np.ndarray, rows: np.ndarray, col: Collector) -> None:
    """Warn about patient IDs that differ only by letter case or surrounding whitespace: chestxr compares
    IDs trimmed and case-folded (splits, overlap checks, bootstrap clusters), so they are one patient."""
    frame = pd.DataFrame({"raw": pid, "norm": normalize_ids(pid), "row": rows})
    frame = frame[frame["raw"] != ""]
    spellings = frame.groupby("norm", sort=False)["raw"].nunique()
    clashes = spellings[spellings > 1].index.tolist()
    for k, norm in enumerate(clashes):
        if k == MAX_LISTED:
            col.add(
                "warning",
                Problem(
                    None,
                    "patient_id",
                    None,
                    f"... and {len(clashes) - MAX_LISTED} more patient ID(s) written in several ways",
                    "",
                    "patient_id_spelling",
                ),
            )
            break
        g = frame[frame["norm"] == norm].drop_duplicates("raw")
        col.add(
            "warning",
            Problem(
                int(g["row"].iloc[1]),
                "patient_id",
                str(g["raw"].iloc[1]),
                "patient IDs "
                + ", ".join(f"{r!r} (row {w})" for r, w in zip(g["raw"], g["row"]))
                + " differ only by case or whitespace; chestxr treats them as one patient",
                "write each patient's ID the same way in every row",
                "patient_id_spelling",
            ),
        )


def check_shared_studies(pid: np.ndarray, sid: np.ndarray, rows: np.ndarray, col: Collector) -> None:
    """Warn about a study_id used by several patients: studies are keyed by (patient, study), so each
    patient keeps its own study, but a reused ID usually means a broken export."""
    frame = pd.DataFrame({"pid": normalize_ids(pid), "sid": sid, "row": rows})
    counts = frame.groupby("sid", sort=False)["pid"].nunique()
    shared = counts[counts > 1].index.tolist()
    for k, study in enumerate(shared):
        if k == MAX_LISTED:
            col.add(
                "warning",
                Problem(
                    None,
                    "study_id",
                    None,
                    f"... and {len(shared) - MAX_LISTED} more study_id(s) shared by several patients",
                    "",
                    "study_shared_by_patients",
                ),
            )
            break
        g = frame[frame["sid"] == study]
        col.add(
            "warning",
            Problem(
                int(g["row"].iloc[0]),
                "study_id",
                str(study),
                f"study_id {study!r} is used by {int(counts[study])} patients ({len(g)} rows); chestxr keeps one "
                "study per (patient, study_id), so they stay separate studies",
                "give each study its own ID (e.g. the accession number or StudyInstanceUID)",
                "study_shared_by_patients",
            ),
        )
