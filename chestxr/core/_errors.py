"""Specific exception types. Every error says what is wrong, where (file, row, column) and how to fix it."""

from __future__ import annotations

from typing import Sequence


class ChestXRError(Exception):
    """Base class of every error chestxr raises on purpose. The CLI prints these without a traceback."""


class ConfigError(ChestXRError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, out-of-range value)."""


class ImageReadError(ChestXRError):
    """An image file cannot be read or is not acceptable (corrupt, not an image, wrong modality...)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # DataLoader workers re-raise exceptions in the main process
        return (type(self), (self.path, self.reason))


class HeaderCheckError(ImageReadError):
    """A DICOM header does not pass the configured checks (modality, body part, view)."""


class ManifestError(ChestXRError):
    """A manifest has problems. ``problems`` lists every one (row, column, value, how to fix): strings or
    ``chestxr.data.Problem`` objects, whose ``str()`` is the readable line."""

    def __init__(self, path: object, problems: "Sequence[object]") -> None:
        self.path = str(path)
        self.problems = list(problems)
        head = f"{self.path}: {len(self.problems)} problem(s)"
        body = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{head}\n{body}{more}")


class CheckpointError(ChestXRError):
    """A checkpoint or run folder is missing, incomplete, incompatible or unsafe to load."""


class CalibrationError(ChestXRError):
    """Threshold or probability calibration cannot be done as asked."""


class TrainingError(ChestXRError):
    """Training cannot go on (NaN/inf loss, no usable labels, ...)."""


class OutputExistsError(ChestXRError):
    """An output folder already holds results; pass --overwrite to replace them."""


class ProtectedPathError(OutputExistsError):
    """An output would be written over or into a run folder, a manifest or an input (chestxr.runs.guard_output)."""


class OutputWriteError(ChestXRError):
    """An output file or folder cannot be written (disk full, permission denied, path cannot be created)."""


class RunBusyError(CheckpointError):
    """Another chestxr command holds the run folder's lock; wait for it to finish or retry."""


class ApprovalError(ChestXRError):
    """A run is not approved for clinical use (or cannot be approved as it stands)."""


class PacsError(ChestXRError):
    """A PACS / DICOM node cannot be reached, refuses the credentials, times out or answers with an error;
    or the optional PACS libraries are missing. The message names the server (never the credentials)."""
