"""The manifest schema as types: column names, splits, ``Problem``, ``ValidationResult``, ``Manifest``.

Kept apart from the reader (chestxr/data/_manifest.py) and the facade (chestxr/data/_manifest.py)
so that the reader, its checks and the finding vocabularies all import the types from here, downward,
with no cycle. :class:`Collector` gathers a manifest's problems into a :class:`ValidationResult` (every
problem, at most MAX_LISTED listed one by one per kind and column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

META_COLUMNS = ("path", "patient_id", "study_id", "view", "split", "sex", "age", "age_band", "site")
CORE_COLUMNS = ("path", "patient_id", "study_id", "view", "split")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}
#: Frontal views ("frontal" shorthand): PA, AP and their variants (AP_SUPINE, PA_LLD, ...).
LATERAL_VIEWS = ("LATERAL", "LL", "RL", "XTABLE_LATERAL", "LAT")
#: At most this many problems of one kind in one column are listed one by one; the rest are counted.
MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One problem in a manifest. row: 1-based spreadsheet row (header = 1), None for the file or a column."""

    row: Optional[int]
    column: Optional[str]
    value: Optional[str]
    message: str
    fix: str = ""
    kind: str = ""

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.value is not None:
            where.append(f"value {self.value!r}")
        head = ", ".join(where)
        text = f"{head}: {self.message}" if head else self.message
        return f"{text} (fix: {self.fix})" if self.fix else text


@dataclass
class ValidationResult:
    """Every error (the manifest cannot be used) and warning (it can, but look) found."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Manifest:
    """A validated manifest.

    frame: one row per image (RangeIndex): ``path`` (absolute), ``patient_id``, ``study_id``,
    ``view`` (upper case, "" when absent), ``split`` ("train"/"val"/"test", "" when absent) and
    the metadata columns, all object columns of Python str (``age``: float64, NaN unknown), then
    one float64 column per finding (NaN blank, -1.0 uncertain, else in [0, 1]).
    findings: the finding column names in order. source: the manifest file (absolute).
    """

    frame: pd.DataFrame
    findings: list[str]
    source: Path

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def folder(self) -> Path:
        """The folder relative paths are resolved against."""
        return Path(self.source).parent

    def labels(self) -> np.ndarray:
        """float64 (n_images, n_findings): NaN blank, -1 uncertain, values in [0, 1]."""
        if not self.findings:
            return np.zeros((len(self.frame), 0), dtype=np.float64)
        return self.frame[self.findings].to_numpy(dtype=np.float64, na_value=np.nan)


def normalize_view(value: str) -> str:
    """'ap axial' -> 'AP_AXIAL', 'Lateral' -> 'LATERAL' (upper case, spaces/hyphens as '_')."""
    return re.sub(r"[\s\-]+", "_", str(value).strip()).upper()


def is_metadata_column(name: str) -> bool:
    """True for the schema's metadata names (any case) and any ``meta_*`` column."""
    low = str(name).strip().lower()
    return low in META_COLUMNS or low.startswith("meta_")


class Collector:
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
