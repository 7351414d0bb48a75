"""Manifest header checks: column names (empty, duplicated), required columns, which columns are findings.

Each function adds its problems to the reader's collector (chestxr/data/problem_collector.py); ``canon`` is the
header with metadata names lower-cased, ``final`` the kept column names (first of duplicates kept).
"""

from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd

from chestxr.data.findings import match_findings
from chestxr.data.problem_collector import Collector
from chestxr.data.schema import Problem, is_metadata_column

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
