"""Inputs of a prediction without a manifest: image files from files and folders, study keys.

The rules (symlinked folders, non-regular files, DICOMDIR, one study per image without study
information) live in :mod:`chestxr.imaging.inputs`; this module keeps the names callers use.
Loading a run and running its model live in :mod:`chestxr.runs.run` (:class:`~chestxr.runs.run.Run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from chestxr.imaging.inputs import IMAGE_SUFFIXES, study_keys_for_files, walk_inputs

__all__ = ["IMAGE_SUFFIXES", "collect_inputs", "study_keys_for_files", "walk_inputs"]


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Image files from a mix of files and folders (the skipped ones: :func:`walk_inputs`)."""
    return walk_inputs(inputs)[0]
