"""The manifest reader's problem collector: every problem of a manifest, at most MAX_LISTED listed per kind.

Shared by the file-level reading (chestxr/data/manifest_file.py), the header and column checks
(chestxr/data/manifest_header.py, chestxr/data/manifest_columns.py) and the ID checks (chestxr/data/id_checks.py).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from chestxr.data.schema import MAX_LISTED, Problem, ValidationResult


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
