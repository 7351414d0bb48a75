"""Manifest checks of identifiers: patient IDs written in several ways, study IDs shared by patients.

Both are warnings of ``validate_manifest`` / ``chestxr manifest validate``. ``col`` is the reader's
problem collector (anything with ``add(level, Problem)``); ``pid``, ``sid`` (n,) object arrays of the
cells, ``rows`` (n,) spreadsheet row numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from chestxr.core.patient_ids import normalize_ids
from chestxr.data.schema import MAX_LISTED, Problem


def check_id_spellings(pid: np.ndarray, rows: np.ndarray, col: Any) -> None:
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


def check_shared_studies(pid: np.ndarray, sid: np.ndarray, rows: np.ndarray, col: Any) -> None:
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
