"""The manifest checks behind ``validate_manifest``/``read_manifest`` (see chestxr/manifest.py).

Order: file (exists, gzip, encoding), structure (header names, duplicate columns, field counts
per row), then columns (path, patient_id, study_id, view, split, findings, age), collecting every
problem. Everything is vectorized: string columns are factorized and only their unique values are
inspected in Python; file existence is checked with one directory listing per unique folder.

Encoding: UTF-8 with or without BOM is accepted (CRLF and CR line ends too). Anything else is an
error naming the first bad byte and its offset; there is no silent latin-1 fallback, because a
wrongly decoded path or patient id would silently point at the wrong file or patient.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from chestxr.core.csvsafe import unescape_cell
from chestxr.core.patient_ids import normalize_id
from chestxr.data.findings import match_findings
from chestxr.data.id_checks import check_id_spellings, check_shared_studies
from chestxr.data.limits import ManifestTooLarge, csv_field_limit, long_cell_rows, max_cell_chars, read_capped
from chestxr.data.schema import (
    MAX_LISTED,
    SPLIT_ALIASES,
    SPLITS,
    Manifest,
    Problem,
    ValidationResult,
    is_metadata_column,
    normalize_view,
)

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_ODD_PATH = re.compile(r"/\.{1,2}(?:/|$)|//")


def _age(text: str) -> float:
    """'63' -> 63.0, NIH's '058Y' -> 58.0, anything else NaN."""
    t = text.strip()
    t = t[:-1] if t[-1:] in ("Y", "y") else t
    return float(t) if _NUMBER.match(t) else float("nan")


_CONVERT_HINT = {"Image Index": "nih", "Finding Labels": "nih", "Path": "chexpert", "dicom_id": "mimic"}


class _Collector:
    """Collects problems, listing at most MAX_LISTED per (kind, column) and counting the rest."""

    def __init__(self) -> None:
        self.result = ValidationResult()

    def add(self, level: str, problem: Problem) -> None:
        (self.result.errors if level == "error" else self.result.warnings).append(problem)

    def rows(
        self,
        level: str,
        kind: str,
        column: Optional[str],
        rows: np.ndarray,
        values: Optional[Sequence[str]],
        message: Callable[[int, str], str],
        fix: str,
    ) -> None:
        """One problem per row (rows: spreadsheet row numbers), the ones past MAX_LISTED summarized."""
        n = len(rows)
        for i in range(min(n, MAX_LISTED)):
            value = None if values is None else str(values[i])
            self.add(level, Problem(int(rows[i]), column, value, message(i, value or ""), fix, kind))
        if n > MAX_LISTED:
            sample = ", ".join(str(int(r)) for r in rows[MAX_LISTED : MAX_LISTED + 5])
            self.add(
                level,
                Problem(
                    None,
                    column,
                    None,
                    f"... and {n - MAX_LISTED} more row(s) with the same problem ({kind}), e.g. rows {sample}",
                    fix,
                    kind,
                ),
            )


def _read_bytes(path: Path, col: _Collector) -> Optional[bytes]:
    if not path.exists():
        col.add("error", Problem(None, None, None, f"manifest file {path} not found", "check the path", "file"))
        return None
    if path.is_dir():
        col.add("error", Problem(None, None, None, f"{path} is a folder, not a CSV file", "pass the CSV file", "file"))
        return None
    try:
        raw = read_capped(path)  # gunzipped in chunks, at most CHESTXR_MAX_MANIFEST_BYTES (chestxr.data.limits)
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


class _LongCell(Exception):
    """A cell longer than CHESTXR_MAX_CELL_CHARS; ``row`` is its spreadsheet row."""

    def __init__(self, row: int) -> None:
        super().__init__(row)
        self.row = row


def _field_counts(raw: bytes) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(header, number of fields per data record, spreadsheet row number per record); blank lines skipped.

    Raises _LongCell for a cell longer than the cell cap (chestxr.data.limits.max_cell_chars)."""
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
                raise _LongCell(long_rows[0])
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
            raise _LongCell(prev + 1) from None
    return head or [], np.asarray(n_fields, dtype=np.int64), np.asarray(row_numbers, dtype=np.int64)


def _letter(i: int) -> str:
    """Spreadsheet column letter of 0-based column i (0 -> A, 26 -> AA)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def _parse(raw: bytes, ncol: int, n_expected: int, ragged: bool, numeric: Sequence[int] = ()) -> pd.DataFrame:
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
    with csv_field_limit(max_cell_chars() + 1):  # _field_counts already refused longer cells
        records = [r for r in reader if r]
    good = [r for r in records[1:] if len(r) == ncol]
    return pd.DataFrame(good, columns=range(ncol), dtype=object)


def _unescape_formula_cells(frame: pd.DataFrame) -> None:
    """In place: text cells written escaped against spreadsheet formulas ('=x, '+1@, see
    chestxr.core.csvsafe) read back as written before escaping (=x, +1@)."""
    for c in frame.columns:
        if not pd.api.types.is_object_dtype(frame[c].dtype):
            continue
        values = frame[c].astype(str)
        hit = values.str.match(r"^'+[=+\-@\t\r]", na=False).to_numpy()
        if hit.any():
            frame.loc[hit, c] = values[hit].str[1:]


