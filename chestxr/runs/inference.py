"""Inputs of a prediction without a manifest: image files from files and folders, study keys.

Loading a run and running its model live in :mod:`chestxr.runs.run` (:class:`~chestxr.runs.run.Run`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from chestxr.core.errors import CheckpointError

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ""}


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files from a mix of files and folders (folders searched recursively for images/DICOMs)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for root, _dirs, files in os.walk(p):
                for name in sorted(files):
                    fp = Path(root) / name
                    if fp.suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                        out.append(fp)
        elif p.exists():
            out.append(p)
        else:
            raise CheckpointError(f"{p}: no such file or folder to predict")
    return sorted(set(out))


def study_key_for_file(path: Path) -> str:
    """A study key for a file without a manifest: a hash of the DICOM StudyInstanceUID (never the UID
    itself), else the file's folder name."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        uid = str(getattr(ds, "StudyInstanceUID", "") or "")
        if uid:
            return "study-" + hashlib.sha256(uid.encode()).hexdigest()[:12]
    except Exception:  # not a DICOM, or unreadable header: fall back to the folder
        pass
    return path.parent.name or "study"