def _existing(paths: list[str]) -> np.ndarray:
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
        if _NUMBER.match(t):
            x = float(t)
            if x == -1.0 or 0.0 <= x <= 1.0:
                vals[k] = x + 0.0  # -0.0 -> 0.0
                continue
        bad[k] = True
    return vals[codes], bad[codes]


def _normalized(values: pd.Series, fn: Callable[[str], Any]) -> np.ndarray:
    """fn applied to each unique value (values factorized first): object array."""
    codes, uniq = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    mapped = np.empty(max(len(uniq), 1), dtype=object)
    mapped[: len(uniq)] = [fn(str(u)) for u in uniq]
    return mapped[codes]


def _has_padding(raw: bytes) -> bool:
    """True when some cell may start or end with a space/tab (substring tests run at memchr speed)."""
    if b" " not in raw and b"\t" not in raw:
        return False
    pairs = (b" ,", b", ", b"\t,", b",\t", b" \n", b"\n ", b"\t\n", b"\n\t", b' "', b'" ')
    return raw[:1] in (b" ", b"\t") or raw.rstrip(b"\n")[-1:] in (b" ", b"\t") or any(p in raw for p in pairs)


def _cells(frame: pd.DataFrame, name: str, strip: bool) -> np.ndarray:
    """A column as an object array of str, stripped when the file has spaces next to separators."""
    values = frame[name].to_numpy(dtype=object)
    if not strip:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = [v.strip() for v in values]
    return out


def load_manifest(
    path: Union[str, Path], *, findings: Optional[Sequence[str]] = None, check_paths: bool = True
) -> tuple[ValidationResult, Optional[Manifest]]:
    """Check a manifest; returns (every problem, the Manifest or None when there are errors)."""
    path = Path(path)
    source = Path(os.path.abspath(path))
    col = _Collector()
    raw = _read_bytes(path, col)
    if raw is None:
        return col.result, None
    try:
        header, counts, rows = _field_counts(raw)
    except _LongCell as exc:
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
    frame = _parse(raw, ncol, len(rows), bool(ragged.any()), numeric)
    if b"'" in raw:
        _unescape_formula_cells(frame)
    strip = _has_padding(raw)  # else no cell needs stripping

    # column names: empty, metadata case (lower-cased), duplicates (first one kept)
    keep_idx: list[int] = []
    final: list[str] = []
    for i, name in enumerate(canon):
        if name == "":
            if all(not str(v).strip() for v in frame[i].unique()):
                col.add(
                    "warning",
                    Problem(
                        1,
                        _letter(i),
                        None,
                        f"column {_letter(i)} has no name and no values; ignored",
                        "remove the trailing comma(s) or the empty column",
                        "unnamed_column",
                    ),
                )
            else:
                col.add(
                    "error",
                    Problem(
                        1,
                        _letter(i),
                        None,
                        f"column {_letter(i)} has values but no name",
                        "name it (a finding, or meta_<name> for metadata)",
                        "unnamed_column",
                    ),
                )
        elif name not in final:
            final.append(name)
            keep_idx.append(i)
            where = [_letter(j) for j, n in enumerate(canon) if n == name]
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
    frame = frame[keep_idx]
    frame.columns = final
    n = len(frame)

    if "path" not in final:
        kinds = sorted({_CONVERT_HINT[c] for c in final if c in _CONVERT_HINT})
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

    out: dict[str, Any] = {}
    written = np.full(n, "", dtype=object)
    if "path" in final:
        written = _cells(frame, "path", strip)
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
            odd = np.flatnonzero([bool(_ODD_PATH.search(v)) for v in resolved])
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
            exists = _existing(list(uniq))[codes]
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
        out["path"] = resolved
    if "patient_id" in final:
        pid = _cells(frame, "patient_id", strip)
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
        sid = _cells(frame, "study_id", strip)
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
    out["view"] = _normalized(frame["view"], normalize_view) if "view" in final else np.full(n, "", dtype=object)
    out["split"] = _check_split(frame, rows, out["patient_id"], "patient_id" in final, col)

    for c in final:
        if c in ("path", "patient_id", "study_id", "view", "split") or c in finding_cols.values():
            continue
        if c == "age":
            text = _normalized(frame[c], str.strip)
            age = _normalized(frame[c], _age).astype(np.float64)
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
            out[c] = _normalized(frame[c], str.strip) if strip else frame[c].to_numpy(dtype=object)
    for name, c in finding_cols.items():
        vals, bad = parse_labels(frame[c])
        if bad.any():
            text = frame[c].to_numpy(dtype=object)
            if pd.api.types.is_float_dtype(frame[c].dtype):  # show the cells as written
                text = _parse(raw, ncol, n, False)[keep_idx[final.index(c)]].to_numpy(dtype=object)
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


def _check_split(frame: pd.DataFrame, rows: np.ndarray, pid: np.ndarray, has_pid: bool, col: _Collector) -> np.ndarray:
    """Normalized split per row ("" when the column is absent or empty); errors for bad values/leaks."""
    n = len(frame)
    if "split" not in frame.columns:
        return np.full(n, "", dtype=object)
    raw = frame["split"].to_numpy(dtype=object)
    split = _normalized(frame["split"], lambda s: SPLIT_ALIASES.get(s.strip().lower(), s.strip().lower()))
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
        # IDs compared trimmed + case-folded (chestxr.core.patient_ids.normalize_id): "P1" and "p1 " are one patient
        sub = pd.DataFrame({"pid": [normalize_id(p) for p in pid[ok]], "split": split[ok], "row": rows[ok]})
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
